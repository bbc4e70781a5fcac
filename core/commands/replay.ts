import { notYet } from "./not-yet.ts";

export default notYet("replay", "feed a recorded run into sinks", "msgpack replay has not landed");
