/**
 * `cpost replay <run.msgpack> [--sinks table,csv] [--metrics_dir D]`: feeds a
 * recorded run into sinks with the hooks of a live run, so the table and
 * CSVs come out as the live run wrote them. Summaries are rebuilt from the
 * samples (`--policy` re-sizes with another rule). A recording cut short by
 * a crash replays up to its last complete record, with a warning. Sink
 * plugins load as for `cpost run` (--sink-plugin, CPOST_PLUGIN_PATH).
 */
import { defineCommand } from "citty";
import { CpostError, formatError } from "../../contracts/errors.ts";
import { loadPlugins, PLUGIN_PATH_ENV, resolveSinkFactories, scanPluginFlags } from "../../registry/plugin-loader.ts";
import { readRecording, replayInto } from "../../sinks/recording.ts";
import { POLICY_ARGS, policyFlagsOf, policyFromFlags } from "../../sizing/sizing.ts";
import type { Sink } from "../../contracts/types.ts";
import { commaList, parseArgs, valueOf, type FlagsDef } from "../flags.ts";
import { checkSinkOptions, sinkPrefixesOf, withEnabled } from "./run.ts";
import { warn } from "../console.ts";

const args = {
  recording: { type: "positional", required: true, description: "run recording (.msgpack)", valueHint: "run.msgpack" },
  sinks: { type: "string", description: "sinks, comma-separated (default table, plus csv with --metrics_dir); sink options: --<sink>-<option> VALUE", valueHint: "table,csv" },
  metrics_dir: { type: "string", description: "directory for the CSV files and other file outputs (never the recording's own, unless given)", valueHint: "dir" },
  ...POLICY_ARGS,
  "sink-plugin": { type: "string", repeated: true, description: `load a sink plugin file and feed it too (repeatable); ${PLUGIN_PATH_ENV} plugins are used when named in --sinks`, valueHint: "./my-sink.ts" },
} satisfies FlagsDef;

export default defineCommand({
  meta: { name: "replay", description: "Feed a recorded run (written with --sinks msgpack or --record) into sinks, as the live run did." },
  args,
  async run({ rawArgs }) {
    const { collectorFiles, sinkFiles } = scanPluginFlags(rawArgs);
    if (collectorFiles.length > 0) {
      throw new CpostError("usage", "cpost replay feeds recorded samples to sinks; it runs no collector", { hint: "drop --collector-plugin; give it to `cpost run` to record its metrics" });
    }
    const plugins = await loadPlugins({ sinkFiles, pluginPath: process.env[PLUGIN_PATH_ENV] });
    // `--<sink>-<option> value` flags of the chosen sinks reach them as `cpost run` passes them.
    const { positionals, flags, sinkOptions } = parseArgs(rawArgs, args, { sinkPrefixes: sinkPrefixesOf(plugins) });
    const str = valueOf(flags);
    if (positionals.length !== 1) {
      throw new CpostError("usage", `cpost replay takes one recording file (got ${positionals.length} arguments)`, { hint: "cpost replay <run.msgpack> [--sinks table,csv] [--metrics_dir D]; see `cpost replay --help`" });
    }
    const file = positionals[0]!;
    const metricsDir = str("metrics-dir");
    const chosen = flags.sinks === undefined ? (metricsDir ? ["csv", "table"] : ["table"]) : commaList(str("sinks"));
    if (chosen.length === 0) throw new CpostError("usage", "--sinks is empty", { hint: "name at least one sink, e.g. --sinks table,csv" });
    const names = withEnabled(chosen, "sink", plugins);
    checkSinkOptions(sinkOptions, names, [], plugins);
    const policy = policyFromFlags(policyFlagsOf(flags));
    const recording = readRecording(file);
    if (!recording.complete) {
      warn(`${file} ends before the run did (it crashed or was killed); replaying its ${recording.operators.length} operator(s) up to the last complete record`);
    }
    const sinks: Sink[] = [];
    for (const { factory } of await resolveSinkFactories(names, plugins)) sinks.push(await factory({ metricsDir, options: sinkOptions, out: process.stdout }));
    let failures = 0;
    await replayInto(recording, sinks, {
      policy,
      onError(error) {
        failures++;
        process.stderr.write(`cpost: ${formatError(error)}\n`);
      },
    });
    if (failures > 0) throw new CpostError("plugin", `${failures} sink(s) failed during replay`, { hint: "see the errors above" });
    return 0;
  },
});
