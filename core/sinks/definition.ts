/**
 * From a sink as written (`defineSink({ name, options, create })`, a
 * built-in or a user's plugin file) to the Sink the session drives: the
 * `--<sink>-<option>` values picked out and checked against what it
 * declares, `create` called with them, and every hook present (a missing
 * one does nothing). The plugin loader adds a user plugin's extra guards
 * (a time limit on create, errors wrapped with the plugin's name) on top.
 */
import { CpostError } from "../contracts/errors.ts";
import type { PluginOptions, SinkContext, SinkHooks, SinkPlugin } from "../contracts/plugin-sdk.ts";
import type { Sink, SinkOptions } from "../contracts/types.ts";

/** Whose options are read: a plugin (`display` is its file as the user named it) or a built-in (no display). */
export interface OptionOwner {
  kind: "collector" | "sink";
  name: string;
  display?: string;
  definition: { options?: PluginOptions };
}

/** What else reads `--<prefix>-…` flags: other names and aliases, so `--table-x-url` is not read as table's option `x-url` when a sink `table-x` is loaded. */
export interface OptionPrefixes {
  /** Other spellings of this owner's prefix (`es` for elasticsearch). */
  aliases?: readonly string[];
  /** Every name and alias that may own flags in this run. */
  others?: readonly string[];
}

/**
 * An owner's option values from the pass-through `--<name>-<option> VALUE`
 * flags (keyed `<name>-<option>`, or `<alias>-<option>`), with the declared
 * defaults filled in; an undeclared option or a missing required one is a
 * usage error (exit 2) naming the flag.
 */
export function optionValues(owner: OptionOwner, given: Record<string, string | undefined>, prefixes: OptionPrefixes = {}): Record<string, string | undefined> {
  const declared = owner.definition.options ?? {};
  const spellings = [owner.name, ...(prefixes.aliases ?? [])];
  const typed = spellings.at(-1)!; // the shortest spelling users type: --es-url
  const what = `${owner.kind}${owner.display === undefined ? "" : " plugin"} ${owner.name}`;
  const listing = Object.keys(declared).map((o) => `--${typed}-${o}`).join(", ") || "none";
  const values: Record<string, string | undefined> = {};
  for (const [key, value] of Object.entries(given)) {
    const prefix = spellings.find((s) => key.startsWith(`${s}-`));
    if (prefix === undefined) continue;
    if (prefixes.others?.some((o) => o.length > prefix.length && key.startsWith(`${o}-`))) continue;
    const option = key.slice(prefix.length + 1);
    if (!Object.hasOwn(declared, option)) throw new CpostError("usage", `--${key}: ${what} has no option ${option}`, { hint: `its options: ${listing}` });
    values[option] = value;
  }
  for (const [option, spec] of Object.entries(declared)) {
    values[option] ??= spec.default;
    if (spec.required && values[option] === undefined) {
      throw new CpostError("usage", `--${typed}-${option} is required by ${what}${owner.display === undefined ? "" : ` (${owner.display})`}`, { hint: `--${typed}-${option} VALUE: ${spec.description}` });
    }
  }
  return values;
}

/** What create gets, from what a sink factory is given. */
export function sinkContextOf(options: Record<string, string | undefined>, sinkOptions: SinkOptions): SinkContext {
  return { options, metricsDir: sinkOptions.metricsDir, out: sinkOptions.out ?? process.stdout } as SinkContext;
}

/** The hooks create returned as a Sink: a hook it left out does nothing. A hook's result is awaited when it is a promise. */
export function sinkOfHooks(name: string, hooks: SinkHooks): Sink {
  return {
    name,
    start: (run) => hooks.start?.(run) as void | Promise<void>,
    operatorStart: (operator) => hooks.operatorStart?.(operator) as void | Promise<void>,
    write: (batch) => hooks.write?.(batch) as void | Promise<void>,
    operatorDone: (result, summary) => hooks.operatorDone?.(result, summary) as void | Promise<void>,
    end: (result) => hooks.end?.(result) as void | Promise<void>,
  };
}

/**
 * A built-in sink's factory. A built-in's create is synchronous (slow work
 * belongs in start), so a bad option throws at once; the built-ins throw
 * CpostErrors of their own, so nothing is wrapped. The sink is the object
 * create returned, with no-op hooks where it has none, so what else it
 * offers stays reachable (the prometheus sink's `url`, which the monitor
 * prints).
 */
export function builtinSinkFactory(definition: SinkPlugin, prefixes: OptionPrefixes = {}): (options: SinkOptions) => Sink {
  return (sinkOptions) => {
    const options = optionValues({ kind: "sink", name: definition.name, definition }, sinkOptions.options, prefixes);
    const hooks = definition.create(sinkContextOf(options, sinkOptions));
    if (hooks instanceof Promise) throw new CpostError("internal", `built-in sink ${definition.name}: create returned a promise`, { hint: "a built-in's create is synchronous; do slow work in start" });
    return { start() {}, operatorStart() {}, write() {}, operatorDone() {}, end() {}, ...hooks, name: definition.name };
  };
}
