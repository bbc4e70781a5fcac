import { notYet } from "./not-yet.ts";

export default notYet("plugins", "list collectors and sinks", "the plugin registry has not landed");
