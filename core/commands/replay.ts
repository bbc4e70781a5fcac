/**
 * `cpost replay <run.msgpack> [--sinks table,csv] [--metrics_dir D]`: feeds a
 * recorded run into sinks with the hooks of a live run, so the table and
 * CSVs come out as the live run wrote them. Summaries are rebuilt from the
 * samples (`--policy` re-sizes with another rule). A recording cut short by
 * a crash replays up to its last complete record, with a warning.
 */
import { defineCommand } from "citty";
import { loadSinkFactories, sinkName } from "../../plugins/index.ts";
import { CpostError, formatError } from "../errors.ts";
import { readRecording, replayInto } from "../recording.ts";
import { POLICY_ARGS, policyFlagsOf, policyFromFlags } from "../sizing.ts";
import type { Sink } from "../types.ts";

export default defineCommand({
  meta: { name: "replay", description: "Feed a recorded run (written with --sinks msgpack or --record) into sinks, as the live run did." },
  args: {
    recording: { type: "positional", required: true, description: "run recording (.msgpack)", valueHint: "run.msgpack" },
    sinks: { type: "string", description: "sinks, comma-separated (default table, plus csv with --metrics_dir); sink options: --<sink>-<option> VALUE", valueHint: "table,csv" },
    metrics_dir: { type: "string", description: "directory for the CSV files and other file outputs (never the recording's own, unless given)", valueHint: "dir" },
    ...POLICY_ARGS,
  },
  async run({ args }) {
    const metricsDir = (args.metrics_dir ?? args["metrics-dir"]) as string | undefined;
    const names = args.sinks === undefined ? (metricsDir ? ["csv", "table"] : ["table"]) : String(args.sinks).split(",").map((s) => s.trim()).filter(Boolean);
    if (names.length === 0) throw new CpostError("usage", "--sinks is empty", { hint: "name at least one sink, e.g. --sinks table,csv" });
    const policy = policyFromFlags(policyFlagsOf(args as Record<string, string | true | undefined>));
    const recording = readRecording(args.recording);
    if (!recording.complete) {
      process.stderr.write(`warning: ${args.recording} ends before the run did (it crashed or was killed); replaying its ${recording.operators.length} operator(s) up to the last complete record\n`);
    }
    // `--<sink>-<option> value` flags of the chosen sinks reach them as the run command passes them.
    const options: Record<string, string | undefined> = {};
    for (const [key, value] of Object.entries(args)) {
      if (typeof value === "string" && names.some((n) => key.startsWith(`${n}-`) || key.startsWith(`${sinkName(n)}-`))) options[key] = value;
    }
    const sinks: Sink[] = [];
    for (const { factory } of await loadSinkFactories(names)) sinks.push(await factory({ metricsDir, options, out: process.stdout }));
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
