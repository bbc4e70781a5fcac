import { notYet } from "./not-yet.ts";

export default notYet("size", "run a pipeline and recommend requests", "sizing policies and --apply has not landed");
