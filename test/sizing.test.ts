/**
 * Sizing and summaries: CPOST's rule against the figures the original
 * printed in its README, the fixture runs' recommendations (computed by
 * test/fixtures/runs/oracle.py), and summaries that do not depend on how
 * samples were cut into batches.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { replayInto } from "../core/recording.ts";
import { parseSizingPolicy, recommend } from "../core/sizing.ts";
import { SummaryBuilder } from "../core/summary.ts";
import type { MetricColumn, OperatorResult, OperatorSummary, SampleBatch, Sink } from "../core/types.ts";
import { loadFixtureRun, RUNS_DIR } from "./fixtures/runs/fixture-run.ts";
import { contractBatches } from "./sinks-contract.ts";

const result = (extra: Partial<OperatorResult> = {}): OperatorResult => ({ operator: "op", containerId: "c", status: "succeeded", exitCode: 0, startedAtMs: 0, endedAtMs: 1, ...extra });

describe("CPOST's rule", () => {
  // Maximum CPU % and memory MB and the Resource column, as the original's README shows them.
  const readme: Array<[number, number, number, number]> = [
    [1097.941, 405.242, 11, 512],
    [1134.358, 4455.412, 12, 4608],
    [1017.747, 552.313, 11, 768],
    [14.923, 3.783, 1, 256],
  ];
  for (const [cpu, memory, cores, mb] of readme) {
    test(`max ${cpu} % and ${memory} MB -> cpu: ${cores}, memory: ${mb}`, () => {
      expect(recommend({ cpuPercent: cpu, memoryMb: memory, samples: 10 })).toEqual({ cpu: cores, memory: mb, policy: "cpost", notes: [] });
    });
  }

  test("edges: exactly one core, just above it, nothing at all, and the 256 MB steps", () => {
    expect(recommend({ cpuPercent: 100, memoryMb: 156, samples: 1 })).toMatchObject({ cpu: 1, memory: 256 });
    expect(recommend({ cpuPercent: 100.001, memoryMb: 156.001, samples: 1 })).toMatchObject({ cpu: 2, memory: 512 });
    // The original said "cpu: 0" for an idle operator; no scheduler takes that.
    expect(recommend({ cpuPercent: 0, memoryMb: 0, samples: 0 })).toEqual({ cpu: 1, memory: 256, policy: "cpost", notes: ["no samples: minimum request"] });
    expect(recommend({ cpuPercent: NaN, memoryMb: -5, samples: 3 })).toMatchObject({ cpu: 1, memory: 256 });
  });

  test("an OOM-killed operator's memory is marked as a lower bound; GPUs are passed through", () => {
    expect(recommend({ cpuPercent: 50, memoryMb: 300, samples: 9, oomKilled: true, gpu: 2 })).toEqual({
      cpu: 1,
      memory: 512,
      gpu: 2,
      policy: "cpost",
      notes: ["lower bound: OOM killed, it needs more memory than it was allowed"],
    });
  });

  test("--policy parses CPOST's rule and percentiles with headroom, and refuses anything else", () => {
    expect(parseSizingPolicy("cpost")).toEqual({ kind: "cpost" });
    expect(parseSizingPolicy("p95")).toEqual({ kind: "percentile", percentile: 95, headroomPct: 0 });
    expect(parseSizingPolicy("p99.5+20%")).toEqual({ kind: "percentile", percentile: 99.5, headroomPct: 20 });
    expect(() => parseSizingPolicy("p101")).toThrow(expect.objectContaining({ code: "usage" }));
    expect(() => parseSizingPolicy("generous")).toThrow('unknown sizing policy "generous"');
  });
});

describe("SummaryBuilder", () => {
  test("the fixture runs' recommendations are the oracle's", async () => {
    for (const fixture of ["classic", "disk-gpu"]) {
      const want = JSON.parse(readFileSync(join(RUNS_DIR, fixture, "expected", "recommendations.json"), "utf8")) as Record<string, object>;
      const got: Record<string, object> = {};
      const spy: Sink = { name: "spy", start() {}, write() {}, operatorDone(r, s) { const { cpu, memory, gpu } = s.recommendation; got[r.operator] = gpu === undefined ? { cpu, memory } : { cpu, memory, gpu }; }, end() {} };
      await replayInto(loadFixtureRun(fixture), [spy]);
      expect(got).toEqual(want);
    }
  });

  test("sizes on the maximum as printed: 100.0004 % shows as 100.000 % and asks for one core", () => {
    const col = (name: string): MetricColumn => ({ name, unit: "percent", kind: "gauge", key: name, collector: "t" });
    const columns = [col("cpu.percent"), col("memory.usage_bytes")];
    const builder = new SummaryBuilder("op");
    builder.add({ operator: "op", containerId: "c", columns, rows: 2, timestampMs: Float64Array.of(0, 10), monotonicMs: Float64Array.of(0, 10), values: Float64Array.of(NaN, 1e6, 100.0004, 3e6) });
    const summary = builder.build(result());
    expect(summary.cpuPercent).toEqual({ mean: 100.0004, max: 100.0004 });
    expect(summary.memoryMb).toEqual({ mean: 2, max: 2 });
    expect(summary.recommendation.cpu).toBe(1);
  });

  test("zero samples give a NaN-free summary with samples: 0", () => {
    const summary = new SummaryBuilder("idle").build(result({ operator: "idle" }));
    expect(summary).toEqual({
      operator: "idle",
      samples: 0,
      cpuPercent: { mean: 0, max: 0 },
      memoryMb: { mean: 0, max: 0 },
      stats: [],
      recommendation: { cpu: 1, memory: 256, policy: "cpost", notes: ["no samples: minimum request"] },
    });
  });

  test("the same samples cut into different batches give the same summary", () => {
    const whole = contractBatches("op", 1001, 1001);
    const build = (batches: SampleBatch[]): OperatorSummary => {
      const builder = new SummaryBuilder("op");
      batches.forEach((b) => builder.add(b));
      return builder.build(result());
    };
    const once = build(whole);
    expect(once.samples).toBe(1001);
    expect(build(contractBatches("op", 1001, 1))).toEqual(once);
    expect(build(contractBatches("op", 1001, 250))).toEqual(once);
    const stat = once.stats.find((s) => s.key === "io.read_bytes")!;
    expect(stat).toMatchObject({ count: 1001, min: 0, max: 1000 * 512, last: 1000 * 512 });
    // cpu.percent of reading i is (i*37) % 250 and the first is not measured: the rows' max is 249.
    expect(once.cpuPercent.max).toBe(249);
  });

  test("a percentile policy sizes on the p-th row plus headroom", () => {
    const col = (name: string): MetricColumn => ({ name, unit: "percent", kind: "gauge", key: name, collector: "t" });
    const columns = [col("cpu.percent"), col("memory.usage_bytes")];
    // 101 readings: rows 1..100 have cpu = 10 * row and memory that rises 1 MB per reading.
    const values = new Float64Array(101 * 2);
    for (let i = 0; i < 101; i++) values.set([i === 0 ? NaN : 10 * i, i * 1e6], i * 2);
    const batch: SampleBatch = { operator: "op", containerId: "c", columns, rows: 101, timestampMs: Float64Array.from({ length: 101 }, (_, i) => i), monotonicMs: Float64Array.from({ length: 101 }, (_, i) => i), values };
    const sized = (policy: string) => {
      const builder = new SummaryBuilder("op", { policy: parseSizingPolicy(policy) });
      builder.add(batch);
      return builder.build(result()).recommendation;
    };
    expect(sized("cpost")).toMatchObject({ cpu: 10, memory: 256, policy: "cpost" });
    // p90 cpu = 900 % -> 9 cores; +20 % -> 1080 % -> 11 cores. p90 memory = 89.5 MB; +20 % = 107.4 MB -> 256.
    expect(sized("p90")).toMatchObject({ cpu: 9, memory: 256, policy: "p90" });
    expect(sized("p90+20%")).toMatchObject({ cpu: 11, memory: 256, policy: "p90+20%", notes: ["p90 + 20% headroom"] });
  });

  test("GPUs used: devices where the operator's own processes held memory", () => {
    const gpu = (name: string, device: number): MetricColumn => ({ name, unit: "bytes", kind: "gauge", key: `${name}[${device}]`, device, collector: "nvml" });
    const columns = [gpu("gpu.utilization_pct", 0), gpu("gpu.utilization_pct", 1), gpu("gpu.process_memory_bytes", 0), gpu("gpu.process_memory_bytes", 1)];
    const builder = new SummaryBuilder("op");
    builder.add({ operator: "op", containerId: "c", columns, rows: 2, timestampMs: Float64Array.of(0, 1), monotonicMs: Float64Array.of(0, 1), values: Float64Array.of(90, 80, 0, 5e8, 95, 70, 0, 6e8) });
    expect(builder.build(result()).recommendation.gpu).toBe(1);
  });
});
