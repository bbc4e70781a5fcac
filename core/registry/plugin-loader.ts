/**
 * Loads collector and sink plugins from the files the user named
 * (`--collector-plugin`, `--sink-plugin`, CPOST_PLUGIN_PATH) with `import()`
 * at run time, also in the compiled binary, and never from the working
 * directory implicitly. Checks each plugin's shape and name (a plugin cannot
 * take a built-in's name), and adapts it to the Collector and SinkFactory
 * contracts of core/contracts/types.ts with its failures wrapped at the boundary:
 * every error names the plugin file or the plugin and hook.
 */
import { accessSync, constants, existsSync, readdirSync, realpathSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { builtinCollectors, loadCollectors } from "../../collectors/index.ts";
import { builtinSinkNames, builtinSinks, loadSinkFactories, SINK_ALIASES, sinkName } from "../../plugins/index.ts";
import { CpostError, pathError, pathProblem, pluginError } from "../contracts/errors.ts";
import { columnKey, defineCollector, defineSink, isUnavailable, type CollectorPlugin, type PluginOptions, type SinkHooks, type SinkPlugin } from "../contracts/plugin-sdk.ts";
import type { Collector, MetricBuffer, MetricUnit, Probe, SinkFactory, SinkOptions, Target, Unavailable } from "../contracts/types.ts";
import { optionValues, sinkContextOf, sinkOfHooks, type OptionPrefixes } from "../sinks/definition.ts";

export { optionValues };

/** The environment variable naming plugin files and directories, `:`-separated. */
export const PLUGIN_PATH_ENV = "CPOST_PLUGIN_PATH";

/** A plugin as loaded: its checked definition and where it came from. */
export type LoadedPlugin =
  | { kind: "collector"; name: string; file: string; display: string; enabled: boolean; definition: CollectorPlugin }
  | { kind: "sink"; name: string; file: string; display: string; enabled: boolean; definition: SinkPlugin };

/** The plugins of one command. */
export interface PluginSet {
  readonly plugins: readonly LoadedPlugin[];
  collector(name: string): Extract<LoadedPlugin, { kind: "collector" }> | undefined;
  sink(name: string): Extract<LoadedPlugin, { kind: "sink" }> | undefined;
  /** Plugins given by flag: the run uses them without being asked by name. */
  enabled(kind: LoadedPlugin["kind"]): string[];
}

/** Plugin files named on a command line, before its other flags can be read (they depend on the plugins' names). */
export interface PluginFlags {
  collectorFiles: string[];
  sinkFiles: string[];
}

const FLAGS = { "collector-plugin": "collectorFiles", "sink-plugin": "sinkFiles" } as const;
const NAME = /^[a-z][a-z0-9-]*$/;
const UNITS: readonly MetricUnit[] = ["ns", "percent", "bytes", "count", "ops", "watts", "celsius", "mhz", "us", "ratio"];
const PLUGIN_FILE = /\.(ts|mts|js|mjs)$/;

/** Finds `--collector-plugin FILE` and `--sink-plugin FILE` (also `=FILE`, `_` spellings), repeatable. */
export function scanPluginFlags(raw: readonly string[]): PluginFlags {
  const found: PluginFlags = { collectorFiles: [], sinkFiles: [] };
  for (let i = 0; i < raw.length; i++) {
    const arg = raw[i]!;
    if (arg === "--") break;
    const [flag, inline] = arg.startsWith("--") ? [arg.slice(2).split("=")[0]!.replace(/_/g, "-"), arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : undefined] : ["", undefined];
    if (!(flag in FLAGS)) continue;
    const value = inline ?? raw[++i];
    if (value === undefined || value === "" || (inline === undefined && value.startsWith("--"))) {
      throw new CpostError("usage", `--${flag} needs a plugin file`, { hint: `--${flag} ./my-plugin.ts (repeatable)` });
    }
    found[FLAGS[flag as keyof typeof FLAGS]].push(value);
  }
  return found;
}

/** The plugin files of CPOST_PLUGIN_PATH: files as listed; for a directory, its *.ts/*.mts/*.js/*.mjs and its subdirectories' index files. */
export function pluginPathFiles(pluginPath: string | undefined): string[] {
  const files: string[] = [];
  for (const entry of (pluginPath ?? "").split(":").filter(Boolean)) {
    const path = resolve(entry);
    let isDir: boolean;
    let names: string[] = [];
    try {
      isDir = statSync(path).isDirectory();
      if (isDir) names = readdirSync(path).sort();
    } catch (cause) {
      const error = pathError(entry, `${PLUGIN_PATH_ENV}: ${entry}`, cause, "directory", `list plugin files or directories in ${PLUGIN_PATH_ENV}, separated by ':'`);
      throw new CpostError("plugin", error.message, { cause, hint: error.hint });
    }
    if (!isDir) {
      files.push(path);
      continue;
    }
    for (const name of names) {
      if (name.startsWith(".") || name === "node_modules") continue;
      const full = join(path, name);
      if (isDirectoryPath(full)) {
        const index = indexFileOf(full);
        if (index) files.push(index);
      } else if (PLUGIN_FILE.test(name) && !/\.d\.m?ts$|\.test\.|\.spec\./.test(name)) files.push(full);
    }
  }
  return files;
}

let sdkServed = false;

/** Serves the module "cpost" (the SDK's runtime half) to plugins that import it as a value; also in the compiled binary. */
function serveSdkModule(): void {
  if (sdkServed) return;
  sdkServed = true;
  const exports = { defineCollector, defineSink, columnKey, isUnavailable };
  Bun.plugin({
    name: "cpost-sdk",
    setup(build) {
      build.module("cpost", () => ({ exports, loader: "object" }));
    },
  });
}

const INDEX_FILES = ["index.ts", "index.mts", "index.js", "index.mjs"];

function isDirectoryPath(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false; // a dangling link or an unreadable entry: not a plugin directory
  }
}

/** A directory's plugin index file, if it has one. */
const indexFileOf = (dir: string): string | undefined => INDEX_FILES.map((i) => join(dir, i)).find((i) => existsSync(i));

/** A plugin directory's index file, or the path itself. */
function entryOf(path: string): string {
  if (!existsSync(path) || !statSync(path).isDirectory()) return path;
  return indexFileOf(path) ?? join(path, INDEX_FILES[0]!);
}

/** Imports one plugin file (or a directory's index file) and checks its default export; errors name the file as the user gave it. */
export async function importPlugin(file: string, display = file): Promise<CollectorPlugin | SinkPlugin> {
  const path = entryOf(resolve(file));
  const fail = (why: string, hint: string, cause?: unknown) => new CpostError("plugin", `plugin ${display}: ${why}`, { hint, cause });
  if (!existsSync(path) && isDirectoryPath(resolve(display))) throw fail(`cannot load: the directory has no ${INDEX_FILES.join(", ")}`, "give the plugin file itself, or put an index.ts in its directory");
  if (!existsSync(path)) throw fail(`cannot load: no such file${path === resolve(file) ? "" : ` (${path})`}`, "check the path (relative paths are from the current directory); a directory needs an index.ts or index.js");
  try {
    if (statSync(path).isDirectory()) throw Object.assign(new Error("is a directory"), { code: "EISDIR" });
    accessSync(path, constants.R_OK);
  } catch (cause) {
    const [problem, hint] = pathProblem(cause, "plugin file", "file");
    throw fail(`cannot load: ${problem}`, hint, cause);
  }
  serveSdkModule();
  let module: { default?: unknown };
  try {
    module = (await import(pathToFileURL(path).href)) as { default?: unknown };
  } catch (thrown) {
    throw fail(`cannot load: ${loadFailure(thrown)}`, "fix the plugin file (or run it with `bun` to see the whole error), or leave it out", thrown);
  }
  const plugin = module.default;
  const fix = "end the plugin file with `export default defineCollector({ … })` or `export default defineSink({ … })`; see docs/plugins.md";
  if (plugin === undefined) throw fail("has no default export", fix);
  if (typeof plugin !== "object" || plugin === null) throw fail(`its default export is a ${plugin === null ? "null" : typeof plugin}, not a plugin`, fix);
  const shape = plugin as Record<string, unknown>;
  const problems = [...checkName(shape), ...(typeof shape.open === "function" ? checkCollector(shape) : typeof shape.create === "function" ? checkSink(shape) : ["neither open(target) (a collector) nor create(context) (a sink) is a function"])];
  if (problems.length > 0) throw fail(`is not a valid plugin: ${problems.join("; ")}`, fix);
  return plugin as CollectorPlugin | SinkPlugin;
}

/** Bun's build errors carry file:line:column; other errors their message. */
function loadFailure(thrown: unknown): string {
  const errors = thrown instanceof AggregateError ? thrown.errors : [thrown];
  return errors
    .map((e: unknown) => {
      const position = (e as { position?: { file?: string; line?: number; column?: number } } | null)?.position;
      const message = e instanceof Error || (typeof e === "object" && e !== null && "message" in e) ? String((e as { message: unknown }).message) : String(e);
      return position?.file ? `${position.file}:${position.line}:${position.column}: ${message}` : message;
    })
    .join("; ");
}

function checkName(shape: Record<string, unknown>): string[] {
  const problems: string[] = [];
  if (typeof shape.name !== "string" || !NAME.test(shape.name)) problems.push(`name ${JSON.stringify(shape.name)} is not a name of lowercase letters, digits and '-'`);
  if (typeof shape.description !== "string") problems.push("description is not a string");
  if (shape.options !== undefined) {
    if (typeof shape.options !== "object" || shape.options === null) problems.push("options is not an object");
    else {
      for (const [key, option] of Object.entries(shape.options)) {
        const o = option as Record<string, unknown> | null;
        if (!NAME.test(key)) problems.push(`option ${JSON.stringify(key)} is not a name of lowercase letters, digits and '-'`);
        if (typeof o?.description !== "string") problems.push(`option ${key} has no description`);
        if (o?.default !== undefined && typeof o.default !== "string") problems.push(`option ${key}: default is not a string`);
        if (o?.required !== undefined && typeof o.required !== "boolean") problems.push(`option ${key}: required is not true or false`);
      }
    }
  }
  return problems;
}

function checkCollector(shape: Record<string, unknown>): string[] {
  if (typeof shape.create === "function") return ["it has both open (a collector) and create (a sink)"];
  if (shape.dispose !== undefined && typeof shape.dispose !== "function") return ["dispose is not a function"];
  if (shape.available !== undefined && typeof shape.available !== "function") return ["available is not a function"];
  return metricsProblems(shape.metrics, "metrics");
}

/** What is wrong with a list of metric specs (the plugin's, or a probe's), each problem naming its place. */
function metricsProblems(metrics: unknown, at: string): string[] {
  if (!Array.isArray(metrics)) return [`${at} is ${describe(metrics)}, not an array of metric specs`];
  const problems: string[] = [];
  metrics.forEach((spec: unknown, i) => {
    if (typeof spec !== "object" || spec === null) {
      problems.push(`${at}[${i}] is ${describe(spec)}, not a metric spec { name, unit, kind }`);
      return;
    }
    const m = spec as Record<string, unknown>;
    if (typeof m.name !== "string" || !/^[a-z0-9_]+(\.[a-z0-9_]+)+$/.test(m.name)) problems.push(`${at}[${i}].name ${describe(m.name)} is not a dotted name like proc.threads`);
    if (!UNITS.includes(m.unit as MetricUnit)) problems.push(`${at}[${i}].unit ${describe(m.unit)} is not one of ${UNITS.join(", ")}`);
    if (m.kind !== "gauge" && m.kind !== "counter") problems.push(`${at}[${i}].kind ${describe(m.kind)} is neither gauge nor counter`);
    if (m.device !== undefined && !(Number.isInteger(m.device) && (m.device as number) >= 0)) problems.push(`${at}[${i}].device ${describe(m.device)} is not a device index (0, 1, …)`);
    if (m.description !== undefined && typeof m.description !== "string") problems.push(`${at}[${i}].description is not a string`);
  });
  return problems;
}

/** A plugin's value as a message shows it: short, never throwing. */
function describe(value: unknown): string {
  if (value === undefined) return "undefined";
  if (typeof value === "function") return "a function";
  if (typeof value === "object" && value !== null && typeof (value as PromiseLike<unknown>).then === "function") return "a promise";
  if (typeof value === "bigint" || typeof value === "symbol") return String(value);
  try {
    const text = JSON.stringify(value) ?? String(value);
    return text.length > 60 ? `${text.slice(0, 57)}...` : text;
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/** What is wrong with the value a collector's open returned (a probe or { unavailable }), or undefined. */
function openProblem(opened: unknown): string | undefined {
  if (typeof opened !== "object" || opened === null) return `returned ${describe(opened)}, not a probe or { unavailable: "why" }`;
  if (typeof (opened as PromiseLike<unknown>).then === "function") return "returned a promise; open must return a probe (or { unavailable }) at once (do slow work before, or in open itself)";
  const o = opened as Record<string, unknown>;
  if ("unavailable" in o && o.unavailable !== undefined) {
    if (typeof o.unavailable !== "string" || o.unavailable === "") return `returned { unavailable: ${describe(o.unavailable)} }; unavailable is the reason, a non-empty string`;
    if (o.waitFor !== undefined && !(Array.isArray(o.waitFor) && o.waitFor.every((p) => typeof p === "string"))) return `returned { waitFor: ${describe(o.waitFor)} }; waitFor is a list of paths`;
    return undefined;
  }
  const problems = metricsProblems(o.metrics, "probe.metrics");
  if (typeof o.read !== "function") problems.push(`probe.read is ${describe(o.read)}, not a function`);
  if (o.close !== undefined && typeof o.close !== "function") problems.push(`probe.close is ${describe(o.close)}, not a function`);
  if (o.source !== undefined && typeof o.source !== "string") problems.push(`probe.source is ${describe(o.source)}, not a string`);
  return problems.length > 0 ? `returned a probe that is not valid: ${problems.slice(0, 3).join("; ")}${problems.length > 3 ? ` (and ${problems.length - 3} more)` : ""}` : undefined;
}

function checkSink(shape: Record<string, unknown>): string[] {
  return "metrics" in shape ? ["a sink has no metrics (is it a collector without open?)"] : [];
}

/** Loads the named plugin files and CPOST_PLUGIN_PATH's; a name taken by a built-in or by another file is an error. */
export async function loadPlugins(request: Partial<PluginFlags> & { pluginPath?: string }): Promise<PluginSet> {
  const wanted: Array<{ kind: LoadedPlugin["kind"] | "any"; display: string; enabled: boolean }> = [
    ...(request.collectorFiles ?? []).map((display) => ({ kind: "collector" as const, display, enabled: true })),
    ...(request.sinkFiles ?? []).map((display) => ({ kind: "sink" as const, display, enabled: true })),
    ...pluginPathFiles(request.pluginPath).map((display) => ({ kind: "any" as const, display, enabled: false })),
  ];
  const plugins: LoadedPlugin[] = [];
  const byFile = new Map<string, LoadedPlugin>();
  for (const want of wanted) {
    const entry = entryOf(resolve(want.display));
    const file = existsSync(entry) ? realpathSync(entry) : entry;
    const known = byFile.get(file);
    if (known) {
      if (want.kind !== "any" && known.kind !== want.kind) throw wrongKind(want.display, known.kind);
      known.enabled ||= want.enabled;
      continue;
    }
    const definition = await importPlugin(file, want.display);
    const kind = "open" in definition ? "collector" : "sink";
    if (want.kind !== "any" && want.kind !== kind) throw wrongKind(want.display, kind);
    const loaded = { kind, name: definition.name, file, display: want.display, enabled: want.enabled, definition } as LoadedPlugin;
    const builtin = builtinKind(loaded.name);
    if (builtin) {
      throw new CpostError("plugin", `plugin ${want.display}: its name "${loaded.name}" is the built-in ${builtin}'s; a plugin cannot replace a built-in`, { hint: "give the plugin a name of its own" });
    }
    const twin = plugins.find((p) => p.name === loaded.name);
    if (twin) {
      throw new CpostError("plugin", `plugins ${twin.display} and ${want.display} are both named "${loaded.name}"`, { hint: "load one of them, or rename one" });
    }
    plugins.push(loaded);
    byFile.set(file, loaded);
  }
  return {
    plugins,
    collector: (name) => plugins.find((p): p is Extract<LoadedPlugin, { kind: "collector" }> => p.kind === "collector" && p.name === name),
    sink: (name) => plugins.find((p): p is Extract<LoadedPlugin, { kind: "sink" }> => p.kind === "sink" && p.name === name),
    enabled: (kind) => plugins.filter((p) => p.kind === kind && p.enabled).map((p) => p.name),
  };
}

function wrongKind(display: string, kind: LoadedPlugin["kind"]): CpostError {
  const other = kind === "collector" ? "sink" : "collector";
  return new CpostError("plugin", `plugin ${display} is a ${kind} plugin, not a ${other}`, { hint: `load it with --${kind}-plugin` });
}

function builtinKind(name: string): string | undefined {
  if (Object.hasOwn(builtinCollectors, name)) return `collector ${name}`;
  if (Object.hasOwn(builtinSinks, name) || Object.hasOwn(SINK_ALIASES, name)) return `sink ${sinkName(name)}`;
  return undefined;
}

/**
 * The plugin as a Collector. A collector whose open or read throws is
 * disabled for the rest of the run: the sampler says the error once, and
 * later opens get an empty probe that says why in its source.
 */
export function collectorOf(definition: CollectorPlugin, file: string, options: Record<string, string | undefined>): Collector {
  let disabled: string | undefined;
  const context = { options } as Parameters<CollectorPlugin["open"]>[1];
  const silent = (why: string): Probe => ({ metrics: [], source: `disabled: ${why}`, read: () => false, close() {} });
  return {
    name: definition.name,
    description: definition.description,
    metrics: definition.metrics,
    portable: { module: pathToFileURL(file).href, options },
    open(target: Target): Probe | Unavailable {
      if (disabled) return silent(disabled);
      let opened: Probe | Unavailable;
      try {
        opened = definition.open(target, context);
        // Checked here, where the value enters: the sampler and the sinks see only well-formed probes.
        const problem = openProblem(opened);
        if (problem) throw new Error(problem);
        if (isUnavailable(opened)) return { unavailable: opened.unavailable, ...(opened.waitFor ? { waitFor: [...opened.waitFor] } : {}) };
      } catch (thrown) {
        disabled = "its open failed earlier in this run";
        throw thrown;
      }
      const probe = opened;
      return {
        metrics: probe.metrics.map((m) => ({ ...m })),
        source: typeof probe.source === "string" ? probe.source : `plugin ${basename(file)}`,
        read(out: MetricBuffer): boolean {
          let live: unknown;
          try {
            live = probe.read(out);
          } catch (thrown) {
            disabled = "its read failed earlier in this run";
            throw thrown;
          }
          if (live === true || live === false) return live;
          disabled = "its read failed earlier in this run";
          throw new Error(`returned ${describe(live)}, not true (read) or false (the target is gone)`);
        },
        close() {
          try {
            probe.close?.();
          } catch {
            // close must not throw; the probe is gone either way
          }
        },
      };
    },
    dispose: definition.dispose
      ? () => {
          try {
            definition.dispose!();
          } catch (thrown) {
            throw pluginError(definition.name, "dispose", thrown);
          }
        }
      : undefined,
    available: definition.available
      ? () => {
          let answer: unknown;
          try {
            answer = definition.available!();
          } catch (thrown) {
            throw pluginError(definition.name, "available", thrown);
          }
          const a = answer as { ok?: unknown; reason?: unknown } | null;
          if (a?.ok === true) return { ok: true };
          if (a?.ok === false && typeof a.reason === "string" && a.reason !== "") return { ok: false, reason: a.reason };
          throw pluginError(definition.name, "available", new Error(`returned ${describe(answer)}, not { ok: true } or { ok: false, reason: "why" }`));
        }
      : undefined,
  };
}

/** How the sampling thread rebuilds a plugin collector from its `portable` recipe (module = the plugin's file URL). */
export async function createPluginCollector(module: string, options: Record<string, string | number | boolean | undefined> = {}): Promise<Collector> {
  const file = fileURLToPath(module);
  const definition = await importPlugin(file);
  if (!("open" in definition)) throw new CpostError("plugin", `plugin ${file} is no longer a collector plugin`);
  return collectorOf(definition, file, Object.fromEntries(Object.entries(options).map(([k, v]) => [k, v === undefined ? undefined : String(v)])));
}

/** The plugin as a SinkFactory: options checked, `create` given a time limit and its failures wrapped with the plugin's name. */
export function sinkFactoryOf(plugin: Extract<LoadedPlugin, { kind: "sink" }>, prefixes: OptionPrefixes = {}): SinkFactory {
  const { definition } = plugin;
  return async (sinkOptions: SinkOptions) => {
    const options = optionValues(plugin, sinkOptions.options, prefixes);
    let hooks: SinkHooks;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`did not return within ${CREATE_TIMEOUT_MS / 1000} s`)), CREATE_TIMEOUT_MS)));
      hooks = await Promise.race([Promise.resolve().then(() => definition.create(sinkContextOf(options, sinkOptions))), late]);
    } catch (thrown) {
      throw thrown instanceof CpostError ? thrown : pluginError(definition.name, "create", thrown);
    } finally {
      clearTimeout(timer);
    }
    const problem = hooksProblem(hooks);
    if (problem) throw new CpostError("plugin", `${definition.name}: create ${problem}`, { plugin: definition.name, hook: "create", hint: "create returns (or resolves to) an object of hook functions: { start, operatorStart, write, operatorDone, end }, each optional; see docs/plugins.md" });
    // A throw or a rejection from a hook is the sink's failure (core/sinks/session.ts).
    return sinkOfHooks(definition.name, hooks);
  };
}

/** How long a sink plugin's `create` may take before the run stops (exit 2) naming it. */
export const CREATE_TIMEOUT_MS = 15_000;
const SINK_HOOKS = ["start", "operatorStart", "write", "operatorDone", "end"] as const;

/** What is wrong with what a sink's create returned, or undefined. */
function hooksProblem(hooks: unknown): string | undefined {
  if (typeof hooks !== "object" || hooks === null || Array.isArray(hooks)) return `returned ${describe(hooks)}, not an object of hooks`;
  const wrong = SINK_HOOKS.filter((h) => (hooks as Record<string, unknown>)[h] !== undefined && typeof (hooks as Record<string, unknown>)[h] !== "function");
  return wrong.length > 0 ? `returned hooks that are not functions: ${wrong.map((h) => `${h} is ${describe((hooks as Record<string, unknown>)[h])}`).join(", ")}` : undefined;
}

/** The run's collectors by name: built-ins from the registry, plugins adapted with their options. */
export async function resolveCollectors(names: readonly string[], plugins: PluginSet | undefined, given: Record<string, string | undefined>): Promise<Collector[]> {
  const out: Collector[] = [];
  for (const name of names) {
    const plugin = plugins?.collector(name);
    if (Object.hasOwn(builtinCollectors, name)) out.push(...(await loadCollectors([name])));
    else if (plugin) out.push(collectorOf(plugin.definition, plugin.file, optionValues(plugin, given)));
    else throw unknown("collector", name, Object.keys(builtinCollectors), plugins);
  }
  return out;
}

/** The run's sink factories by name: built-ins (and aliases) from the registry, plugins adapted. */
export async function resolveSinkFactories(names: readonly string[], plugins: PluginSet | undefined): Promise<Array<{ name: string; factory: SinkFactory }>> {
  const out: Array<{ name: string; factory: SinkFactory }> = [];
  for (const name of names) {
    const plugin = plugins?.sink(name);
    const others = [...builtinSinkNames(), ...(plugins?.plugins.filter((p) => p.kind === "sink").map((p) => p.name) ?? [])];
    if (Object.hasOwn(builtinSinks, sinkName(name))) out.push(...(await loadSinkFactories([name], others)));
    else if (plugin) out.push({ name, factory: sinkFactoryOf(plugin, { others }) });
    else throw unknown("sink", name, [...Object.keys(builtinSinks), ...Object.keys(SINK_ALIASES)], plugins);
  }
  return out;
}

function unknown(kind: LoadedPlugin["kind"], name: string, builtins: string[], plugins: PluginSet | undefined): CpostError {
  const loaded = plugins?.plugins.filter((p) => p.kind === kind).map((p) => p.name) ?? [];
  return new CpostError("usage", `unknown ${kind} "${name}"`, {
    hint: `built-in ${kind}s: ${builtins.join(", ")}${loaded.length ? `; plugin ${kind}s: ${loaded.join(", ")}` : ""}; load a plugin with --${kind}-plugin FILE or ${PLUGIN_PATH_ENV}; see \`cpost plugins\``,
  });
}
