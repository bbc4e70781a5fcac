/**
 * `cpost plugins [--collector-plugin F] [--sink-plugin F] [--json]`: the
 * built-in collectors and sinks, and the plugins loaded from the flags and
 * CPOST_PLUGIN_PATH, each with its metrics and options. Loading a plugin here
 * checks it as a run would, so this is also how to try a plugin file.
 */
import { defineCommand } from "citty";
import { builtinCollectors } from "../../../collectors/index.ts";
import { builtinSinks, SINK_ALIASES } from "../../../plugins/index.ts";
import { loadPlugins, PLUGIN_PATH_ENV, scanPluginFlags, type LoadedPlugin } from "../../registry/plugin-loader.ts";
import type { PluginOptions } from "../../contracts/plugin-sdk.ts";
import type { MetricSpec } from "../../contracts/types.ts";
import { parseArgs, type FlagsDef } from "../flags.ts";

/**
 * What the built-in sinks are and the `--<sink>-<option>` flags they read
 * (a SinkFactory carries neither). test/plugins.test.ts checks that every
 * built-in sink is here and that each option is one its source reads.
 */
export const BUILTIN_SINK_INFO: Record<string, { description: string; options: PluginOptions }> = {
  table: {
    description: "CPOST's console tables: each operator's summary and the final grid",
    options: {
      samples: { description: "`all`: also print every row before each summary, as the original without --metrics_dir" },
      rows: { description: "`cpost`: only the CPU and Memory rows, as the original" },
    },
  },
  csv: { description: "<metrics_dir>/<operator>_final_result.csv as the original CPOST wrote them, with every further metric as a column", options: {} },
  msgpack: { description: "the whole run in one .msgpack file, for cpost replay and cpost report", options: { file: { description: "the recording to write", default: "<metrics_dir or .>/<pipeline name>.msgpack" } } },
  prometheus: {
    description: "serves the latest reading of every series at /metrics for Prometheus to scrape",
    options: {
      listen: { description: "address of the /metrics server", default: "127.0.0.1:9686" },
      timestamps: { description: "give each sample its own timestamp", default: "true" },
    },
  },
  html: { description: "one self-contained HTML report with charts, written at the end of the run", options: { out: { description: "the report file", default: "<metrics_dir>/report.html" } } },
  progress: { description: "a live progress line on the terminal (added on a TTY unless --quiet)", options: {} },
  elasticsearch: {
    description: "every sample into Elasticsearch with _bulk, spooled to disk while it is down (see docs/elasticsearch.md)",
    options: {
      url: { description: "the cluster (or CPOST_ES_URL)", required: true },
      "api-key-file": { description: "file holding the API key (or CPOST_ES_API_KEY)" },
      user: { description: "basic auth user (or CPOST_ES_USER)" },
      "password-file": { description: "file holding the password (or CPOST_ES_PASSWORD)" },
      ca: { description: "PEM file to trust for https (or CPOST_ES_CA)" },
      namespace: { description: "data stream namespace", default: "default" },
      legacy: { description: "`true`: the original's cpumetrics/gpumetrics indices" },
      "spool-dir": { description: "where documents wait while Elasticsearch is down", default: "$XDG_CACHE_HOME/cpost/es-spool" },
      "spool-max": { description: "spool size beyond which documents are dropped and counted", default: "1G" },
      "batch-docs": { description: "documents per _bulk request", default: "5000" },
      "batch-bytes": { description: "bytes per _bulk request", default: "5M" },
      flush: { description: "longest wait before a request goes", default: "1s" },
      concurrency: { description: "_bulk requests in flight", default: "2" },
      timeout: { description: "per request", default: "30s" },
      retries: { description: "retries of 429/5xx answers", default: "5" },
      "backoff-max": { description: "longest wait between retries", default: "10s" },
      "end-timeout": { description: "how long the end of a run waits for Elasticsearch", default: "10s" },
    },
  },
};

/** One entry of the listing (also the --json shape). */
export interface PluginListing {
  name: string;
  kind: "collector" | "sink";
  /** "built-in", or the plugin file. */
  from: string;
  aliases: string[];
  description: string;
  metrics: MetricSpec[];
  options: PluginOptions;
}

/** Built-ins (loading each collector module for its metrics) and the loaded plugins, collectors first. */
export async function listPlugins(plugins: readonly LoadedPlugin[]): Promise<PluginListing[]> {
  const listing: PluginListing[] = [];
  for (const [name, load] of Object.entries(builtinCollectors)) {
    const collector = (await load()).default;
    listing.push({ name, kind: "collector", from: "built-in", aliases: [], description: collector.description, metrics: [...collector.metrics], options: {} });
  }
  for (const p of plugins.filter((p) => p.kind === "collector")) {
    const d = p.definition as Extract<LoadedPlugin, { kind: "collector" }>["definition"];
    listing.push({ name: p.name, kind: "collector", from: p.file, aliases: [], description: d.description, metrics: [...d.metrics], options: d.options ?? {} });
  }
  for (const name of Object.keys(builtinSinks)) {
    const info = BUILTIN_SINK_INFO[name] ?? { description: "(no description)", options: {} };
    const aliases = Object.entries(SINK_ALIASES).filter(([, target]) => target === name).map(([alias]) => alias);
    listing.push({ name, kind: "sink", from: "built-in", aliases, description: info.description, metrics: [], options: info.options });
  }
  for (const p of plugins.filter((p) => p.kind === "sink")) {
    listing.push({ name: p.name, kind: "sink", from: p.file, aliases: [], description: p.definition.description, metrics: [], options: p.definition.options ?? {} });
  }
  return listing;
}

function render(listing: PluginListing[]): string {
  const lines: string[] = [];
  for (const kind of ["collector", "sink"] as const) {
    lines.push(kind === "collector" ? "COLLECTORS (--collectors a,b)" : "SINKS (--sinks a,b; options --<sink>-<option> VALUE)", "");
    for (const entry of listing.filter((e) => e.kind === kind)) {
      const aliases = entry.aliases.length ? ` (alias ${entry.aliases.join(", ")})` : "";
      lines.push(`  ${entry.name}${aliases}  [${entry.from === "built-in" ? "built-in" : `plugin ${entry.from}`}]`, `      ${entry.description}`);
      if (entry.metrics.length) {
        const width = Math.max(...entry.metrics.map((m) => m.name.length));
        lines.push("      metrics:");
        for (const m of entry.metrics) lines.push(`        ${m.name.padEnd(width)}  ${m.unit} ${m.kind}${m.description ? `  ${m.description}` : ""}`);
      }
      const options = Object.entries(entry.options);
      if (options.length) {
        const prefix = entry.aliases[0] ?? entry.name; // --es-url reads better than --elasticsearch-url
        const width = Math.max(...options.map(([option]) => option.length)) + prefix.length + 3;
        lines.push("      options:");
        for (const [option, spec] of options) {
          const extra = spec.required ? " (required)" : spec.default !== undefined ? ` (default ${spec.default})` : "";
          lines.push(`        ${`--${prefix}-${option}`.padEnd(width)}  ${spec.description}${extra}`);
        }
      }
      lines.push("");
    }
  }
  return lines.join("\n");
}

const pluginsArgs = {
  "collector-plugin": { type: "string", repeated: true, description: "also load this collector plugin file (repeatable)", valueHint: "./my-collector.ts" },
  "sink-plugin": { type: "string", repeated: true, description: "also load this sink plugin file (repeatable)", valueHint: "./my-sink.ts" },
  json: { type: "boolean", description: "print the listing as JSON" },
} satisfies FlagsDef;

export default defineCommand({
  meta: { name: "plugins", description: `List the built-in collectors and sinks and the plugins loaded from --collector-plugin, --sink-plugin and ${PLUGIN_PATH_ENV}, with their metrics and options.` },
  args: pluginsArgs,
  async run({ rawArgs }) {
    const { flags } = parseArgs(rawArgs, pluginsArgs);
    const plugins = await loadPlugins({ ...scanPluginFlags(rawArgs), pluginPath: process.env[PLUGIN_PATH_ENV] });
    const listing = await listPlugins(plugins.plugins);
    process.stdout.write(flags.json === true ? `${JSON.stringify(listing, null, 2)}\n` : render(listing));
    return 0;
  },
});
