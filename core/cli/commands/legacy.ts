/**
 * The CPOST-compatible form: `cpost <pipeline> <input_dir> [--metrics_dir D]
 * [--models_dir D] [-v] [--force none|cont|stop]`, with the original's
 * flags, console lines and outputs: the cgroup (and blkio) collectors, the
 * table sink, and CSV files when --metrics_dir is given.
 */
import { defineCommand } from "citty";
import { builtinCollectors, DEFAULT_COLLECTORS } from "../../../collectors/index.ts";
import { builtinSinks } from "../../../plugins/index.ts";
import { CpostError } from "../../contracts/errors.ts";
import { loadPlugins, scanPluginFlags } from "../../registry/plugin-loader.ts";
import { executeRequest } from "../../run/repeat.ts";
import { warn } from "../console.ts";
import { parseArgs, type FlagsDef } from "../flags.ts";
import { available, runSettingsOf } from "./run.ts";

const args = {
  pipeline_path: { type: "positional", required: true, description: "pipeline definition file path", valueHint: "pipeline_path" },
  input_dir: { type: "positional", required: true, description: "input payload directory", valueHint: "input_dir" },
  metrics_dir: { type: "string", description: "metrics output directory, if not specified, write to stdout", valueHint: "METRICS_DIR" },
  models_dir: { type: "string", description: "directory for Triton models, required if pipeline uses Triton", valueHint: "MODELS_DIR" },
  verbose: { type: "boolean", alias: "v", description: "verbose output (DEBUG level). If not specified, default output is INFO level." },
  force: { type: "string", optionalValue: ["none", "cont", "stop"], description: "force continue or stop when operator failure occurs. (default: none, which will prompt the user for each failure).", valueHint: "none|cont|stop" },
  "collector-plugin": { type: "string", repeated: true, description: "also sample with this collector plugin file (repeatable; options --<name>-<option> VALUE)", valueHint: "./my-collector.ts" },
  "sink-plugin": { type: "string", repeated: true, description: "also write to this sink plugin file (repeatable)", valueHint: "./my-sink.ts" },
} satisfies FlagsDef;

export default defineCommand({
  meta: { name: "cpost", description: "Clara Pipeline Sizing Tool CLI (CPOST-compatible form)" },
  args,
  async run({ rawArgs }) {
    // only the plugins named here: the original's form has no --collectors/--sinks to pick CPOST_PLUGIN_PATH's by name
    const plugins = await loadPlugins(scanPluginFlags(rawArgs));
    const { positionals, flags, sinkOptions } = parseArgs(rawArgs, args, plugins.plugins.length > 0 ? { sinkPrefixes: plugins.plugins.map((p) => p.name) } : {});
    if (positionals.length !== 2) {
      throw new CpostError("usage", `expected <pipeline_path> <input_dir> (got ${positionals.length} argument${positionals.length === 1 ? "" : "s"}: ${positionals.join(" ") || "none"})`, {
        hint: "cpost <pipeline_path> <input_dir> [--metrics_dir D] [--models_dir D] [-v] [--force none|cont|stop]; or `cpost --help`",
      });
    }
    // the original's flags only: no --quiet, --interval or --triton-image here, so 10 ms and never quiet
    const settings = runSettingsOf(flags);
    return executeRequest({
      warn,
      pipeline: positionals[0]!,
      input: positionals[1]!,
      ...settings,
      keepOutputs: false,
      collectors: [...available(DEFAULT_COLLECTORS, builtinCollectors, "collector"), ...plugins.enabled("collector")],
      // CSV first: the original printed where the CSV went before the operator's summary table.
      sinks: [...available(settings.metricsDir ? ["csv", "table"] : ["table"], builtinSinks, "sink"), ...plugins.enabled("sink")],
      sinkOptions,
      plugins,
    });
  },
});
