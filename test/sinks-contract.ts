/**
 * The contract every sink passes (built-in or plugin): the lifecycle of the
 * Sink type in core/contracts/types.ts, driven as the runner drives it. Use it from a
 * test file:
 *
 *   sinkContract("csv", (ctx) => csvFactory({ metricsDir: ctx.dir, out: ctx.out, options: {} }), {
 *     samplesKept: (ctx) => ...,   // optional: how many samples the sink kept, read back from its output
 *   });
 *
 * Scenarios: the full hook order over several operators; an operator with no
 * samples; a failed operator; a skipped one; an interrupted run; a very long
 * operator (many batches). Batches are checked to come back unmodified (they
 * are immutable once handed over) and, where the sink can say, every sample
 * is kept.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SummaryBuilder } from "../core/sizing/summary.ts";
import type { MetricColumn, Operator, OperatorResult, OperatorStatus, RunInfo, RunResult, SampleBatch, Sink } from "../core/contracts/types.ts";

/** What a sink under test gets: a fresh directory and a captured console. */
export interface SinkContext {
  dir: string;
  out: { write(text: string): boolean; isTTY: boolean; text: string };
  /** The run as passed to start (after start ran). */
  run?: RunInfo;
}

export interface SinkContractOptions {
  /** Samples the sink kept, read back from what it wrote (files, server); omit when it cannot be known. */
  samplesKept?(ctx: SinkContext): number | Promise<number>;
  /** Rows of the "very long operator" (default 200 000, 10 columns). */
  longRows?: number;
  /** Per-test timeout, ms. */
  timeoutMs?: number;
}

/** Metric columns shaped like the cgroup collector's. */
export function contractColumns(): readonly MetricColumn[] {
  const col = (name: string, unit: MetricColumn["unit"], kind: MetricColumn["kind"]): MetricColumn => ({ name, unit, kind, key: name, collector: "contract" });
  return [
    col("cpu.usage_ns", "ns", "counter"),
    col("cpu.percent", "percent", "gauge"),
    col("memory.usage_bytes", "bytes", "gauge"),
    col("memory.working_set_bytes", "bytes", "gauge"),
    col("memory.rss_bytes", "bytes", "gauge"),
    col("memory.cache_bytes", "bytes", "gauge"),
    col("pids.current", "count", "gauge"),
    col("io.read_bytes", "bytes", "counter"),
    col("io.write_bytes", "bytes", "counter"),
    col("psi.cpu.some_avg10", "percent", "gauge"),
  ];
}

/** `rows` samples of one container cut into batches of `batchRows`, starting at epoch `startMs`, 1 ms apart. */
export function contractBatches(operator: string, rows: number, batchRows = 250, startMs = 1_732_400_000_000.5): SampleBatch[] {
  const columns = contractColumns();
  const width = columns.length;
  const batches: SampleBatch[] = [];
  for (let first = 0; first < rows; first += batchRows) {
    const n = Math.min(batchRows, rows - first);
    const values = new Float64Array(n * width);
    for (let r = 0; r < n; r++) {
      const i = first + r;
      const row = [i * 1e6, i === 0 ? NaN : (i * 37) % 250, 5e7 + (i % 100) * 4096, 4.8e7, 4e7, 1e7, 3, i * 512, i * 256, 0.25];
      values.set(row, r * width);
    }
    batches.push({
      operator,
      containerId: operator.padEnd(64, "0"),
      columns,
      rows: n,
      timestampMs: Float64Array.from({ length: n }, (_, r) => startMs + first + r),
      monotonicMs: Float64Array.from({ length: n }, (_, r) => first + r),
      values,
    });
  }
  return batches;
}

function operator(name: string, line: number): Operator {
  return { name, image: "cpost-test/busybox", tag: "1", command: ["true"], variables: {}, inputs: [], outputs: [], requests: {}, services: [], models: [], needsTriton: false, line };
}

function runInfo(operators: Operator[], dir: string): RunInfo {
  return {
    id: "contract-run",
    pipeline: { file: join(dir, "contract.yaml"), apiVersion: "0.4.0", name: "contract", operators, order: operators },
    host: { hostname: "contract", cpus: 2, memoryBytes: 8e9, kernel: "6.1.0", arch: "x64", cgroupVersion: 1, engine: "docker", engineVersion: "20.10.24" },
    collectors: ["cgroup"],
    sinks: [],
    intervalMs: 1,
    startedAtMs: 1_732_400_000_000,
    metricsDir: dir,
    cpostVersion: "0.0.0-contract",
  };
}

const bytesOf = (a: Float64Array) => Buffer.from(a.slice().buffer);

type Plan = Array<{ name: string; rows: number; status: OperatorStatus; exitCode: number | null }>;

/** Drives `sink` through a run as the runner would; returns how many samples were written. */
async function drive(sink: Sink, ctx: SinkContext, plan: Plan, interrupted = false): Promise<number> {
  const operators = plan.map((p, i) => operator(p.name, i * 10 + 3));
  ctx.run = runInfo(operators, ctx.dir);
  await sink.start(ctx.run);
  const results: OperatorResult[] = [];
  const summaries = [];
  let written = 0;
  for (const [i, p] of plan.entries()) {
    await sink.operatorStart?.(operators[i]!);
    const builder = new SummaryBuilder(p.name);
    const batches = contractBatches(p.name, p.rows, 250, 1_732_400_000_000.5 + i * 1e6);
    for (const batch of batches) {
      const before = [bytesOf(batch.values), bytesOf(batch.timestampMs), batch.rows] as const;
      builder.add(batch);
      await sink.write(batch);
      // Batches are immutable once handed over (compared as bytes: NaN is a valid value).
      expect(bytesOf(batch.values).equals(before[0]) && bytesOf(batch.timestampMs).equals(before[1]) && batch.rows === before[2]).toBe(true);
      written += batch.rows;
    }
    const last = batches.at(-1);
    const result: OperatorResult = {
      operator: p.name,
      containerId: p.status === "skipped" ? "" : p.name.padEnd(64, "0"),
      status: p.status,
      exitCode: p.exitCode,
      startedAtMs: 1_732_400_000_000 + i * 1e6,
      endedAtMs: last ? last.timestampMs[last.rows - 1]! : 1_732_400_000_000 + i * 1e6,
    };
    const summary = builder.build(result);
    results.push(result);
    summaries.push(summary);
    await sink.operatorDone(result, summary);
  }
  const end: RunResult = { results, summaries, endedAtMs: 1_732_400_000_000 + plan.length * 1e6, interval: { target: 1, p50: 1, p99: 1.2, samples: written }, interrupted };
  await sink.end(end);
  return written;
}

/** Registers the sink contract tests for the sink `make` creates. */
export function sinkContract(name: string, make: (ctx: SinkContext) => Sink | Promise<Sink>, options: SinkContractOptions = {}): void {
  const timeout = options.timeoutMs ?? 60_000;
  const dirs: string[] = [];
  const context = (): SinkContext => {
    const dir = mkdtempSync(join(tmpdir(), `cpost-sink-${name}-`));
    dirs.push(dir);
    const out = { text: "", isTTY: false, write(text: string) { out.text += text; return true; } };
    return { dir, out };
  };
  const check = async (plan: Plan, interrupted = false) => {
    const ctx = context();
    const sink = await make(ctx);
    expect(typeof sink.name).toBe("string");
    const written = await drive(sink, ctx, plan, interrupted);
    if (options.samplesKept) expect(await options.samplesKept(ctx)).toBe(written);
    return ctx;
  };
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  describe(`sink contract: ${name}`, () => {
    test("start, then per operator operatorStart/write/operatorDone, then end", async () => {
      await check([
        { name: "first", rows: 1200, status: "succeeded", exitCode: 0 },
        { name: "second", rows: 300, status: "succeeded", exitCode: 0 },
      ]);
    }, timeout);
    test("an operator with no samples", async () => {
      await check([{ name: "empty", rows: 0, status: "succeeded", exitCode: 0 }]);
    }, timeout);
    test("an operator with a single sample", async () => {
      await check([{ name: "single", rows: 1, status: "succeeded", exitCode: 0 }]);
    }, timeout);
    test("a failed operator, then a skipped one", async () => {
      await check([
        { name: "fails", rows: 40, status: "failed", exitCode: 126 },
        { name: "skipped", rows: 0, status: "skipped", exitCode: null },
      ]);
    }, timeout);
    test("an interrupted run still ends", async () => {
      await check([{ name: "cut", rows: 260, status: "interrupted", exitCode: null }], true);
    }, timeout);
    test("a very long operator", async () => {
      await check([{ name: "long", rows: options.longRows ?? 200_000, status: "succeeded", exitCode: 0 }]);
    }, timeout);
  });
}
