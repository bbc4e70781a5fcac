/**
 * Per-sample cost of the nvml collector against the libnvidia-ml double
 * (goal: at most 20 µs per GPU), with a baseline measured in the same run:
 * the same NVML calls made straight through native/nvml.ts with no
 * collector logic. Also prints heap growth per sample (goal: 0, no allocation).
 *
 *   node_modules/.bin/bun bench/nvml.ts
 *
 * The double answers from memory, so these figures are cpost's own cost
 * (FFI, decoding, attribution); a real driver adds its ioctl time per call.
 */
import { heapStats } from "bun:jsc";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createNvmlCollector } from "../collectors/nvml/index.ts";
import { isUnavailable, type MetricBuffer, type Probe } from "../core/contracts/types.ts";
import { NvmlSampling, openNvml } from "../native/nvml.ts";
import { buildNvmlDouble, type FakeDevice } from "../test/nvml/double.ts";

const CONTAINER = "c0ffee".padEnd(64, "0");
const SAMPLES = 50_000;
const GOAL_US_PER_GPU = 20;

const double = await buildNvmlDouble(["current"]);
const procRoot = mkdtempSync(join(tmpdir(), "cpost-nvml-bench-proc-"));

/** GPUs each running two processes of the watched container and one of another. */
function script(gpus: number): void {
  const devices: FakeDevice[] = Array.from({ length: gpus }, (_, d) => ({
    name: "NVIDIA H100 80GB HBM3",
    uuid: `GPU-bench-${d}`,
    util: [60 + d, 30],
    memory: [80 * 2 ** 30, 20 * 2 ** 30, 2 ** 29],
    powerMw: 300_000,
    temperatureC: 60,
    smClockMhz: 1980,
    processes: [100, 101, 200].map((pid) => ({ pid: pid + d * 1000, usedBytes: 2 ** 32, smPct: 20 })),
  }));
  for (const d of devices.keys()) {
    for (const [pid, owner] of [[100, CONTAINER], [101, CONTAINER], [200, "f".repeat(64)]] as const) {
      mkdirSync(join(procRoot, String(pid + d * 1000)), { recursive: true });
      writeFileSync(join(procRoot, String(pid + d * 1000), "cgroup"), `0::/docker/${owner}\n`);
    }
  }
  double.script({ samplePeriodUs: 20_000, devices });
}

function timeLoop(n: number, body: (i: number) => void): number {
  for (let i = 0; i < 2000; i++) body(i);
  const start = performance.now();
  for (let i = 0; i < n; i++) body(i);
  return ((performance.now() - start) * 1000) / n;
}

/** Heap bytes per call: capacity growth after a full collection (JSC grows it in 16 KiB blocks, so 20k calls resolve < 1 byte). */
function heapGrowth(body: () => void, calls = 20_000): number {
  Bun.gc(true);
  const before = heapStats().heapCapacity;
  for (let i = 0; i < calls; i++) body();
  return (heapStats().heapCapacity - before) / calls;
}

function collectorCost(): { us: number; bytesPerSample: number } {
  const nvml = createNvmlCollector({ library: double.library(), procRoot, onWarning: (w) => console.error(`warning: ${w}`) });
  const opened = nvml.open({ kind: "container", containerId: CONTAINER, pid: 0, engine: "docker", operator: "bench" });
  if (isUnavailable(opened)) throw new Error(opened.unavailable);
  const probe: Probe = opened;
  const out: MetricBuffer = { values: new Float64Array(probe.metrics.length), base: 0, monotonicMs: 0 };
  const t0 = performance.now();
  const read = () => {
    out.monotonicMs = performance.now() - t0;
    probe.read(out);
  };
  const us = timeLoop(SAMPLES, read);
  const bytesPerSample = heapGrowth(read);
  if (out.values[probe.metrics.findIndex((m) => m.name === "gpu.process_memory_bytes")] !== 2 ** 33) throw new Error("bench probe read wrong figures");
  nvml.dispose?.();
  return { us, bytesPerSample };
}

/** The floor: the same NVML calls per GPU, straight through the binding. */
function rawCost(): number {
  const lib = openNvml(double.library());
  let seen = 0;
  const us = timeLoop(SAMPLES, () => {
    for (const d of lib.devices) {
      d.readSamples(NvmlSampling.GPU_UTILIZATION, seen);
      d.readSamples(NvmlSampling.MEMORY_UTILIZATION, seen);
      seen = d.sampleLastUs;
      d.readMemory();
      d.readPower();
      d.readTemperature();
      d.readSmClock();
      d.readProcesses();
      d.readProcessUtilization(seen);
    }
  });
  lib.shutdown();
  return us;
}

console.log(`nvml collector, container probe, ${SAMPLES} samples each, Bun ${Bun.version}, double at ${double.library()}`);
console.log("GPUs | collector µs/sample | µs/GPU | raw NVML calls µs/sample | collector/raw | heap bytes/sample");
let worst = 0;
for (const gpus of [1, 2, 8]) {
  script(gpus);
  const raw = rawCost();
  const { us, bytesPerSample } = collectorCost();
  worst = Math.max(worst, us / gpus);
  console.log(
    `${String(gpus).padStart(4)} | ${us.toFixed(2).padStart(19)} | ${(us / gpus).toFixed(2).padStart(6)} | ${raw.toFixed(2).padStart(24)} | ${(us / raw).toFixed(2).padStart(13)} | ${bytesPerSample.toFixed(1)}`,
  );
}
let sink = 0;
console.log(`heap bytes/call of the same measurement: empty body ${heapGrowth(() => {}).toFixed(2)}, a body allocating one small object ${heapGrowth(() => {
  sink += [sink].length;
}).toFixed(2)}`);
console.log(`goal ≤ ${GOAL_US_PER_GPU} µs per GPU: worst ${worst.toFixed(2)} µs per GPU — ${worst <= GOAL_US_PER_GPU ? "met" : "NOT met"}`);
double.remove();
rmSync(procRoot, { recursive: true, force: true });
