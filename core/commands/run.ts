import { notYet } from "./not-yet.ts";

export default notYet("run", "run a pipeline with chosen collectors and sinks", "the runner has not landed");
