/**
 * `cpost run <pipeline.yaml> <input_dir>`: run a pipeline with chosen
 * collectors and sinks. Also the engine of the CPOST-compatible form
 * (legacy.ts), which is this with fixed collectors and sinks.
 */
import { defineCommand } from "citty";
import { builtinCollectors, DEFAULT_COLLECTORS } from "../../../collectors/index.ts";
import { builtinSinkNames, builtinSinks, sinkName } from "../../../plugins/index.ts";
import { CpostError } from "../../contracts/errors.ts";
import { commaList, parseArgs, valueOf, type FlagsDef } from "../flags.ts";
import { parseDuration } from "../../contracts/units.ts";
import { loadPlugins, PLUGIN_PATH_ENV, scanPluginFlags, type PluginSet } from "../../registry/plugin-loader.ts";
import type { RunRequest } from "../../run/execute.ts";
import { executeRequest } from "../../run/repeat.ts";
import { warn } from "../console.ts";
import { SIZING_ARGS, sizingRequestOf } from "../../run/limits.ts";
import { DEFAULT_SINK_END_TIMEOUT_MS } from "../../sinks/session.ts";


/** Parses `--interval`: "5ms", "1s", "0.5s" or a bare number of ms; 1 ms to 60 s. */
export function parseInterval(text: string): number {
  return parseDuration(text, { flag: "--interval", minMs: 1, maxMs: 60_000, noun: "interval" });
}

/** Parses `--force` (alone it means none, as the original). */
export function parseForce(text: string | undefined): RunRequest["force"] {
  const value = text ?? "none";
  if (value === "none" || value === "cont" || value === "stop") return value;
  throw new CpostError("usage", `--force ${value}: expected none, cont or stop`, { hint: "none asks on each failure, cont continues, stop stops" });
}

/** Every `--<sink>-<option>` prefix: the built-in sinks, their aliases, and the loaded plugins. */
export const sinkPrefixesOf = (plugins?: PluginSet): string[] => [...builtinSinkNames(), ...(plugins?.plugins.map((p) => p.name) ?? [])];

/** `names`, then the plugins loaded by flag that they leave out: those are used without being named again. */
export const withEnabled = (names: string[], kind: "collector" | "sink", plugins: PluginSet): string[] => [...names, ...plugins.enabled(kind).filter((n) => !names.includes(n))];

/** The run settings `cpost run` and `cpost size` read alike from their flags. */
export function runSettingsOf(flags: Record<string, string | true>) {
  const value = valueOf(flags);
  return {
    metricsDir: value("metrics-dir"),
    modelsDir: value("models-dir"),
    force: parseForce(flags.force === true ? undefined : value("force")),
    verbose: flags.verbose === true,
    quiet: flags.quiet === true,
    intervalMs: parseInterval(value("interval") ?? "10ms"),
    tritonImage: value("triton-image"),
  } satisfies Partial<RunRequest>;
}

/** Names from a default list that this build has, so a run works before every plugin has landed. */
export function available(names: string[], registry: Record<string, unknown>, kind: string): string[] {
  const have = names.filter((n) => sinkName(n) in registry);
  const missing = names.filter((n) => !have.includes(n));
  if (missing.length > 0) warn(`${kind} ${missing.join(", ")} not available in this build`);
  return have;
}

/** A `--<sink>-<option>` whose sink (or plugin collector) was not chosen would do nothing: a usage error. */
export function checkSinkOptions(sinkOptions: Record<string, string>, sinks: string[], collectors: string[], plugins?: PluginSet): void {
  for (const key of Object.keys(sinkOptions)) {
    if (collectors.some((c) => plugins?.collector(c) && key.startsWith(`${c}-`))) continue;
    if (!sinks.some((s) => key.startsWith(`${s}-`) || key.startsWith(`${sinkName(s)}-`))) {
      const owner = plugins?.plugins.find((p) => key.startsWith(`${p.name}-`));
      const what = owner ? `${owner.kind} ${owner.name} is not in --${owner.kind}s` : `sink ${key.split("-")[0]} is not in --sinks`;
      throw new CpostError("usage", `--${key}: ${what}`, { hint: `add it to --${owner?.kind ?? "sink"}s, or drop --${key}` });
    }
  }
}

const args = {
  pipeline: { type: "positional", required: true, description: "pipeline definition file (Clara pipeline YAML)", valueHint: "pipeline.yaml" },
  input: { type: "positional", required: true, description: "input payload directory", valueHint: "input_dir" },
  collectors: { type: "string", description: `collectors, comma-separated (default ${DEFAULT_COLLECTORS.join(",")})`, valueHint: "cgroup,blkio,nvml" },
  sinks: { type: "string", description: "sinks, comma-separated (default table, plus csv with --metrics_dir); sink options: --<sink>-<option> VALUE", valueHint: "table,csv,msgpack,es" },
  interval: { type: "string", description: "sampling interval: 10ms (default), 1ms, 1s", valueHint: "10ms" },
  metrics_dir: { type: "string", description: "directory for CSV files and other file outputs", valueHint: "dir" },
  models_dir: { type: "string", description: "Triton model repository, required if the pipeline uses Triton", valueHint: "dir" },
  force: { type: "string", optionalValue: ["none", "cont", "stop"], description: "on an operator failure: none (ask; stop without a terminal), cont (continue) or stop", valueHint: "none|cont|stop" },
  verbose: { type: "boolean", alias: "v", description: "show engine details, container settings and each operator's output" },
  quiet: { type: "boolean", description: "no console lines but the sinks' output, warnings and errors" },
  "keep-outputs": { type: "boolean", description: "keep the operators' output directories and print where they are" },
  record: { type: "string", description: "also record the whole run into this msgpack file (for replay and report)", valueHint: "run.msgpack" },
  ...SIZING_ARGS,
  "sink-end-timeout": { type: "string", description: `how long the run's end waits for a slow sink to catch up, and again for its end hook, before it goes on without it and says what it did not get (default ${DEFAULT_SINK_END_TIMEOUT_MS / 1000}s)`, valueHint: "15s" },
  "triton-image": { type: "string", description: "Triton server image (default nvcr.io/nvidia/tritonserver:20.07-v1-py3)", valueHint: "image:tag" },
  "collector-plugin": { type: "string", repeated: true, description: `load a collector plugin file and use it (repeatable; its options: --<name>-<option> VALUE); ${PLUGIN_PATH_ENV} plugins are used when named in --collectors`, valueHint: "./my-collector.ts" },
  "sink-plugin": { type: "string", repeated: true, description: `load a sink plugin file and use it (repeatable); ${PLUGIN_PATH_ENV} plugins are used when named in --sinks`, valueHint: "./my-sink.ts" },
} satisfies FlagsDef;

export default defineCommand({
  meta: { name: "run", description: "Run a pipeline's operators one at a time and measure what each uses, with chosen collectors and sinks." },
  args,
  async run({ rawArgs }) {
    const plugins = await loadPlugins({ ...scanPluginFlags(rawArgs), pluginPath: process.env[PLUGIN_PATH_ENV] });
    const { positionals, flags, sinkOptions } = parseArgs(rawArgs, args, { sinkPrefixes: sinkPrefixesOf(plugins) });
    const str = valueOf(flags);
    if (positionals.length !== 2) {
      throw new CpostError("usage", `cpost run takes a pipeline file and an input directory (got ${positionals.length} argument${positionals.length === 1 ? "" : "s"})`, { hint: "cpost run <pipeline.yaml> <input_dir> [options]; see `cpost run --help`" });
    }
    const settings = runSettingsOf(flags);
    const sinks = withEnabled(flags.sinks !== undefined ? commaList(str("sinks")) : available(settings.metricsDir ? ["table", "csv"] : ["table"], builtinSinks, "sink"), "sink", plugins);
    const collectors = withEnabled(flags.collectors !== undefined ? commaList(str("collectors")) : available(DEFAULT_COLLECTORS, builtinCollectors, "collector"), "collector", plugins);
    checkSinkOptions(sinkOptions, sinks, collectors, plugins);
    return executeRequest({
      warn,
      pipeline: positionals[0]!,
      input: positionals[1]!,
      ...settings,
      keepOutputs: flags["keep-outputs"] === true,
      collectors,
      sinks,
      record: str("record"),
      sizing: sizingRequestOf(flags),
      sinkEndTimeoutMs: flags["sink-end-timeout"] === undefined ? undefined : parseDuration(str("sink-end-timeout")!, { flag: "--sink-end-timeout", minMs: 1, maxMs: 3_600_000, noun: "timeout" }),
      sinkOptions,
      plugins,
    });
  },
});
