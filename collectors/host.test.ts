/**
 * The host collector on this machine's real /proc: known work (a busy loop
 * in this process, a synced file write) shows up in what it reads, and its
 * memory figures agree with /proc/meminfo read independently.
 */
import { afterAll, expect, test } from "bun:test";
import { closeSync, fsyncSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { isUnavailable, type MetricBuffer, type Probe, type Target } from "../core/contracts/types.ts";
import { loadBuiltinCollector } from "./index.ts";

const host = await loadBuiltinCollector("host");

const HOST: Target = { kind: "host", containerId: "", pid: 0, engine: "docker", operator: "host" };
// /var/tmp, not /tmp (a tmpfs on many machines): the write must reach a physical disk.
const dir = mkdtempSync("/var/tmp/cpost-host-collector-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function reader(probe: Probe): () => Record<string, number> {
  const out: MetricBuffer = { values: new Float64Array(probe.metrics.length), base: 0, monotonicMs: 0 };
  return () => {
    out.monotonicMs = performance.now();
    expect(probe.read(out)).toBe(true);
    return Object.fromEntries(probe.metrics.map((m, i) => [m.name, out.values[i]!]));
  };
}

function meminfo(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of readFileSync("/proc/meminfo", "utf8").split("\n")) {
    const m = /^(\w+):\s+(\d+) kB/.exec(line);
    if (m) out[m[1]!] = Number(m[2]) * 1024;
  }
  return out;
}

test("opens host targets only", () => {
  const opened = host.open({ ...HOST, kind: "container", containerId: "a".repeat(64) });
  expect(isUnavailable(opened) && opened.unavailable).toContain("host targets only");
});

test("a busy loop in this process shows as at least half a core, within the machine's cores (over the 1 s window the tick counters need)", () => {
  const probe = host.open(HOST);
  if (isUnavailable(probe)) throw new Error(probe.unavailable);
  const read = reader(probe);
  const first = read();
  expect(first["cpu.percent"]).toBeNaN(); // no previous reading to diff against
  const early = performance.now() + 400;
  let spins = 0;
  while (performance.now() < early) spins++;
  // Under a second: no figure yet (over 10 ms a core is 0 or 100 %; a window of 1 s makes a tick 1 %).
  expect(read()["cpu.percent"]).toBeNaN();
  const until = performance.now() + 700;
  while (performance.now() < until) spins++;
  const second = read();
  probe.close();
  expect(spins).toBeGreaterThan(0);
  expect(second["cpu.percent"]!).toBeGreaterThanOrEqual(50);
  expect(second["cpu.percent"]!).toBeLessThanOrEqual(cpus().length * 100 + 1);
  // 1100 ms of one core is at least 0.2 s of CPU time more (ticks are 10 ms).
  expect(second["cpu.usage_ns"]! - first["cpu.usage_ns"]!).toBeGreaterThanOrEqual(0.2e9);
  expect(second["cpu.user_ns"]! + second["cpu.system_ns"]!).toBeLessThanOrEqual(second["cpu.usage_ns"]!);
});

test("memory agrees with /proc/meminfo; a synced 16 MiB write reaches the disk counters", () => {
  const probe = host.open(HOST);
  if (isUnavailable(probe)) throw new Error(probe.unavailable);
  expect(probe.source).toMatch(/\/proc\/diskstats \(.+\)/);
  expect(probe.source).not.toContain("loop");
  const read = reader(probe);
  const before = read();
  const mem = meminfo();
  expect(before["memory.limit_bytes"]).toBe(mem.MemTotal!);
  // Other processes move memory between the two reads: agree within 256 MiB.
  expect(Math.abs(before["memory.usage_bytes"]! - (mem.MemTotal! - mem.MemFree!))).toBeLessThan(256 << 20);
  expect(Math.abs(before["memory.working_set_bytes"]! - (mem.MemTotal! - mem.MemAvailable!))).toBeLessThan(256 << 20);
  expect(Math.abs(before["memory.cache_bytes"]! - (mem.Cached! + mem.Buffers!))).toBeLessThan(256 << 20);

  const fd = openSync(join(dir, "data"), "w");
  const chunk = Buffer.alloc(1 << 20, 7);
  for (let i = 0; i < 16; i++) writeSync(fd, chunk);
  fsyncSync(fd);
  closeSync(fd);
  const after = read();
  probe.close();
  expect(after["io.write_bytes"]! - before["io.write_bytes"]!).toBeGreaterThanOrEqual(16 << 20);
  expect(after["io.write_ops"]!).toBeGreaterThan(before["io.write_ops"]!);
  expect(after["io.read_bytes"]!).toBeGreaterThanOrEqual(before["io.read_bytes"]!);
});
