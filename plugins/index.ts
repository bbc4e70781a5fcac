/**
 * Built-in sinks, loaded lazily: a run imports only those it uses.
 * Each entry is `name -> () => import(...)` of a file named as the user types it.
 */
import { CpostError } from "../core/contracts/errors.ts";
import type { SinkPlugin } from "../core/contracts/plugin-sdk.ts";
import type { Sink, SinkFactory, SinkOptions } from "../core/contracts/types.ts";
import { builtinSinkFactory } from "../core/sinks/definition.ts";

/** A built-in sink's module: its default export is written with defineSink, as a user's plugin is. */
type SinkModule = { default: SinkPlugin };

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

/** The aliases of a registered sink name. */
export const sinkAliases = (name: string): string[] => Object.keys(SINK_ALIASES).filter((alias) => SINK_ALIASES[alias] === name);

/** Every name and alias of the built-in sinks. */
export const builtinSinkNames = (): string[] => [...Object.keys(builtinSinks), ...Object.keys(SINK_ALIASES)];

type BuiltinSinkFactory = (options: SinkOptions) => Sink;
const factories = new WeakMap<SinkPlugin, BuiltinSinkFactory>();

/**
 * A built-in sink's factory, reading its options under its name and aliases
 * (`--es-url`, `--elasticsearch-url`); one per sink beside the built-ins
 * alone, a fresh one where plugins' names join them (`others`).
 */
export function sinkFactory(definition: SinkPlugin, others?: readonly string[]): BuiltinSinkFactory {
  const make = () => builtinSinkFactory(definition, { aliases: sinkAliases(definition.name), others: others ?? builtinSinkNames() });
  if (others !== undefined) return make();
  let factory = factories.get(definition);
  if (!factory) factories.set(definition, (factory = make()));
  return factory;
}

/** The built-in sink's definition, as `cpost plugins` lists it. */
export async function builtinSinkDefinition(name: string): Promise<SinkPlugin> {
  return (await builtinSinks[sinkName(name)]!()).default;
}

/**
 * Loads the named built-in sinks as factories, failing clearly on an
 * unknown name. `others`: every sink name that may own `--<name>-…` flags
 * in this run (default the built-ins'), so a plugin `table-x`'s flags are
 * not read as table's.
 */
export async function loadSinkFactories(names: string[], others?: readonly string[]): Promise<Array<{ name: string; factory: SinkFactory }>> {
  const out: Array<{ name: string; factory: SinkFactory }> = [];
  for (const typed of names) {
    const name = sinkName(typed);
    const load = builtinSinks[name];
    if (!load) {
      throw new CpostError("usage", `unknown sink "${typed}"`, {
        hint: `built-in sinks: ${Object.keys(builtinSinks).join(", ") || "(none yet)"}; see \`cpost plugins\``,
      });
    }
    out.push({ name, factory: sinkFactory((await load()).default, others) });
  }
  return out;
}
