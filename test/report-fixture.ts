/**
 * Runs made up in the test for the HTML report: operators, batches of known
 * signals (with single-sample spikes to prove no peak is lost), summaries
 * computed from the same numbers, fed to any sink in the runner's hook order.
 */
import { columnKey, type MetricColumn, type MetricSpec, type Operator, type OperatorResult, type OperatorSummary, type RunInfo, type RunResult, type SampleBatch, type Sink } from "../core/contracts/types.ts";

/** An operator as core/pipeline/pipeline.ts would give it. */
export function fixtureOperator(name: string, requests: Operator["requests"] = {}): Operator {
  return { name, image: "cpost-test/busybox", tag: "1", variables: {}, inputs: [], outputs: [], requests, services: [], models: [], needsTriton: false, line: 1 };
}

/** The run facts of a made-up run of these operators. */
export function fixtureRun(operators: Operator[], intervalMs = 1): RunInfo {
  return {
    id: "fixture-run",
    pipeline: { file: "fixture.yaml", apiVersion: "0.4.0", name: "fixture <pipeline>", operators, order: operators },
    host: { hostname: "fixture-host", cpus: 2, memoryBytes: 24e9, kernel: "6.18.0", arch: "x64", cgroupVersion: 1, engine: "docker", engineVersion: "20.10.24" },
    collectors: ["cgroup", "blkio", "nvml"],
    sinks: ["html"],
    intervalMs,
    startedAtMs: Date.UTC(2026, 0, 2, 3, 4, 5),
    cpostVersion: "0.1.0-test",
  };
}

const spec = (name: string, unit: MetricSpec["unit"], kind: MetricSpec["kind"], collector: string, device?: number): MetricColumn => ({
  name,
  unit,
  kind,
  device,
  key: columnKey({ name, device }),
  collector,
});

/** The columns of a container with cgroup, blkio and one GPU. */
export const FULL_COLUMNS: readonly MetricColumn[] = [
  spec("cpu.percent", "percent", "gauge", "cgroup"),
  spec("memory.usage_bytes", "bytes", "gauge", "cgroup"),
  spec("memory.limit_bytes", "bytes", "gauge", "cgroup"),
  spec("io.read_bytes", "bytes", "counter", "blkio"),
  spec("io.write_bytes", "bytes", "counter", "blkio"),
  spec("gpu.utilization_pct", "percent", "gauge", "nvml", 0),
  spec("gpu.memory_used_bytes", "bytes", "gauge", "nvml", 0),
  spec("gpu.memory_total_bytes", "bytes", "gauge", "nvml", 0),
];

/** cgroup and blkio only, as on a host without a GPU. */
export const CPU_COLUMNS: readonly MetricColumn[] = FULL_COLUMNS.slice(0, 5);

/** A made-up series: `rows` samples `intervalMs` apart, with a spike of `spike.value` at row `spike.row` in cpu.percent. */
export interface SeriesSpec {
  operator: string;
  columns: readonly MetricColumn[];
  rows: number;
  intervalMs: number;
  batchRows?: number;
  spike?: { row: number; value: number };
  /** Memory dips to this many bytes at one row: a lost minimum would show. */
  dip?: { row: number; value: number };
}

/** The value of metric `key` (its name) at row `i` (deterministic, so tests can recompute it). */
function signal(key: string, i: number, s: SeriesSpec): number {
  if (s.spike && i === s.spike.row && key === "cpu.percent") return s.spike.value;
  if (s.dip && i === s.dip.row && key === "memory.usage_bytes") return s.dip.value;
  const t = (i * s.intervalMs) / 1000;
  switch (key) {
    case "cpu.percent":
      return 60 + 40 * Math.sin(t / 7) + ((i * 7919) % 13);
    case "memory.usage_bytes":
      return 100e6 + ((t * 5e6) % 400e6);
    case "memory.limit_bytes":
      return 9223372036854771712; // cgroup v1's "no limit"
    case "io.read_bytes":
      return Math.floor(t * 1e6);
    case "io.write_bytes":
      return Math.floor(t * 2.5e5);
    case "gpu.utilization_pct":
      return Math.floor(t / 30) % 2 === 0 ? 95 : 5;
    case "gpu.memory_used_bytes":
      return 2e9 + 1e9 * Math.sin(t / 60);
    case "gpu.memory_total_bytes":
      return 16e9;
    default:
      return NaN;
  }
}

/** The batches of a series, as the sampler hands them over (every `batchRows` rows). */
export function* fixtureBatches(s: SeriesSpec, startMonotonicMs = 0, startEpochMs = Date.UTC(2026, 0, 2, 3, 4, 5)): Generator<SampleBatch> {
  const batchRows = s.batchRows ?? 250;
  const width = s.columns.length;
  for (let first = 0; first < s.rows; first += batchRows) {
    const rows = Math.min(batchRows, s.rows - first);
    const timestampMs = new Float64Array(rows);
    const monotonicMs = new Float64Array(rows);
    const values = new Float64Array(rows * width);
    for (let r = 0; r < rows; r++) {
      const i = first + r;
      monotonicMs[r] = startMonotonicMs + i * s.intervalMs;
      timestampMs[r] = startEpochMs + i * s.intervalMs;
      for (let c = 0; c < width; c++) values[r * width + c] = signal(s.columns[c]!.name, i, s);
    }
    yield { operator: s.operator, containerId: `c-${s.operator}`, columns: s.columns, rows, timestampMs, monotonicMs, values };
  }
}

/** A summary computed straight from the signals, with the CPOST sizing rule. */
export function fixtureSummary(s: SeriesSpec): OperatorSummary {
  let cpuSum = 0, cpuMax = 0, memSum = 0, memMax = 0;
  for (let i = 0; i < s.rows; i++) {
    const c = signal("cpu.percent", i, s);
    const m = signal("memory.usage_bytes", i, s) / 1e6;
    cpuSum += c;
    memSum += m;
    cpuMax = Math.max(cpuMax, c);
    memMax = Math.max(memMax, m);
  }
  const n = Math.max(1, s.rows);
  return {
    operator: s.operator,
    samples: s.rows,
    cpuPercent: { mean: s.rows ? cpuSum / n : 0, max: cpuMax },
    memoryMb: { mean: s.rows ? memSum / n : 0, max: memMax },
    stats: [{ key: "cpu.percent", name: "cpu.percent", unit: "percent", count: s.rows, mean: cpuSum / n, max: cpuMax, min: 0, last: 0 }],
    recommendation: { cpu: Math.max(1, Math.ceil(cpuMax / 100)), memory: Math.ceil((memMax + 100) / 256) * 256, policy: "cpost", notes: [] },
  };
}

/** One operator of a made-up run: its series (rows 0 = skipped) and how it ended. */
export interface FixtureOperator {
  series: SeriesSpec;
  requests?: Operator["requests"];
  status?: OperatorResult["status"];
  exitCode?: number | null;
  reason?: string;
}

/** Feeds a whole made-up run to `sink` in the runner's order; returns what it fed. */
export async function feedFixtureRun(sink: Sink, ops: FixtureOperator[]): Promise<{ run: RunInfo; result: RunResult }> {
  const operators = ops.map((o) => fixtureOperator(o.series.operator, o.requests));
  const run = fixtureRun(operators, ops[0]?.series.intervalMs ?? 1);
  const results: OperatorResult[] = [];
  const summaries: OperatorSummary[] = [];
  await sink.start(run);
  let clock = 0;
  for (const [k, o] of ops.entries()) {
    await sink.operatorStart?.(operators[k]!);
    for (const batch of fixtureBatches(o.series, clock, run.startedAtMs + clock)) await sink.write(batch);
    const durationMs = o.series.rows * o.series.intervalMs;
    const status = o.status ?? "succeeded";
    const result: OperatorResult = {
      operator: o.series.operator,
      containerId: `c-${o.series.operator}`,
      status,
      exitCode: o.exitCode === undefined ? (status === "succeeded" ? 0 : null) : o.exitCode,
      reason: o.reason,
      startedAtMs: run.startedAtMs + clock,
      endedAtMs: run.startedAtMs + clock + durationMs,
    };
    const summary = fixtureSummary(o.series);
    results.push(result);
    summaries.push(summary);
    await sink.operatorDone(result, summary);
    clock += durationMs + 100;
  }
  const rows = ops.reduce((n, o) => n + o.series.rows, 0);
  const result: RunResult = {
    results,
    summaries,
    endedAtMs: run.startedAtMs + clock,
    interval: { target: run.intervalMs, p50: run.intervalMs, p99: run.intervalMs * 1.3, samples: rows },
    interrupted: false,
  };
  await sink.end(result);
  return { run, result };
}

/** The chart data embedded in a report, as the page parses it. */
export function embedded(html: string): { charts: Array<{ operator: string; group: string; x: number[]; series: Array<{ label: string; role: string; values?: Array<number | null>; value?: number }> }> } {
  const m = html.match(/<script type="application\/json" id="cpost-data">([\s\S]*?)<\/script>/);
  if (!m) throw new Error("no embedded chart data in the report");
  return JSON.parse(m[1]!);
}

/** Smallest and largest non-null value of a chart series. */
export function extremes(values: Array<number | null> | undefined): { min: number; max: number } {
  const v = (values ?? []).filter((x): x is number => x !== null);
  return { min: Math.min(...v), max: Math.max(...v) };
}
