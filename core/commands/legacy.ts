import { notYet } from "./not-yet.ts";

export default notYet("legacy", "CPOST-compatible run", "the runner has not landed");
