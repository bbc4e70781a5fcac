/** cpost's version, baked into the compiled binary at build time. */
import pkg from "../../package.json" with { type: "json" };

export const VERSION: string = pkg.version;
