/**
 * Sizing and summaries: CPOST's rule against the figures the original
 * printed in its README, the fixture runs' recommendations under every
 * policy (computed independently by test/fixtures/runs/oracle.py and
 * sizing-oracle.py), including a recorded run with an OOM-killed, a
 * retried and a throttled operator, the evidence that goes into the msgpack
 * record, and summaries that do not depend on how samples were cut into
 * batches.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readRecording, replayInto, type Recording } from "../sinks/recording.ts";
import { CPOST_POLICY, defineSizingSeries, parseSizingPolicy, percentile, PERCENTILE_POLICY, policyFromFlags, policyRule, recommend, type PolicyFlags, type SizingPolicy } from "./sizing.ts";
import { SummaryBuilder } from "./summary.ts";
import type { MetricColumn, OperatorResult, OperatorSummary, Recommendation, SampleBatch, Sink, SizingEvidence } from "../contracts/types.ts";
import msgpackSink from "../../plugins/msgpack.ts";
import { loadFixtureRun, RUNS_DIR } from "../../test/fixtures/runs/fixture-run.ts";
import { contractBatches } from "../../test/sinks-contract.ts";
import { sinkFactory } from "../../plugins/index.ts";

const msgpack = sinkFactory(msgpackSink);

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Each operator's recommendation when `recording` is replayed under `policy`. */
async function recommendations(recording: Recording, policy?: SizingPolicy): Promise<Record<string, Recommendation>> {
  const got: Record<string, Recommendation> = {};
  const spy: Sink = { name: "spy", start() {}, write() {}, operatorDone(r, s) { got[r.operator] = s.recommendation; }, end() {} };
  await replayInto(recording, [spy], { policy });
  return got;
}

interface OracleOperator {
  cpu: number;
  memory: number;
  gpu?: number;
  lowerBound?: { memory: boolean; cpu: boolean };
  /** Which notes the oracle expects: "host" (used every CPU of the host), "page cache" (left out of the need). */
  notes: string[];
  evidence: { cpu: SizingEvidence["cpu"]; memory: SizingEvidence["memory"] };
}
const oracle = (fixture: string) =>
  JSON.parse(readFileSync(join(RUNS_DIR, fixture, "expected", "sizing.json"), "utf8")) as { policies: Array<{ flags: PolicyFlags; params: SizingPolicy; operators: Record<string, OracleOperator> }> };

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

  test("steps and minimums: fractional cores, other memory steps, and float noise at a step's edge", () => {
    const policy = (extra: Partial<SizingPolicy>): SizingPolicy => ({ ...PERCENTILE_POLICY, ...extra });
    expect(recommend({ cpuPercent: 230, memoryMb: 100, samples: 5 }, policy({ cpuStep: 0.1, minCpu: 0.5, memoryStepMb: 64, minMemoryMb: 0, memoryHeadroomPct: 0 }))).toMatchObject({ cpu: 2.3, memory: 128 });
    expect(recommend({ cpuPercent: 231, memoryMb: 10, samples: 5 }, policy({ cpuStep: 0.25, minCpu: 0.5, memoryStepMb: 64, minMemoryMb: 256, memoryHeadroomPct: 0 }))).toMatchObject({ cpu: 2.5, memory: 256 });
    expect(recommend({ cpuPercent: 12, memoryMb: 0, samples: 5 }, policy({ cpuStep: 0.1, minCpu: 0.5 }))).toMatchObject({ cpu: 0.5, memory: 256 });
    // 1600 MB + 12 % is 1792.0000000000002 in floating point: exactly 7 steps of 256, not 8.
    expect(1600 * (1 + 12 / 100)).toBeGreaterThan(1792);
    expect(recommend({ cpuPercent: 100, memoryMb: 1600, samples: 5 }, policy({ memoryHeadroomPct: 12 }))).toMatchObject({ cpu: 1, memory: 1792 });
    expect(recommend({ cpuPercent: 100, memoryMb: 1600.001, samples: 5 }, policy({ memoryHeadroomPct: 12 }))).toMatchObject({ memory: 2048 });
  });

  test("nearest-rank percentiles: p95 of 20 rows is the 19th, p100 the maximum, p50 of one row that row", () => {
    const values = () => Float64Array.from({ length: 20 }, (_, i) => 20 - i);
    expect(percentile(values(), 20, 95)).toBe(19);
    expect(percentile(values(), 20, 100)).toBe(20);
    expect(percentile(values(), 20, 5)).toBe(1);
    expect(percentile(Float64Array.of(7), 1, 50)).toBe(7);
    expect(percentile(new Float64Array(0), 0, 95)).toBe(0);
  });

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
    expect(parseSizingPolicy("cpost")).toEqual(CPOST_POLICY);
    expect(parseSizingPolicy("percentile")).toEqual({ kind: "percentile", cpuPercentile: 95, memoryHeadroomPct: 15, memoryBufferMb: 0, minCpu: 1, cpuStep: 1, minMemoryMb: 256, memoryStepMb: 256 });
    expect(parseSizingPolicy("p95")).toEqual({ ...PERCENTILE_POLICY, cpuPercentile: 95, memoryHeadroomPct: 0 });
    expect(parseSizingPolicy("p99.5+20%")).toEqual({ ...PERCENTILE_POLICY, cpuPercentile: 99.5, memoryHeadroomPct: 20 });
    for (const bad of ["p101", "p0", "generous", "p95+", "percentile+5%"]) expect(() => parseSizingPolicy(bad)).toThrow(expect.objectContaining({ code: "usage" }));
    expect(() => parseSizingPolicy("generous")).toThrow('unknown sizing policy "generous"');
  });

  test("the sizing flags: --cpu-percentile and --memory-headroom choose the percentile policy; minimums and steps are overridable; bad values are usage errors", () => {
    expect(policyFromFlags({})).toEqual(CPOST_POLICY);
    expect(policyFromFlags({ cpuPercentile: "99" })).toEqual({ ...PERCENTILE_POLICY, cpuPercentile: 99 });
    expect(policyFromFlags({ policy: "percentile", memoryHeadroom: "25%" })).toEqual({ ...PERCENTILE_POLICY, memoryHeadroomPct: 25 });
    expect(policyFromFlags({ policy: "cpost", cpuStep: "250m", minCpu: "0.25", memoryStep: "128", minMemory: "0" })).toEqual({ ...CPOST_POLICY, cpuStep: 0.25, minCpu: 0.25, memoryStepMb: 128, minMemoryMb: 0 });
    const bad: PolicyFlags[] = [
      { policy: "cpost", cpuPercentile: "95" },
      { cpuPercentile: "0" },
      { cpuPercentile: "101" },
      { memoryHeadroom: "lots" },
      { cpuStep: "0.0001" },
      { cpuStep: "0" },
      { memoryStep: "0" },
      { minCpu: "-1" },
    ];
    for (const flags of bad) expect(() => policyFromFlags(flags)).toThrow(expect.objectContaining({ code: "usage" }));
    expect(policyRule(CPOST_POLICY)).toBe("cpu = max(1, ceil((max 1 s cpu% - error) / 100)); memory = max(256, ceil((max working set MB + 100) / 256) * 256)");
    expect(policyRule(PERCENTILE_POLICY)).toBe("cpu = max(1, ceil((p95 1 s cpu% - error) / 100)); memory = max(256, ceil(max working set MB * 1.15 / 256) * 256)");
    expect(policyRule({ ...PERCENTILE_POLICY, cpuStep: 0.1, minCpu: 0.5 })).toBe("cpu = max(0.5, ceil((p95 1 s cpu% - error) / 100 / 0.1) * 0.1); memory = max(256, ceil(max working set MB * 1.15 / 256) * 256)");
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
      recommendation: {
        cpu: 1,
        memory: 256,
        policy: "cpost",
        notes: ["no samples: minimum request"],
        evidence: {
          rule: policyRule(CPOST_POLICY),
          cpu: { metric: "cpu.percent", statistic: "max", value: 0, errorPercent: 0, sizedPercent: 0, windowMs: 0, windows: 0, rows: 0 },
          memory: { metric: "memory.usage_bytes", statistic: "max", valueMb: 0, rows: 0, headroomPct: 0, bufferMb: 100 },
        },
      },
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

  test("without a usage counter, a percentile policy sizes cpu on the p-th cpu.percent reading and memory on the peak plus headroom", () => {
    const col = (name: string): MetricColumn => ({ name, unit: "percent", kind: "gauge", key: name, collector: "t" });
    const columns = [col("cpu.percent"), col("memory.usage_bytes")];
    // 101 readings: readings 1..100 have cpu = 10 * i; memory rises 2.5 MB per reading to a peak of 250 MB.
    const values = new Float64Array(101 * 2);
    for (let i = 0; i < 101; i++) values.set([i === 0 ? NaN : 10 * i, i * 2.5e6], i * 2);
    const times = Float64Array.from({ length: 101 }, (_, i) => 1000 + i);
    const batch: SampleBatch = { operator: "op", containerId: "c", columns, rows: 101, timestampMs: times, monotonicMs: times, values };
    const sized = (policy: string) => {
      const builder = new SummaryBuilder("op", { policy: parseSizingPolicy(policy) });
      builder.add(batch);
      return builder.build(result()).recommendation;
    };
    // cpost: 1000 % -> 10 cores; 250 + 100 MB -> 512.
    expect(sized("cpost")).toMatchObject({ cpu: 10, memory: 512, policy: "cpost" });
    // p90: the 90th of 100 readings, 900 % -> 9 cores; 250 MB without headroom -> 256.
    expect(sized("p90")).toMatchObject({ cpu: 9, memory: 256, policy: "p90" });
    // +20 % grows memory only: 300 MB -> 512; cpu stays 9.
    const withHeadroom = sized("p90+20%");
    expect(withHeadroom).toMatchObject({ cpu: 9, memory: 512, policy: "p90+20%", notes: ["cpu from p90, memory from the peak + 20% headroom"] });
    // The evidence: which statistic over how many readings, and when the peaks were; no counter, so no error bound.
    expect(withHeadroom.evidence).toEqual({
      rule: "cpu = max(1, ceil((p90 1 s cpu% - error) / 100)); memory = max(256, ceil(max working set MB * 1.2 / 256) * 256)",
      cpu: { metric: "cpu.percent", statistic: "p90", value: 900, errorPercent: 0, sizedPercent: 900, windowMs: 0, windows: 100, rows: 100, peakAtMs: 1100 },
      memory: { metric: "memory.usage_bytes", statistic: "max", valueMb: 250, rows: 101, peakAtMs: 1100, headroomPct: 20, bufferMb: 0 },
    });
  });

  test("fixture runs: exact recommendations and evidence under every policy (sizing-oracle.py), OOM-killed, retried and throttled operators included", async () => {
    for (const fixture of ["classic", "disk-gpu", "oom-killed"]) {
      for (const { flags, params, operators } of oracle(fixture).policies) {
        const policy = policyFromFlags(flags);
        expect(policy).toEqual(params);
        const got = await recommendations(loadFixtureRun(fixture), policy);
        expect(Object.keys(got)).toEqual(Object.keys(operators));
        for (const [name, want] of Object.entries(operators)) {
          const rec = got[name]!;
          const where = `${fixture} ${JSON.stringify(flags)} ${name}`;
          expect({ where, cpu: rec.cpu, memory: rec.memory, gpu: rec.gpu, lowerBound: rec.evidence?.lowerBound }).toEqual({ where, cpu: want.cpu, memory: want.memory, gpu: want.gpu, lowerBound: want.lowerBound });
          expect({ where, ...rec.evidence?.cpu }).toEqual({ where, ...want.evidence.cpu });
          expect({ where, ...rec.evidence?.memory }).toEqual({ where, ...want.evidence.memory });
          const noted = { host: rec.notes.some((n) => n.startsWith("used all")), "page cache": rec.notes.some((n) => n.startsWith("page cache")) };
          expect({ where, noted }).toEqual({ where, noted: { host: want.notes.includes("host"), "page cache": want.notes.includes("page cache") } });
        }
      }
    }
  });

  test("the recorded OOM run: the killed operator is a lower bound that proposes a retry, the retried one says how it got there, the throttled one says by how much", async () => {
    const got = await recommendations(loadFixtureRun("oom-killed"));
    expect(got.steady!.notes).toEqual([]);
    expect(got.steady!.evidence?.lowerBound).toBeUndefined();
    expect(got.hog!.notes).toEqual(["lower bound: OOM killed under a memory limit of 96 MB; retry with more (--retry-oom doubles it: next 192 MB)"]);
    expect(got.hog!.evidence).toMatchObject({ oomKills: 1, limits: { memoryMb: 96 }, lowerBound: { memory: true, cpu: false } });
    // Killed at 48 MB, then it ran under 96 MB: its peak is real, no lower bound (the first container's oom_kill does not count).
    expect(got.retried!.notes).toEqual(["OOM killed at 48 MB; succeeded with 96 MB"]);
    expect(got.retried!.evidence).toMatchObject({ limits: { memoryMb: 96 }, attempts: [{ exitCode: 137, oomKilled: true, limits: { memoryMb: 48 } }] });
    expect(got.retried!.evidence?.lowerBound).toBeUndefined();
    expect(got.retried!.memory).toBeGreaterThan(got.retried!.evidence!.memory.valueMb);
    const throttled = got.capped!.evidence!.throttled!;
    expect(throttled.periods).toBeGreaterThan(0);
    expect(got.capped!.notes).toEqual([`lower bound: CPU throttled ${throttled.periods} times (${throttled.seconds} s) under a CPU limit of 0.5 cores; retry with a higher cpu request, or without --enforce-requests`]);
    expect(got.capped!.evidence).toMatchObject({ limits: { cpu: 0.5 }, lowerBound: { memory: false, cpu: true } });
  });

  test("the msgpack record carries each recommendation with its evidence, and a replay re-sizes it under another policy", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cpost-sizing-"));
    dirs.push(dir);
    const live = await recommendations(loadFixtureRun("oom-killed"));
    await replayInto(loadFixtureRun("oom-killed"), [msgpack({ metricsDir: dir, out: { write: () => true }, options: {} })]);
    const recorded = readRecording(join(dir, "oom-killed.msgpack"));
    for (const op of recorded.operators) expect(op.summary!.recommendation).toEqual(live[op.result!.operator]!);
    expect(recorded.operators.map((op) => op.summary!.recommendation.evidence!.rule)).toEqual(Array(4).fill(policyRule(CPOST_POLICY)));
    const percentileOracle = oracle("oom-killed").policies.find((p) => p.flags.policy === "percentile" && p.flags.cpuPercentile === undefined)!;
    const resized = await recommendations(recorded, PERCENTILE_POLICY);
    for (const [name, want] of Object.entries(percentileOracle.operators)) {
      expect({ name, cpu: resized[name]!.cpu, memory: resized[name]!.memory, statistic: resized[name]!.evidence!.cpu.statistic }).toEqual({ name, cpu: want.cpu, memory: want.memory, statistic: "p95" });
    }
  });

  /** Readings every `intervalMs` for `seconds` of a counter that advances `cores` × 4 ms at each 4 ms tick (HZ=250), phase shifted. */
  function tickedBatch(options: { intervalMs: number; seconds: number; cores: number; phaseMs?: number; columns?: MetricColumn[] }): SampleBatch {
    const columns = options.columns ?? [counterColumn("cpu.usage_ns"), gaugeColumn("memory.usage_bytes")];
    const rows = Math.floor((options.seconds * 1000) / options.intervalMs) + 1;
    const values = new Float64Array(rows * columns.length).fill(NaN);
    const times = new Float64Array(rows);
    for (let i = 0; i < rows; i++) {
      const t = 1_000_000 + i * options.intervalMs;
      times[i] = t;
      const ticks = Math.floor((i * options.intervalMs + (options.phaseMs ?? 0)) / 4);
      values[i * columns.length] = ticks * 4e6 * options.cores;
      values[i * columns.length + 1] = 5e6;
    }
    return { operator: "op", containerId: "c", columns, rows, timestampMs: times, monotonicMs: times, values };
  }
  const counterColumn = (name: string): MetricColumn => ({ name, unit: "ns", kind: "counter", key: name, collector: "t" });
  const gaugeColumn = (name: string): MetricColumn => ({ name, unit: "bytes", kind: "gauge", key: name, collector: "t" });
  const sizedOn = (batches: SampleBatch[], policy?: SizingPolicy, cpus?: number) => {
    const builder = new SummaryBuilder("op", { policy, host: { cpus } });
    for (const b of batches) builder.add(b);
    return builder.build(result()).recommendation;
  };

  test("one busy thread through a 4 ms tick: one core at 1 ms and 10 ms readings, whatever the tick's phase; the step found is the tick (1 ms) or the 10 ms cap", () => {
    for (const phaseMs of [0, 0.5, 1.5, 3.9]) {
      const fine = sizedOn([tickedBatch({ intervalMs: 1, seconds: 3, cores: 1, phaseMs })]);
      expect(fine.cpu).toBe(1);
      expect(fine.evidence!.cpu).toMatchObject({ metric: "cpu.usage_ns", stepMs: 4, errorPercent: 0.4, windowMs: 1000 });
      // The window's figure is off from 100 % by at most its error.
      expect(Math.abs(fine.evidence!.cpu.value - 100)).toBeLessThanOrEqual(0.4);
      // Readings 10 ms apart see 8 or 12 ms of counter at a time: above the longest tick, so the cap stands.
      const coarse = sizedOn([tickedBatch({ intervalMs: 10, seconds: 3, cores: 1, phaseMs })]);
      expect(coarse.cpu).toBe(1);
      expect(coarse.evidence!.cpu).toMatchObject({ stepMs: 10, errorPercent: 1 });
    }
    // The old rule on the same counter's 100 ms windows would have read 104 % (one tick over 100 ms) and asked for two.
    expect(recommend({ cpuPercent: 104, memoryMb: 5, samples: 1 }).cpu).toBe(2);
  });

  test("use beyond the error is real: 1.05 cores ask for two; two and three busy cores ask for two and three", () => {
    expect(sizedOn([tickedBatch({ intervalMs: 1, seconds: 3, cores: 1.05 })]).cpu).toBe(2);
    const two = sizedOn([tickedBatch({ intervalMs: 1, seconds: 3, cores: 2 })]);
    expect(two.cpu).toBe(2);
    // two cores, each up to one tick behind at each end
    expect(two.evidence!.cpu.errorPercent).toBe(((2 * 8) / 1000) * 100);
    expect(sizedOn([tickedBatch({ intervalMs: 1, seconds: 3, cores: 3 })]).cpu).toBe(3);
  });

  test("an operator that used every CPU of the host may want more: said in a note, recommended what it used", () => {
    const rec = sizedOn([tickedBatch({ intervalMs: 10, seconds: 3, cores: 2 })], undefined, 2);
    expect(rec.cpu).toBe(2);
    expect(rec.notes).toEqual(["used all 2 CPUs of this host (200.000 % over 1.000 s): it may use more where there are more; size on a larger host to know"]);
    expect(sizedOn([tickedBatch({ intervalMs: 10, seconds: 3, cores: 2 })], undefined, 8).notes).toEqual([]);
  });

  test("an operator shorter than a second is one window over its life; windows never span two containers", () => {
    // 150 ms of one core, read every 10 ms: 16 readings, one window of 150 ms.
    const short = sizedOn([tickedBatch({ intervalMs: 10, seconds: 0.15, cores: 1 })]);
    expect(short.evidence!.cpu).toMatchObject({ windowMs: 150, windows: 1 });
    expect(short.cpu).toBe(1);
    // Two containers of one operator (a retry): an idle one, then a busy one restarting its counter at 0.
    // Across the boundary a window would see the counter fall; each series is windowed on its own.
    const idle = tickedBatch({ intervalMs: 10, seconds: 2, cores: 0 });
    const busy = tickedBatch({ intervalMs: 10, seconds: 2, cores: 1, columns: [counterColumn("cpu.usage_ns"), gaugeColumn("memory.usage_bytes")] });
    busy.timestampMs = busy.timestampMs.map((t) => t + 2010);
    const both = sizedOn([idle, busy]);
    expect(both.cpu).toBe(1);
    expect(both.evidence!.cpu.windows).toBe(2 * (201 - 100));
    expect(Math.abs(both.evidence!.cpu.value - 100)).toBeLessThanOrEqual(both.evidence!.cpu.errorPercent);
  });

  test("memory is the working set: page cache written once is left out and said so; between working-set readings, usage less the last page cache", () => {
    const columns = [gaugeColumn("memory.usage_bytes"), gaugeColumn("memory.working_set_bytes")];
    // usage 432 MB of which 419 MB page cache, the working set read every 10th reading; one reading between
    // two working-set readings has 300 MB more anonymous memory: that spike is need.
    const rows = 100;
    const values = new Float64Array(rows * 2);
    for (let i = 0; i < rows; i++) values.set([432e6 + (i === 55 ? 300e6 : 0), i % 10 === 0 ? 13e6 : NaN], i * 2);
    const times = Float64Array.from({ length: rows }, (_, i) => 5000 + i);
    const batch: SampleBatch = { operator: "op", containerId: "c", columns, rows, timestampMs: times, monotonicMs: times, values };
    const rec = sizedOn([batch]);
    expect(rec.evidence!.memory).toMatchObject({ metric: "memory.working_set_bytes", valueMb: 313, peakAtMs: 5055, usagePeakMb: 732 });
    expect(rec.memory).toBe(512);
    // Without the spike: 13 MB of need, and the 419 MB of cache named.
    values[55 * 2] = 432e6;
    const plain = sizedOn([{ ...batch, values }]);
    expect(plain.memory).toBe(256);
    expect(plain.evidence!.memory).toMatchObject({ valueMb: 13, usagePeakMb: 432, pageCacheMb: 419 });
    expect(plain.notes).toEqual(["page cache 419.000 MB not counted as need: usage peaked at 432.000 MB, the working set at 13.000 MB (the kernel reclaims such cache before an OOM kill)"]);
  });

  test("GPUs used: devices where the operator's own processes held memory", () => {
    const gpu = (name: string, device: number): MetricColumn => ({ name, unit: "bytes", kind: "gauge", key: `${name}[${device}]`, device, collector: "nvml" });
    const columns = [gpu("gpu.utilization_pct", 0), gpu("gpu.utilization_pct", 1), gpu("gpu.process_memory_bytes", 0), gpu("gpu.process_memory_bytes", 1)];
    const builder = new SummaryBuilder("op");
    builder.add({ operator: "op", containerId: "c", columns, rows: 2, timestampMs: Float64Array.of(0, 1), monotonicMs: Float64Array.of(0, 1), values: Float64Array.of(90, 80, 0, 5e8, 95, 70, 0, 6e8) });
    expect(builder.build(result()).recommendation.gpu).toBe(1);
  });
});

describe("memory over a long run", () => {
  // An hour at 1 kHz is 3.6 million readings: sizing keeps one window of them and a trace at TRACE_RESOLUTION_MS.
  test("a million readings at 1 ms grow the heap by a few MB, not by the readings (about 48 MB kept whole)", async () => {
    const { heapStats } = await import("bun:jsc");
    const series = defineSizingSeries();
    series.startSeries();
    const reading = { timestampMs: 0, usageNs: 0, cpuPercent: NaN, memoryBytes: 5e6, workingSetBytes: NaN };
    Bun.gc(true);
    const before = heapStats().heapSize;
    for (let i = 0; i < 1_000_000; i++) {
      reading.timestampMs = 1e12 + i;
      reading.usageNs = Math.floor(i / 4) * 4e6;
      series.reading(reading);
    }
    Bun.gc(true);
    const grownMb = (heapStats().heapSize - before) / 1e6;
    expect(grownMb).toBeLessThan(16);
    expect(series.recommend({ samples: 1_000_000, result: result(), stats: [] }).cpu).toBe(1);
  });
});
