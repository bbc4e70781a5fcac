/** `cpost report <run.msgpack> -o report.html`: a recorded run as one self-contained HTML page with charts. */
import { defineCommand } from "citty";
import { resolve } from "node:path";
import { readRecording, replayInto } from "../../sinks/recording.ts";
import { defineHtmlSink } from "../../../plugins/html/index.ts";

export default defineCommand({
  meta: {
    name: "report",
    description: "Write a self-contained HTML report (charts of CPU, memory, disk and GPU per operator, summaries, run facts) from a recorded run.",
  },
  args: {
    recording: { type: "positional", required: true, description: "run recording written with --sinks msgpack", valueHint: "run.msgpack" },
    out: { type: "string", alias: "o", description: "HTML file to write (default: the recording's name with .html)", valueHint: "report.html" },
  },
  async run({ args }) {
    const recording = readRecording(args.recording);
    const path = resolve(args.out ?? `${args.recording.replace(/\.msgpack$/, "")}.html`);
    // Replay through the html sink: the same report a live `--sinks html` run writes.
    await replayInto(recording, [defineHtmlSink({ path }, recording.complete)]);
    const samples = recording.operators.reduce((n, op) => n + op.batches.reduce((m, b) => m + b.rows, 0), 0);
    const note = recording.complete ? "" : " (the recording is incomplete: it ends before the run did)";
    process.stdout.write(`report of ${recording.operators.length} operators, ${samples} samples: ${path}${note}\n`);
    return 0;
  },
});
