import { notYet } from "./not-yet.ts";

export default notYet("report", "write a self-contained HTML report", "the HTML report has not landed");
