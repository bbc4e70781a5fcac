/**
 * Built-in sinks, loaded lazily: a run imports only those it uses.
 * Each entry is `name -> () => import(...)` of a file named as the user types it.
 */
import { CpostError } from "../core/contracts/errors.ts";
import type { SinkFactory } from "../core/contracts/types.ts";

type SinkModule = { default: SinkFactory };

export const builtinSinks: Record<string, () => Promise<SinkModule>> = {
  table: () => import("./table/index.ts"),
  csv: () => import("./csv.ts"),
  msgpack: () => import("./msgpack.ts"),
  prometheus: () => import("./prometheus.ts"),
  html: () => import("./html/index.ts"),
  progress: () => import("./progress.ts"),
  elasticsearch: () => import("./elasticsearch/index.ts"),
};

/** Short names users may type instead of the full one. */
export const SINK_ALIASES: Record<string, string> = { es: "elasticsearch" };

/** Resolves an alias to the sink's registered name. */
export function sinkName(name: string): string {
  return SINK_ALIASES[name] ?? name;
}

/** Loads the named built-in sink factories, failing clearly on an unknown name. */
export async function loadSinkFactories(names: string[]): Promise<Array<{ name: string; factory: SinkFactory }>> {
  const out: Array<{ name: string; factory: SinkFactory }> = [];
  for (const typed of names) {
    const name = sinkName(typed);
    const load = builtinSinks[name];
    if (!load) {
      throw new CpostError("usage", `unknown sink "${typed}"`, {
        hint: `built-in sinks: ${Object.keys(builtinSinks).join(", ") || "(none yet)"}; see \`cpost plugins\``,
      });
    }
    out.push({ name, factory: (await load()).default });
  }
  return out;
}
