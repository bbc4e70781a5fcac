/**
 * `cpost plugins [--collector-plugin F] [--sink-plugin F] [--json]`: the
 * built-in collectors and sinks, and the plugins loaded from the flags and
 * CPOST_PLUGIN_PATH, each with its metrics and options. Loading a plugin here
 * checks it as a run would, so this is also how to try a plugin file.
 */
import { defineCommand } from "citty";
import { builtinCollectors } from "../../../collectors/index.ts";
import { builtinSinkDefinition, builtinSinks, sinkAliases } from "../../../plugins/index.ts";
import { loadPlugins, PLUGIN_PATH_ENV, scanPluginFlags, type LoadedPlugin } from "../../registry/plugin-loader.ts";
import type { PluginOptions } from "../../contracts/plugin-sdk.ts";
import type { MetricSpec } from "../../contracts/types.ts";
import { parseArgs, type FlagsDef } from "../flags.ts";

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
    const definition = await builtinSinkDefinition(name);
    listing.push({ name, kind: "sink", from: "built-in", aliases: sinkAliases(name), description: definition.description, metrics: [], options: definition.options ?? {} });
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
