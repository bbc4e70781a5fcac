import { notYet } from "./not-yet.ts";

export default notYet("monitor", "host monitor with an HTTP control API", "monitor mode has not landed");
