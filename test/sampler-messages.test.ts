/**
 * Guards the sampler's structure at 1 kHz, not its timing: rows cross from
 * the sampling thread to the main thread in batches (one message per
 * container about every 250 ms), never one message per sample, so the main
 * thread's share of the cost stays a few handlings a second; and the
 * sampling thread's own ticks are the native loop's (native/sampling-loop.ts),
 * JavaScript running only for the probes' slower tiers, about ten times a
 * second, with every row still what the files said.
 */
import { afterAll, expect, test } from "bun:test";
import { cpSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCgroupCollector } from "../collectors/cgroup/index.ts";
import { Sampler } from "../core/sampling/sampler.ts";
import type { Target } from "../core/contracts/types.ts";
import { REPO } from "./support.ts";

const FIXTURE = join(REPO, "test/fixtures/cgroup-v2");
const ROOTS = { cgroupRoot: join(FIXTURE, "sys/fs/cgroup"), procRoot: join(FIXTURE, "proc") };
const DOCKER_ID = readdirSync(join(ROOTS.cgroupRoot, "docker"))[0]!;

test("at 1 kHz the worker sends a batch per container about every 250 ms, not a message per sample", async () => {
  let rows = 0;
  let batches = 0;
  const sampler = new Sampler({ intervalMs: 1, collectors: [createCgroupCollector(ROOTS)], onBatch: (b) => ((rows += b.rows), batches++) });
  const targets: Target[] = [0, 1].map((i) => ({ kind: "container", containerId: DOCKER_ID, pid: 0, engine: "docker", cgroupDriver: "cgroupfs", operator: `op${i}` }));
  const watches = targets.map((t) => sampler.watch(t));
  await Bun.sleep(1500);
  for (const w of watches) w.stop();
  sampler.close();
  // 1.5 s of two series at 250 ms batches: 6–7 each, plus the flush at stop
  expect(batches).toBeLessThanOrEqual(2 * 8);
  expect(rows).toBeGreaterThan(2 * 200); // even on a loaded machine, hundreds of rows went out...
  expect(rows / batches).toBeGreaterThan(25); // ...in a few messages, many rows each
});

const temps: string[] = [];
afterAll(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

test("at 1 kHz the native loop takes the ticks: JS runs about ten times a second, and the rows hold what the files said", async () => {
  const root = mkdtempSync(join(tmpdir(), "cpost-native-"));
  temps.push(root);
  cpSync(FIXTURE, root, { recursive: true });
  const roots = { cgroupRoot: join(root, "sys/fs/cgroup"), procRoot: join(root, "proc") };
  const memoryCurrent = join(roots.cgroupRoot, "docker", DOCKER_ID, "memory.current");
  const seen: Array<{ ms: number; usage: number }> = [];
  const sampler = new Sampler({
    intervalMs: 1,
    collectors: [createCgroupCollector(roots)],
    onBatch: (b) => {
      const usage = b.columns.findIndex((c) => c.name === "memory.usage_bytes");
      for (let i = 0; i < b.rows; i++) seen.push({ ms: b.timestampMs[i]!, usage: b.values[i * b.columns.length + usage]! });
    },
  });
  const watch = sampler.watch({ kind: "container", containerId: DOCKER_ID, pid: 0, engine: "docker", cgroupDriver: "cgroupfs", operator: "op" });
  await Bun.sleep(700);
  const changedAt = performance.timeOrigin + performance.now(); // the rows' epoch clock
  writeFileSync(memoryCurrent, "987654321\n");
  await Bun.sleep(700);
  const report = sampler.intervals();
  watch.stop();
  sampler.close();
  const jsTicks = report.samples - report.nativeTicks!;
  console.log(`1.4 s at 1 kHz: ${report.samples} ticks, ${report.nativeTicks} by the native loop, ${jsTicks} in JS`);
  expect(report.samples).toBeGreaterThan(400); // even on a loaded machine
  expect(report.nativeTicks!).toBeGreaterThan(0.9 * report.samples);
  // the slower tiers every ~100 ms, a stretch ending at most every 250 ms: ~10-20 JS ticks a second, not 1000
  expect(jsTicks).toBeLessThan(1.4 * 40);
  // every row kept, and from a moment after the write every row has the new value
  expect(seen.length).toBe(watch.samples);
  const before = seen.filter((r) => r.ms < changedAt - 1);
  const after = seen.filter((r) => r.ms > changedAt + 50);
  expect(before.length).toBeGreaterThan(100);
  expect(after.length).toBeGreaterThan(100);
  expect(before.every((r) => r.usage !== 987654321 && r.usage > 0)).toBe(true);
  expect(after.every((r) => r.usage === 987654321)).toBe(true);
});

test("with the native loop turned off, every tick runs in JS (the comparison bench/sampler.ts makes)", async () => {
  const sampler = new Sampler({ intervalMs: 1, collectors: [createCgroupCollector(ROOTS)], nativeLoop: false, onBatch: () => {} });
  const watch = sampler.watch({ kind: "container", containerId: DOCKER_ID, pid: 0, engine: "docker", cgroupDriver: "cgroupfs", operator: "op" });
  await Bun.sleep(300);
  const report = sampler.intervals();
  watch.stop();
  sampler.close();
  expect(report.samples).toBeGreaterThan(50);
  expect(report.nativeTicks).toBe(0);
});
