/**
 * Throughput of the csv and msgpack sinks on 10 containers sampled at 1 kHz
 * (goal: each at least 20x real time, i.e. >= 200 000 samples/s), with the
 * msgpack size per sample. Each sink runs beside a naive baseline measured in
 * the same run on the same batches: CSV rows made with Array#join, and a
 * recording made with JSON.stringify of each batch, both written the same way.
 *
 *   node_modules/.bin/bun bench/sinks.ts [seconds of run, default 60]
 *
 * Samples carry 21 columns, as the cgroup + blkio collectors give on cgroup v1.
 */
import { closeSync, mkdtempSync, openSync, rmSync, statSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readRecording } from "../core/sinks/recording.ts";
import { SummaryBuilder } from "../core/sizing/summary.ts";
import type { MetricColumn, OperatorResult, OperatorSummary, RunInfo, SampleBatch, Sink } from "../core/contracts/types.ts";
import csvSink from "../plugins/csv.ts";
import msgpackSink from "../plugins/msgpack.ts";
import { sinkFactory } from "../plugins/index.ts";

const csv = sinkFactory(csvSink);
const msgpack = sinkFactory(msgpackSink);

const CONTAINERS = 10;
const RATE_HZ = 1000;
const BATCH_ROWS = 250;
const SECONDS = Number(process.argv[2] ?? 60);
const GOAL = 20;

const names: Array<[string, MetricColumn["unit"], MetricColumn["kind"]]> = [
  ["cpu.usage_ns", "ns", "counter"], ["cpu.percent", "percent", "gauge"], ["cpu.user_ns", "ns", "counter"], ["cpu.system_ns", "ns", "counter"],
  ["cpu.nr_throttled", "count", "counter"], ["cpu.throttled_ns", "ns", "counter"], ["memory.usage_bytes", "bytes", "gauge"],
  ["memory.working_set_bytes", "bytes", "gauge"], ["memory.rss_bytes", "bytes", "gauge"], ["memory.cache_bytes", "bytes", "gauge"],
  ["memory.peak_bytes", "bytes", "gauge"], ["memory.limit_bytes", "bytes", "gauge"], ["memory.oom_kills", "count", "counter"],
  ["pids.current", "count", "gauge"], ["io.read_bytes", "bytes", "counter"], ["io.write_bytes", "bytes", "counter"],
  ["io.read_ops", "ops", "counter"], ["io.write_ops", "ops", "counter"], ["psi.cpu.some_avg10", "percent", "gauge"],
  ["psi.memory.some_avg10", "percent", "gauge"], ["psi.io.some_avg10", "percent", "gauge"],
];

/** One container's batches, with readings shaped like real ones (growing counters, page-sized memory, fractional percents). */
function series(container: number): SampleBatch[] {
  const columns: MetricColumn[] = names.map(([name, unit, kind]) => ({ name, unit, kind, key: name, collector: "bench" }));
  const width = columns.length;
  const operator = `operator-${container}`;
  const batches: SampleBatch[] = [];
  const total = SECONDS * RATE_HZ;
  let ns = 0;
  for (let first = 0; first < total; first += BATCH_ROWS) {
    const values = new Float64Array(BATCH_ROWS * width);
    for (let r = 0; r < BATCH_ROWS; r++) {
      const i = first + r;
      const busy = 0.5 + 0.5 * Math.sin(i / 700 + container);
      ns += Math.round(busy * 1e6 * 1.7);
      const memory = 4096 * Math.round(2e4 + 1.5e4 * Math.sin(i / 3000 + container));
      values.set([ns, busy * 170.3125 + Math.random() * 3, ns * 0.8, ns * 0.2, 0, 0, memory, memory - 4096 * 300, memory - 4096 * 900, 4096 * 900,
        memory + 4096 * 50, 8 * 2 ** 30, 0, 3 + (i % 5), i * 4096, i * 2048, i, i / 2, busy * 12.5, 0.25, 1.5], r * width);
    }
    const t0 = 1_732_400_000_000.123 + first;
    batches.push({
      operator,
      containerId: operator.padEnd(64, "0"),
      columns,
      rows: BATCH_ROWS,
      timestampMs: Float64Array.from({ length: BATCH_ROWS }, (_, r) => t0 + r + Math.random() * 0.05),
      monotonicMs: Float64Array.from({ length: BATCH_ROWS }, (_, r) => first + r + 0.0421),
      values,
    });
  }
  return batches;
}

const containers = Array.from({ length: CONTAINERS }, (_, c) => series(c));
const samples = CONTAINERS * SECONDS * RATE_HZ;
const run = {
  id: "bench",
  pipeline: { file: "bench.yaml", apiVersion: "0.4.0", name: "bench", operators: [], order: [] },
  host: { hostname: "bench", cpus: 2, memoryBytes: 8e9, kernel: "", arch: "x64", cgroupVersion: 1, engine: "docker", engineVersion: "" },
  collectors: ["cgroup", "blkio"], sinks: [], intervalMs: 1, startedAtMs: 1_732_400_000_000, cpostVersion: "bench",
} satisfies RunInfo;
const done = (c: number): OperatorResult => ({ operator: `operator-${c}`, containerId: "", status: "succeeded", exitCode: 0, startedAtMs: 0, endedAtMs: 0 });
const summaries: OperatorSummary[] = containers.map((_, c) => new SummaryBuilder(`operator-${c}`).build(done(c)));

/** Seconds to push every batch through `sink` (interleaved as the sampler hands them out), close it and flush. */
async function drive(sink: Sink): Promise<number> {
  const start = performance.now();
  await sink.start(run);
  const ticks = containers[0]!.length;
  for (let t = 0; t < ticks; t++) for (let c = 0; c < CONTAINERS; c++) await sink.write(containers[c]![t]!);
  for (let c = 0; c < CONTAINERS; c++) await sink.operatorDone(done(c), summaries[c]!);
  await sink.end({ results: [], summaries, endedAtMs: 0, interval: { target: 1, p50: 1, p99: 1, samples }, interrupted: false });
  return (performance.now() - start) / 1000;
}

/** The same file traffic as the real sinks (append, flushed each second of data), with naive encoding. */
function naive(name: string, dir: string, encode: (batch: SampleBatch) => string): Sink {
  const fds = new Map<string, number>();
  const pending = new Map<string, string>();
  const fd = (op: string) => fds.get(op) ?? (fds.set(op, openSync(join(dir, `${name}-${op}`), "w")), fds.get(op)!);
  return {
    name,
    start() {},
    write(batch) {
      const text = (pending.get(batch.operator) ?? "") + encode(batch);
      if (text.length > 1 << 20) {
        writeSync(fd(batch.operator), text);
        pending.set(batch.operator, "");
      } else pending.set(batch.operator, text);
    },
    operatorDone(result) {
      writeSync(fd(result.operator), pending.get(result.operator) ?? "");
      closeSync(fd(result.operator));
    },
    end() {},
  };
}

const joinRows = (batch: SampleBatch) => {
  let text = "";
  const width = batch.columns.length;
  for (let r = 0; r < batch.rows; r++) text += `${batch.timestampMs[r]},${Array.from(batch.values.subarray(r * width, (r + 1) * width)).join(",")}\r\n`;
  return text;
};
const jsonBatch = (batch: SampleBatch) => `${JSON.stringify({ operator: batch.operator, ts: Array.from(batch.timestampMs), v: Array.from(batch.values) })}\n`;

const silent = { write: () => true };
const sizeOf = (dir: string, files: string[]) => files.reduce((n, f) => n + statSync(join(dir, f)).size, 0);
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");

console.log(`sinks: ${CONTAINERS} containers x ${RATE_HZ} Hz x ${SECONDS} s = ${fmt(samples)} samples of ${names.length} columns, batches of ${BATCH_ROWS}; Bun ${Bun.version}`);
console.log(`goal: >= ${GOAL}x real time = ${fmt(GOAL * CONTAINERS * RATE_HZ)} samples/s\n`);

const rounds = 3;
for (const kind of ["csv", "msgpack"] as const) {
  const best = { sink: Infinity, baseline: Infinity, size: 0, baselineSize: 0 };
  for (let round = 0; round < rounds; round++) {
    const dir = mkdtempSync(join(tmpdir(), `cpost-bench-${kind}-`));
    try {
      const sink = kind === "csv" ? csv({ metricsDir: dir, out: silent, options: {} }) : msgpack({ metricsDir: dir, out: silent, options: {} });
      best.sink = Math.min(best.sink, await drive(sink));
      best.baseline = Math.min(best.baseline, await drive(naive(`baseline-${kind}`, dir, kind === "csv" ? joinRows : jsonBatch)));
      const files = (await Array.fromAsync(new Bun.Glob("*").scan(dir))).sort();
      best.size = sizeOf(dir, files.filter((f) => !f.startsWith("baseline-")));
      best.baselineSize = sizeOf(dir, files.filter((f) => f.startsWith("baseline-")));
      if (kind === "msgpack" && round === 0) {
        const back = readRecording(join(dir, "bench.msgpack"));
        const rows = back.operators.reduce((n, op) => n + op.batches.reduce((m, b) => m + b.rows, 0), 0);
        if (rows !== samples || !back.complete) throw new Error(`msgpack read back ${rows} of ${samples} samples`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const rate = samples / best.sink;
  const baseRate = samples / best.baseline;
  const realTime = rate / (CONTAINERS * RATE_HZ);
  console.log(`${kind.padEnd(8)} ${fmt(rate).padStart(10)} samples/s  = ${realTime.toFixed(1)}x real time  ${realTime >= GOAL ? "(goal met)" : "(GOAL MISSED)"}   ${(best.size / samples).toFixed(1)} bytes/sample`);
  console.log(`${"baseline".padEnd(8)} ${fmt(baseRate).padStart(10)} samples/s  (${kind === "csv" ? "Array#join rows" : "JSON.stringify batches"})   ${(best.baselineSize / samples).toFixed(1)} bytes/sample   sink/baseline speed ${(rate / baseRate).toFixed(2)}x${kind === "msgpack" ? `, size ${(best.size / best.baselineSize).toFixed(2)}x` : ""}`);
}
console.log(`\nmsgpack floor: ${(names.length + 2) * 8} bytes/sample of raw Float64 (${names.length} values + wall and monotonic time); best of ${rounds} rounds each`);
