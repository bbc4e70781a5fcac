/**
 * The sampler: its worker thread and its main-thread fallback, fed by the
 * real cgroup and blkio collectors (on the v2 fixture tree, and on real
 * containers of the real Docker engine), and a plugin collector loaded from
 * its file like a user's plugin. No test here asserts how fast anything is:
 * bench/sampler.ts measures that.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createBlkioCollector } from "../collectors/blkio/index.ts";
import { createCgroupCollector } from "../collectors/cgroup/index.ts";
import { CpostError } from "../core/contracts/errors.ts";
import { readRecording } from "../core/sinks/recording.ts";
import { Sampler, type SamplerOptions } from "../core/sampling/sampler.ts";
import type { IntervalReport } from "../core/sampling/sampler-core.ts";
import { SummaryBuilder } from "../core/sizing/summary.ts";
import type { Collector, SampleBatch, Target } from "../core/contracts/types.ts";
import absent from "./fixtures/collectors/absent.ts";
import flaky from "./fixtures/collectors/flaky.ts";
import sparse from "./fixtures/collectors/sparse.ts";
import { compiledBinary, dockerTest, REPO, runProcess } from "./support.ts";
import { removeContainer, removeMine, startContainer, waitContainer } from "./test-containers.ts";

afterAll(removeMine);

const FIXTURE = join(REPO, "test/fixtures/cgroup-v2");
const ROOTS = { cgroupRoot: join(FIXTURE, "sys/fs/cgroup"), procRoot: join(FIXTURE, "proc") };
const DOCKER_ID = readdirSync(join(ROOTS.cgroupRoot, "docker"))[0]!;
const FIXTURE_TARGET: Target = { kind: "container", containerId: DOCKER_ID, pid: 0, engine: "docker", cgroupDriver: "cgroupfs", operator: "fixture" };

/** A sampler that records its batches and warnings. */
function recording(options: Partial<SamplerOptions> & Pick<SamplerOptions, "collectors">) {
  const batches: SampleBatch[] = [];
  const warnings: string[] = [];
  const sampler = new Sampler({ intervalMs: 10, onBatch: (b) => batches.push(b), onWarning: (w) => warnings.push(w), ...options });
  const column = (key: string): number[] => {
    const index = batches[0]!.columns.findIndex((c) => c.key === key);
    return batches.flatMap((b) => Array.from({ length: b.rows }, (_, r) => b.values[r * b.columns.length + index]!));
  };
  return { sampler, batches, warnings, column, rows: () => batches.reduce((n, b) => n + b.rows, 0) };
}

describe("sampler options", () => {
  test("an interval under 1 ms is a usage error that says what to give", () => {
    for (const intervalMs of [0.5, 0, Number.NaN]) {
      let error: unknown;
      try {
        new Sampler({ intervalMs, collectors: [], onBatch: () => {} });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(CpostError);
      expect((error as CpostError).code).toBe("usage");
      expect((error as CpostError).hint).toContain("--interval");
    }
  });
});

for (const mainThread of [false, true]) {
  describe(mainThread ? "on the main thread" : "in the sampling worker", () => {
    test("watch() opens every probe and takes the first row at once; stop() hands it over before returning", () => {
      const r = recording({ mainThread, collectors: [createCgroupCollector(ROOTS), createBlkioCollector(ROOTS)] });
      const watch = r.sampler.watch(FIXTURE_TARGET);
      expect(watch.sources).toEqual([
        `cgroup: cgroup v2 ${ROOTS.cgroupRoot}/docker/${DOCKER_ID}`,
        `blkio: cgroup v2 ${ROOTS.cgroupRoot}/docker/${DOCKER_ID}/io.stat`,
      ]);
      expect(watch.columns.map((c) => c.key)).toContain("memory.usage_bytes");
      expect(watch.columns.map((c) => c.key)).toContain("io.read_bytes");
      expect(watch.columns.find((c) => c.key === "io.read_bytes")!.collector).toBe("blkio");
      expect(r.warnings).toEqual([]);
      watch.stop();
      expect(r.rows()).toBeGreaterThanOrEqual(1);
      expect(watch.samples).toBe(r.rows());
      const batch = r.batches[0]!;
      expect(batch.columns).toBe(watch.columns);
      expect(batch.operator).toBe("fixture");
      expect(batch.containerId).toBe(DOCKER_ID);
      expect(r.column("memory.usage_bytes")[0]).toBe(Number(readFileSync(join(ROOTS.cgroupRoot, "docker", DOCKER_ID, "memory.current"), "utf8")));
      r.sampler.close();
    });

    test("rows carry monotonic time from the run's origin and true epoch time; finish() ends after the grace when the target stays", async () => {
      const originMs = performance.now();
      const r = recording({ mainThread, originMs, batchMs: 50, collectors: [createCgroupCollector(ROOTS)] });
      const watch = r.sampler.watch(FIXTURE_TARGET);
      await watch.finish(200); // fixture files never go away: the grace ends it
      const mono = r.batches.flatMap((b) => [...b.monotonicMs]);
      const wall = r.batches.flatMap((b) => [...b.timestampMs]);
      expect(r.batches.length).toBeGreaterThan(1); // batched every ~50 ms, then the last one
      expect(mono.length).toBeGreaterThan(2);
      expect(mono.every((t, i) => i === 0 || t > mono[i - 1]!)).toBe(true);
      expect(mono[0]!).toBeGreaterThanOrEqual(0);
      for (let i = 0; i < mono.length; i++) expect(Math.abs(wall[i]! - mono[i]! - (performance.timeOrigin + originMs))).toBeLessThan(0.01);
      expect(Math.abs(wall.at(-1)! - Date.now())).toBeLessThan(2000);
      const intervals = r.sampler.intervals();
      expect(intervals.target).toBe(10);
      expect(intervals.samples).toBeGreaterThan(0);
      expect(intervals.p99).toBeGreaterThanOrEqual(intervals.p50);
      r.sampler.close();
    });

    test("close() flushes every open watch; afterwards intervals() keeps its last report and finish() resolves", async () => {
      const r = recording({ mainThread, collectors: [createCgroupCollector(ROOTS)] });
      const watch = r.sampler.watch(FIXTURE_TARGET);
      await Bun.sleep(50); // a few ticks, so there are intervals to report
      r.sampler.close();
      expect(r.rows()).toBe(watch.samples);
      expect(watch.samples).toBeGreaterThan(1);
      const report = r.sampler.intervals();
      expect(report.samples).toBeGreaterThan(0);
      expect(r.sampler.intervals()).toEqual(report);
      await watch.finish();
      watch.stop();
      expect(() => r.sampler.watch(FIXTURE_TARGET)).toThrow(CpostError);
    });

    test("a row in which no probe measured anything is not kept (a probe between its readings leaves its slots NaN)", async () => {
      const r = recording({ mainThread, intervalMs: 2, collectors: [sparse] });
      const watch = r.sampler.watch(FIXTURE_TARGET);
      await Bun.sleep(100);
      watch.stop();
      r.sampler.close();
      const reads = r.column("test.reads");
      expect(reads.length).toBeGreaterThan(5);
      expect(reads.every((n) => n % 3 === 0)).toBe(true); // only the reads that measured, each once, in order
      expect(reads).toEqual(reads.map((_, i) => 3 * (i + 1)));
      expect(watch.samples).toBe(reads.length);
    });

    test("a plugin probe that throws is disabled with one warning; the others go on; an unavailable collector is said once", async () => {
      const r = recording({ mainThread, collectors: [createCgroupCollector(ROOTS), flaky, absent] });
      const first = r.sampler.watch(FIXTURE_TARGET);
      await first.finish(150);
      await r.sampler.watch(FIXTURE_TARGET).finish(150);
      r.sampler.close();
      expect(r.warnings.filter((w) => w.includes("absent"))).toEqual(["absent: not available: nothing to read here"]);
      const bug = r.warnings.filter((w) => w.includes("plugin bug"));
      expect(bug.length).toBeGreaterThanOrEqual(1); // once per probe that threw (a plugin wrapper may also disable it for the run)
      expect(bug[0]).toContain("flaky: read failed: plugin bug on read 3");
      const firstRows = r.batches.filter((b) => b.columns === first.columns);
      const reads = firstRows.flatMap((b) => Array.from({ length: b.rows }, (_, i) => b.values[i * b.columns.length + b.columns.findIndex((c) => c.key === "test.reads")]!));
      expect(reads.slice(0, 3)).toEqual([1, 2, NaN]);
      expect(reads.slice(3).every(Number.isNaN)).toBe(true);
      const usage = firstRows.flatMap((b) => Array.from({ length: b.rows }, (_, i) => b.values[i * b.columns.length + b.columns.findIndex((c) => c.key === "cpu.usage_ns")]!));
      expect(usage.length).toBeGreaterThan(3);
      expect(usage.every((v) => !Number.isNaN(v))).toBe(true);
    });
  });
}

test("a collector the worker cannot rebuild: sampled on the main thread, said once", () => {
  const bare: Collector = { ...createCgroupCollector(ROOTS), name: "my-own", portable: undefined };
  const r = recording({ collectors: [bare] });
  expect(r.warnings).toEqual(["collector my-own cannot run in the sampling thread; sampling on the main thread (intervals less steady)"]);
  r.sampler.watch(FIXTURE_TARGET).stop();
  expect(r.rows()).toBeGreaterThanOrEqual(1);
  r.sampler.close();
});

describe("real containers", () => {
  dockerTest("a 150 ms operator gets at least 10 samples at the default interval and a non-empty summary", async () => {
    const r = recording({ collectors: [createCgroupCollector(), createBlkioCollector()] });
    r.sampler.ready(); // as the runner does at run start: the worker is up before any container starts
    const started = await startContainer(["cpost-workload", "cpu", "1", "0.15"], { operator: "short" });
    try {
      const watch = r.sampler.watch(started.target);
      expect(await waitContainer(started.id)).toBe(0);
      await watch.finish();
      const summary = new SummaryBuilder("short");
      for (const batch of r.batches) summary.add(batch);
      const built = summary.build({ operator: "short", containerId: started.id, status: "succeeded", exitCode: 0, startedAtMs: 0, endedAtMs: 0 });
      console.log(`150 ms operator: ${watch.samples} samples, CPU mean ${built.cpuPercent.mean.toFixed(1)} % max ${built.cpuPercent.max.toFixed(1)} %, memory max ${built.memoryMb.max.toFixed(2)} MB`);
      expect(watch.samples).toBeGreaterThanOrEqual(10);
      expect(built.samples).toBe(watch.samples);
      expect(built.cpuPercent.max).toBeGreaterThan(0);
      expect(built.memoryMb.max).toBeGreaterThan(0);
      // it ended because the cgroup went away, not because the grace ran out
      expect(existsSync(`/sys/fs/cgroup/memory/docker/${started.id}`)).toBe(false);
    } finally {
      r.sampler.close();
      await removeContainer(started.id);
    }
  });

  dockerTest("the compiled binary samples in its worker thread's native loop: `cpost run` at 1 ms, no fallback warning, every sample in the CSV", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cpost-sampler-bin-"));
    try {
      mkdirSync(join(dir, "input"));
      mkdirSync(join(dir, "metrics"));
      writeFileSync(join(dir, "pipeline.yaml"), [
        "api-version: 0.4.0",
        "name: sampler-binary",
        "operators:",
        "  - name: busy",
        "    container:",
        "      image: cpost-test/busybox",
        '      tag: "1"',
        '      command: ["cpost-workload", "cpu", "1", "0.4"]',
        "    input:",
        "      - path: /input",
        "",
      ].join("\n"));
      const binary = await compiledBinary();
      const run = await runProcess([binary, "run", join(dir, "pipeline.yaml"), join(dir, "input"), "--collectors", "cgroup,blkio", "--sinks", "csv,msgpack", "--msgpack-file", join(dir, "run.msgpack"), "--metrics_dir", join(dir, "metrics"), "--interval", "1ms"], { cwd: dir });
      expect(run.stderr).not.toContain("sampling thread unavailable");
      expect(run.stdout).not.toContain("sampling thread unavailable");
      expect(run.code).toBe(0);
      const rows = readFileSync(join(dir, "metrics", "busy_final_result.csv"), "utf8").trim().split("\n").slice(1);
      // 0.4 s at 1 ms: hundreds of rows even on a loaded machine
      expect(rows.length).toBeGreaterThan(100);
      // TinyCC inside the executable built the loop, and it took most ticks (JS: the slower tiers, ~10 a second)
      const interval = readRecording(join(dir, "run.msgpack")).result!.interval as IntervalReport;
      expect(interval.nativeTicks!).toBeGreaterThan(0.8 * interval.samples);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);

  dockerTest("two containers watched at once share one schedule; each series ends on its own", async () => {
    const r = recording({ collectors: [createCgroupCollector()] });
    const a = await startContainer(["cpost-workload", "sleep-ms", "400"], { operator: "a" });
    const watchA = r.sampler.watch(a.target);
    const b = await startContainer(["cpost-workload", "sleep-ms", "1500"], { operator: "b" });
    try {
      const watchB = r.sampler.watch(b.target);
      await waitContainer(a.id);
      await watchA.finish();
      const rowsOfA = watchA.samples;
      await waitContainer(b.id);
      await watchB.finish();
      expect(rowsOfA).toBeGreaterThan(0);
      expect(watchB.samples).toBeGreaterThan(rowsOfA);
      expect(r.batches.filter((x) => x.operator === "a").reduce((n, x) => n + x.rows, 0)).toBe(rowsOfA);
      expect(r.sampler.intervals().samples).toBeGreaterThan(0);
    } finally {
      r.sampler.close();
      await removeContainer(a.id);
      await removeContainer(b.id);
    }
  });
});
