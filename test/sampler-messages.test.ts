/**
 * Guards the sampler's structure at 1 kHz, not its timing: rows cross from
 * the sampling thread to the main thread in batches (one message per
 * container about every 250 ms), never one message per sample, so the main
 * thread's share of the cost stays a few handlings a second.
 */
import { expect, test } from "bun:test";
import { readdirSync } from "node:fs";
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
