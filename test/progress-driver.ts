/**
 * Drives the progress sink on this process's real stderr, in the runner's
 * hook order, with known values: test/progress.test.ts runs it under a
 * pseudo-terminal (script, tmux) and through plain pipes. With
 * CPOST_PROGRESS_GO set, it holds the first operator open until that file
 * exists, so a test can look at the screen mid-operator.
 */
import { existsSync } from "node:fs";
import type { OperatorResult, SampleBatch } from "../core/contracts/types.ts";
import progressSink from "../plugins/progress.ts";
import { CPU_COLUMNS, fixtureOperator, fixtureRun, fixtureSummary } from "./report-fixture.ts";
import { sinkFactory } from "../plugins/index.ts";

const progress = sinkFactory(progressSink);

const sink = await progress({ options: {} });
const operators = [fixtureOperator("segment"), fixtureOperator("writer")];
const run = fixtureRun(operators, 10);
const cpuAt = CPU_COLUMNS.findIndex((c) => c.key === "cpu.percent");
const memoryAt = CPU_COLUMNS.findIndex((c) => c.key === "memory.usage_bytes");

/** Batch k: cpu 100k + 23.4 %, memory 64.5k MB, except the last row whose memory was not measured. */
function batch(operator: string, k: number, rows = 50): SampleBatch {
  const width = CPU_COLUMNS.length;
  const values = new Float64Array(rows * width);
  for (let r = 0; r < rows; r++) {
    values[r * width + cpuAt] = 100 * k + 23.4;
    values[r * width + memoryAt] = r === rows - 1 ? NaN : 64.5e6 * k;
  }
  const times = Float64Array.from({ length: rows }, (_, r) => (k * rows + r) * 10);
  return { operator, containerId: `c-${operator}`, columns: CPU_COLUMNS, rows, timestampMs: times.map((t) => run.startedAtMs + t), monotonicMs: times, values };
}

function result(operator: string): OperatorResult {
  return { operator, containerId: `c-${operator}`, status: "succeeded", exitCode: 0, startedAtMs: run.startedAtMs, endedAtMs: run.startedAtMs + 1000 };
}

async function waitForGo(): Promise<void> {
  const go = process.env.CPOST_PROGRESS_GO;
  if (!go) return;
  const deadline = Date.now() + 30_000;
  while (!existsSync(go) && Date.now() < deadline) await Bun.sleep(20);
}

await sink.start(run);
await sink.operatorStart?.(operators[0]!);
for (const k of [1, 2, 3]) {
  await sink.write(batch("segment", k));
  await Bun.sleep(200); // the sampler hands a batch over every 250 ms or so
}
await Bun.sleep(300); // longer than a frame: the last values are on screen
await waitForGo();
await sink.operatorDone(result("segment"), fixtureSummary({ operator: "segment", columns: CPU_COLUMNS, rows: 0, intervalMs: 10 }));
await sink.operatorStart?.(operators[1]!);
await sink.write(batch("writer", 1, 7));
await Bun.sleep(300);
await sink.operatorDone(result("writer"), fixtureSummary({ operator: "writer", columns: CPU_COLUMNS, rows: 0, intervalMs: 10 }));
await sink.end({ results: [], summaries: [], endedAtMs: run.startedAtMs + 2000, interval: { target: 10, p50: 10, p99: 11, samples: 157 }, interrupted: false });
process.stdout.write("driver done\n");
