/**
 * The NVML binding and collector against a C libnvidia-ml.so.1 double with
 * the real ABI (test/nvml/), built here with gcc: no GPU exists on these
 * machines. Per-container attribution is also checked against a real
 * container's real /proc entries.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectDocker } from "../core/engine/docker.ts";
import { CpostError } from "../core/contracts/errors.ts";
import { isUnavailable, type MetricBuffer, type Probe, type Target } from "../core/contracts/types.ts";
import { createNvmlCollector } from "../collectors/nvml/index.ts";
import { NvmlSampling, openNvml } from "../native/nvml.ts";
import { readRecording } from "../core/sinks/recording.ts";
import { BUN, dockerTest, REPO, TEST_IMAGE } from "./support.ts";
import { buildNvmlDouble, type FakeDevice, type FakeScript, type NvmlDouble } from "./nvml/double.ts";

const GiB = 2 ** 30;
const A = "3f1c2b7e9d0a4c5b8e6f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";
const B = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d";

/** Two H100s; on GPU 0 two processes of container A (cgroupfs v1, systemd v2) and a host process; on GPU 1 one of B. */
function twoGpus(overrides: Partial<FakeDevice>[] = []): FakeScript {
  const devices: FakeDevice[] = [
    {
      name: "NVIDIA H100 80GB HBM3", uuid: "GPU-0aa1b2c3-0000-4000-8000-000000000000", util: [73, 41],
      memory: [80 * GiB, 10 * GiB, 0.5 * GiB], powerMw: 215_500, temperatureC: 61, smClockMhz: 1980,
      processes: [{ pid: 4242, usedBytes: 6 * GiB, smPct: 30 }, { pid: 5151, usedBytes: 3 * GiB, smPct: 12 }, { pid: 77, usedBytes: 1 * GiB, smPct: 50 }],
    },
    {
      name: "NVIDIA H100 80GB HBM3", uuid: "GPU-1bb1b2c3-0000-4000-8000-000000000001", util: [5, 2],
      memory: [80 * GiB, 2 * GiB, 0.5 * GiB], powerMw: 70_250, temperatureC: 38, smClockMhz: 345,
      processes: [{ pid: 4343, usedBytes: 2 * GiB, smPct: 7 }],
    },
  ];
  return { samplePeriodUs: 5000, devices: devices.map((d, i) => ({ ...d, ...overrides[i] })) };
}

let double: NvmlDouble;
let procRoot: string;

beforeAll(async () => {
  double = await buildNvmlDouble(["current", "legacy", "ancient"]);
  procRoot = mkdtempSync(join(tmpdir(), "cpost-nvml-proc-"));
  const cgroups: Record<number, string> = {
    4000: `12:memory:/docker/${A}\n11:cpu,cpuacct:/docker/${A}\n0::/docker/${A}\n`,
    4242: `12:memory:/docker/${A}\n11:cpu,cpuacct:/docker/${A}\n0::/docker/${A}\n`,
    5151: `0::/system.slice/docker-${A}.scope\n`,
    4343: `0::/machine.slice/libpod-${B}.scope/container\n`,
    77: "0::/user.slice/user-1000.slice/session-2.scope\n",
  };
  for (const [pid, text] of Object.entries(cgroups)) {
    mkdirSync(join(procRoot, pid));
    writeFileSync(join(procRoot, pid, "cgroup"), text);
  }
});

afterAll(() => {
  double?.remove();
  if (procRoot) rmSync(procRoot, { recursive: true, force: true });
});

const container = (containerId: string, pid = 0): Target => ({ kind: "container", containerId, pid, engine: "docker", operator: "op" });
const host: Target = { kind: "host", containerId: "", pid: 0, engine: "docker", operator: "" };

function opened(probe: ReturnType<ReturnType<typeof createNvmlCollector>["open"]>): Probe {
  if (isUnavailable(probe)) throw new Error(`unexpected: ${probe.unavailable}`);
  return probe;
}

/** One sample of a probe at monotonic time `ms`; `get(name, device)` reads a slot by its spec. */
function sample(probe: Probe, ms: number) {
  const out: MetricBuffer = { values: new Float64Array(probe.metrics.length + 2).fill(-1), base: 1, monotonicMs: ms };
  const alive = probe.read(out);
  const get = (name: string, device: number) => {
    const i = probe.metrics.findIndex((m) => m.name === name && m.device === device);
    if (i < 0) throw new Error(`no ${name}[${device}] among ${probe.metrics.map((m) => `${m.name}[${m.device}]`).join(", ")}`);
    return out.values[out.base + i]!;
  };
  return { alive, get, values: out.values };
}

/** Samples every 2 ms until `done` holds (NVML's sample buffers fill in real time) or the deadline passes. */
async function sampleUntil(probe: Probe, done: (s: ReturnType<typeof sample>) => boolean, deadlineMs = 5000) {
  const end = performance.now() + deadlineMs;
  for (;;) {
    const s = sample(probe, performance.now());
    if (done(s)) return s;
    if (performance.now() > end) throw new Error("condition not reached before the deadline");
    await Bun.sleep(2);
  }
}

describe("native/nvml.ts against the double", () => {
  test("reads two GPUs through the real struct layouts", () => {
    double.script(twoGpus());
    const lib = openNvml(double.library());
    try {
      expect(lib.driverVersion).toBe("550.54.15");
      expect(lib.features).toEqual({ memoryV2: true, processList: "nvmlDeviceGetComputeRunningProcesses_v3", samples: true, processUtilization: true });
      expect(lib.devices.map((d) => [d.index, d.name, d.uuid])).toEqual([
        [0, "NVIDIA H100 80GB HBM3", "GPU-0aa1b2c3-0000-4000-8000-000000000000"],
        [1, "NVIDIA H100 80GB HBM3", "GPU-1bb1b2c3-0000-4000-8000-000000000001"],
      ]);
      const [gpu0, gpu1] = lib.devices as [typeof lib.devices[0], typeof lib.devices[0]];
      // u64 fields above 2^32 come through whole; v2's used leaves out the driver's reservation
      expect([gpu0.readMemory(), gpu0.memoryTotal, gpu0.memoryUsed]).toEqual([0, 80 * GiB, 10 * GiB]);
      expect([gpu1.readUtilization(), gpu1.utilizationGpu, gpu1.utilizationMemory]).toEqual([0, 5, 2]);
      expect([gpu0.readPower(), gpu0.powerW]).toEqual([0, 215.5]);
      expect([gpu0.readTemperature(), gpu0.temperatureC, gpu0.readSmClock(), gpu0.smClockMhz]).toEqual([0, 61, 0, 1980]);
      expect(gpu0.readProcesses()).toBe(0);
      const processes = Array.from({ length: gpu0.processCount }, (_, i) => [gpu0.processPid(i), gpu0.processMemory(i)]);
      expect(processes).toEqual([[4242, 6 * GiB], [5151, 3 * GiB], [77, 1 * GiB]]);
      expect(gpu0.readSamples(NvmlSampling.GPU_UTILIZATION, 0)).toBe(0);
      expect([gpu0.sampleNewest, gpu0.sampleMean]).toEqual([73, 73]);
      const epochUs = Date.now() * 1000;
      expect(Math.abs(gpu0.sampleLastUs - epochUs)).toBeLessThan(1e6);
      // nothing newer than the newest: NVML_ERROR_NOT_FOUND
      expect(gpu0.readSamples(NvmlSampling.GPU_UTILIZATION, gpu0.sampleLastUs + 1e6)).toBe(6);
      expect(gpu0.readProcessUtilization(0)).toBe(0);
      const busy = Array.from({ length: gpu0.utilSampleCount }, (_, i) => [gpu0.utilSamplePid(i), gpu0.utilSampleSm(i)]);
      expect(busy).toEqual([[4242, 30], [5151, 12], [77, 50]]);
    } finally {
      lib.shutdown();
    }
    expect(double.stats().nvmlShutdown).toBe(1);
  });

  test("process lists: _v3 as nvml.h (24 bytes), R535.54's 32-byte _v3, and v1's 16 bytes", () => {
    const expected = [[4242, 6 * GiB], [5151, 3 * GiB], [77, 1 * GiB]];
    for (const [variant, size, api] of [
      ["current", 24, "nvmlDeviceGetComputeRunningProcesses_v3"],
      ["current", 32, "nvmlDeviceGetComputeRunningProcesses_v3"],
      ["legacy", 24, "nvmlDeviceGetComputeRunningProcesses"],
    ] as const) {
      double.script({ ...twoGpus(), processInfoV3Size: size });
      const lib = openNvml(double.library(variant));
      try {
        expect(lib.features.processList).toBe(api);
        const gpu0 = lib.devices[0]!;
        expect(gpu0.readProcesses()).toBe(0);
        expect(Array.from({ length: gpu0.processCount }, (_, i) => [gpu0.processPid(i), gpu0.processMemory(i)])).toEqual(expected);
      } finally {
        lib.shutdown();
      }
    }
  });

  test("a process list longer than the buffer grows it (NVML_ERROR_INSUFFICIENT_SIZE)", () => {
    const processes = Array.from({ length: 150 }, (_, i) => ({ pid: 10_000 + i, usedBytes: (i + 1) * 2 ** 33 }));
    double.script(twoGpus([{ processes }]));
    const lib = openNvml(double.library());
    try {
      const gpu0 = lib.devices[0]!;
      expect(gpu0.readProcesses()).toBe(0);
      expect(gpu0.processCount).toBe(150);
      expect([gpu0.processPid(149), gpu0.processMemory(149)]).toEqual([10_149, 150 * 2 ** 33]);
    } finally {
      lib.shutdown();
    }
  });

  test("nvmlInit_v2 failure: a CpostError with nvmlErrorString's text and a hint", () => {
    double.script({ initError: 9, devices: [] });
    const error = (() => {
      try {
        openNvml(double.library());
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(CpostError);
    expect((error as CpostError).code).toBe("nvml");
    expect((error as CpostError).message).toBe("nvmlInit_v2 failed: Driver Not Loaded (NVML error 9)");
    expect((error as CpostError).hint).toContain("lsmod");
  });
});

describe("collectors/nvml/index.ts", () => {
  test("two GPUs: every metric in its own slot, per device index", async () => {
    double.script(twoGpus());
    const warnings: string[] = [];
    const nvml = createNvmlCollector({ library: double.library(), procRoot, onWarning: (w) => warnings.push(w) });
    try {
      const probe = opened(nvml.open(host));
      expect(probe.metrics.map((m) => `${m.name}[${m.device}]`)).toEqual(
        [0, 1].flatMap((d) =>
          ["gpu.utilization_pct", "gpu.memory_utilization_pct", "gpu.memory_used_bytes", "gpu.memory_total_bytes", "gpu.power_w", "gpu.temperature_c", "gpu.sm_clock_mhz"].map((n) => `${n}[${d}]`),
        ),
      );
      expect(probe.source).toContain("NVML 550.54.15");
      const s = await sampleUntil(probe, (s) => s.get("gpu.utilization_pct", 1) === 5);
      expect(s.alive).toBe(true);
      expect([0, 1].map((d) => probe.metrics.filter((m) => m.device === d).map((m) => s.get(m.name, d)))).toEqual([
        [73, 41, 10 * GiB, 80 * GiB, 215.5, 61, 1980],
        [5, 2, 2 * GiB, 80 * GiB, 70.25, 38, 345],
      ]);
      expect([s.values[0], s.values[probe.metrics.length + 1]]).toEqual([-1, -1]); // only its own slots
      expect(warnings).toEqual([]);
    } finally {
      nvml.dispose?.();
    }
  });

  test("per-container attribution: each container gets only its own processes' memory and SM share", async () => {
    double.script(twoGpus());
    const nvml = createNvmlCollector({ library: double.library(), procRoot, onWarning: () => {} });
    try {
      const a = opened(nvml.open(container(A, 4000)));
      const b = opened(nvml.open(container(B)));
      const other = opened(nvml.open(container("0".repeat(64))));
      const sa = await sampleUntil(a, (s) => s.get("gpu.process_sm_pct", 0) > 0);
      // 4242 (cgroupfs) and 5151 (systemd scope) are A's; 77 is a host process
      expect([sa.get("gpu.process_memory_bytes", 0), sa.get("gpu.process_sm_pct", 0)]).toEqual([9 * GiB, 42]);
      expect([sa.get("gpu.process_memory_bytes", 1), sa.get("gpu.process_sm_pct", 1)]).toEqual([0, 0]);
      const sb = await sampleUntil(b, (s) => s.get("gpu.process_sm_pct", 1) > 0);
      expect([sb.get("gpu.process_memory_bytes", 0), sb.get("gpu.process_memory_bytes", 1), sb.get("gpu.process_sm_pct", 1)]).toEqual([0, 2 * GiB, 7]);
      const so = sample(other, performance.now());
      expect([so.get("gpu.process_memory_bytes", 0), so.get("gpu.process_memory_bytes", 1)]).toEqual([0, 0]);
      // the device-wide figures are the same for every container
      expect(sb.get("gpu.memory_used_bytes", 0)).toBe(10 * GiB);

      // A's process on GPU 0 ends: its memory leaves A's figure at the next sample
      double.script(twoGpus([{ processes: [{ pid: 5151, usedBytes: 3 * GiB, smPct: 12 }] }]));
      await sampleUntil(a, (s) => s.get("gpu.process_memory_bytes", 0) === 3 * GiB);
    } finally {
      nvml.dispose?.();
    }
  });

  test("the probe of a container reports it gone when its init process is", () => {
    double.script(twoGpus());
    mkdirSync(join(procRoot, "4999"));
    const nvml = createNvmlCollector({ library: double.library(), procRoot, onWarning: () => {} });
    try {
      const probe = opened(nvml.open(container(A, 4999)));
      expect(sample(probe, 0).alive).toBe(true);
      rmSync(join(procRoot, "4999"), { recursive: true });
      expect(sample(probe, 1).alive).toBe(false);
    } finally {
      nvml.dispose?.();
    }
  });

  test("a GPU lost mid-run ends its series with one warning; the other GPU goes on", async () => {
    double.script(twoGpus());
    const warnings: string[] = [];
    const nvml = createNvmlCollector({ library: double.library(), procRoot, onWarning: (w) => warnings.push(w) });
    try {
      const probe = opened(nvml.open(container(A, 4000)));
      await sampleUntil(probe, (s) => s.get("gpu.memory_used_bytes", 1) === 2 * GiB && s.get("gpu.utilization_pct", 1) === 5);
      double.script(twoGpus([{}, { lost: true }]));
      const s = await sampleUntil(probe, (s) => Number.isNaN(s.get("gpu.memory_used_bytes", 1)));
      expect(probe.metrics.filter((m) => m.device === 1).map((m) => s.get(m.name, 1)).every(Number.isNaN)).toBe(true);
      for (let i = 0; i < 20; i++) {
        const later = sample(probe, performance.now());
        expect(later.alive).toBe(true);
        expect([later.get("gpu.memory_used_bytes", 0), later.get("gpu.power_w", 0), later.get("gpu.process_memory_bytes", 0)]).toEqual([10 * GiB, 215.5, 9 * GiB]);
        expect(Number.isNaN(later.get("gpu.utilization_pct", 1))).toBe(true);
      }
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain("GPU 1 (NVIDIA H100 80GB HBM3 GPU-1bb1b2c3-0000-4000-8000-000000000001) is lost");
      expect(warnings[0]).toContain("GPU is lost (NVML error 15)");
    } finally {
      nvml.dispose?.();
    }
  });

  test("a GPU already lost when NVML is opened: said once, its slots NaN, the other GPU read", () => {
    double.script(twoGpus([{ lost: true }]));
    const warnings: string[] = [];
    const nvml = createNvmlCollector({ library: double.library(), procRoot, onWarning: (w) => warnings.push(w) });
    try {
      const probe = opened(nvml.open(container(A, 4000)));
      const s = sample(probe, 0);
      expect(probe.metrics.filter((m) => m.device === 0).map((m) => s.get(m.name, 0)).every(Number.isNaN)).toBe(true);
      expect([s.get("gpu.memory_used_bytes", 1), s.get("gpu.process_memory_bytes", 1)]).toEqual([2 * GiB, 0]);
      expect(warnings).toEqual(["GPU 0 cannot be used: GPU is lost"]);
    } finally {
      nvml.dispose?.();
    }
  });

  test("a call the GPU does not support: NaN, one warning, not asked again", () => {
    double.script(twoGpus([{ errors: { nvmlDeviceGetPowerUsage: 3 } }]));
    const warnings: string[] = [];
    const nvml = createNvmlCollector({ library: double.library(), procRoot, onWarning: (w) => warnings.push(w) });
    const probe = opened(nvml.open(host));
    for (let i = 0; i < 50; i++) {
      const s = sample(probe, i);
      expect(Number.isNaN(s.get("gpu.power_w", 0))).toBe(true);
      expect(s.get("gpu.power_w", 1)).toBe(70.25);
    }
    nvml.dispose?.();
    expect(warnings).toEqual(["GPU 0: nvmlDeviceGetPowerUsage: Not Supported (NVML error 3); cpost stops asking"]);
    expect(double.stats().nvmlDeviceGetPowerUsage).toBe(1 + 50);
  });

  test("utilisation comes from the driver's sample buffer, and follows it", async () => {
    double.script(twoGpus());
    const nvml = createNvmlCollector({ library: double.library(), procRoot, onWarning: () => {} });
    const probe = opened(nvml.open(host));
    await sampleUntil(probe, (s) => s.get("gpu.utilization_pct", 0) === 73);
    double.script(twoGpus([{ util: [20, 9] }]));
    const s = await sampleUntil(probe, (s) => s.get("gpu.utilization_pct", 0) === 20 && s.get("gpu.memory_utilization_pct", 0) === 9);
    expect(s.get("gpu.utilization_pct", 1)).toBe(5);
    nvml.dispose?.();
    const calls = double.stats();
    expect(calls.nvmlDeviceGetUtilizationRates).toBe(0);
    expect(calls.nvmlDeviceGetSamples).toBeGreaterThan(0);
  });

  test("an older library: fallbacks for memory, process list and utilisation, polled no faster than NVML's period", () => {
    double.script(twoGpus());
    const nvml = createNvmlCollector({ library: double.library("legacy"), procRoot, onWarning: () => {} });
    const probe = opened(nvml.open(container(A, 4000)));
    expect(probe.source).toContain("utilisation polled every 167 ms");
    let last = sample(probe, 0);
    // 1 kHz for one simulated second
    for (let ms = 1; ms < 1000; ms++) last = sample(probe, ms);
    nvml.dispose?.();
    // v1 memory: used counts the driver's reservation; v1 process list still attributes
    expect([last.get("gpu.memory_used_bytes", 0), last.get("gpu.utilization_pct", 0), last.get("gpu.process_memory_bytes", 0)]).toEqual([10.5 * GiB, 73, 9 * GiB]);
    expect(Number.isNaN(last.get("gpu.process_sm_pct", 0))).toBe(true); // no nvmlDeviceGetProcessUtilization
    const calls = double.stats();
    expect(calls.nvmlDeviceGetMemoryInfo).toBe(2000);
    expect(calls.nvmlDeviceGetComputeRunningProcesses).toBe(2000);
    expect(calls.nvmlDeviceGetUtilizationRates).toBe(2 * 6); // t = 0, 167, 333, 500, 667, 833 ms per GPU
  });

  test("no NVML here, or one too old: unavailable with the reason, and no crash", () => {
    for (const [library, reason] of [
      ["/nonexistent/libnvidia-ml.so.1", "NVML not found: CPOST_NVML_LIB=/nonexistent/libnvidia-ml.so.1"],
      [double.library("ancient"), "is too old: it lacks nvmlInit_v2"],
    ] as const) {
      const nvml = createNvmlCollector({ library, procRoot, onWarning: () => {} });
      const probe = nvml.open(host);
      expect(isUnavailable(probe) && probe.unavailable).toContain(reason);
      expect(nvml.available()).toEqual({ ok: false, reason: (probe as { unavailable: string }).unavailable });
      nvml.dispose?.();
    }
    double.script({ devices: [] });
    const none = createNvmlCollector({ library: double.library(), procRoot });
    expect(none.available()).toEqual({ ok: false, reason: "NVML reports no GPUs on this host" });
    double.script(twoGpus());
    const here = createNvmlCollector({ library: double.library(), procRoot });
    expect(here.available()).toEqual({ ok: true, gpus: 2, driver: "550.54.15" });
    here.dispose?.();
  });
});

describe("attribution to a real container", () => {
  let engine: Awaited<ReturnType<typeof connectDocker>> | undefined;
  const ids: string[] = [];
  afterAll(async () => {
    for (const id of ids) await engine?.removeContainer(id, { force: true });
  });

  dockerTest("NVML pids are matched through the container's real /proc/<pid>/cgroup", async () => {
    engine = await connectDocker();
    const id = await engine.createContainer({ image: TEST_IMAGE, cmd: ["sleep", "60"], env: {}, labels: { "cpost.test": "nvml" }, mounts: [] });
    ids.push(id);
    await engine.startContainer(id);
    const { pid } = await engine.inspectContainer(id);
    expect(pid).toBeGreaterThan(0);
    double.script(twoGpus([{ processes: [{ pid: process.pid, usedBytes: 1 * GiB }] }, { processes: [{ pid, usedBytes: 5 * GiB }] }]));
    const nvml = createNvmlCollector({ library: double.library(), procRoot: "/proc", onWarning: () => {} });
    try {
      const mine = sample(opened(nvml.open(container(id, pid))), 0);
      expect([mine.alive, mine.get("gpu.process_memory_bytes", 0), mine.get("gpu.process_memory_bytes", 1)]).toEqual([true, 0, 5 * GiB]);
      const stranger = sample(opened(nvml.open(container(B))), 0);
      expect([stranger.get("gpu.process_memory_bytes", 0), stranger.get("gpu.process_memory_bytes", 1)]).toEqual([0, 0]);
    } finally {
      nvml.dispose?.();
    }
  });
});

describe("a run with the nvml collector", () => {
  dockerTest("GPU figures of an operator's own processes reach the table, CSV and msgpack sinks", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cpost-nvml-run-"));
    const engine = await connectDocker();
    let child: ReturnType<typeof Bun.spawn> | undefined;
    try {
      mkdirSync(join(dir, "in"));
      writeFileSync(
        join(dir, "pipeline.yaml"),
        `api-version: 0.4.0\nname: gpu\noperators:\n  - name: trainer\n    container: {image: cpost-test/busybox, tag: "1", command: ["sleep", "3"]}\n    input: [{path: /input}]\n    output: [{path: /output}]\n`,
      );
      double.script(twoGpus([{ processes: [] }, { processes: [] }]));
      const argv = [BUN, join(REPO, "core/main.ts"), "run", join(dir, "pipeline.yaml"), join(dir, "in"), "--collectors", "cgroup,nvml", "--sinks", "table,csv,msgpack", "--metrics_dir", join(dir, "metrics"), "--record", join(dir, "run.msgpack")];
      child = Bun.spawn(argv, { cwd: REPO, env: { ...process.env, ...double.env() }, stdout: "pipe", stderr: "pipe" });
      const output = Promise.all([new Response(child.stdout as ReadableStream).text(), new Response(child.stderr as ReadableStream).text()]);
      // the operator's container appears; its init process then "allocates" 5 GiB on GPU 1
      const deadline = performance.now() + 60_000;
      let pid = 0;
      while (pid === 0 && performance.now() < deadline) {
        const [found] = await engine.listContainers([`cpost.pid=${child.pid}`, "cpost.operator=trainer"]);
        // created but not started yet, or (on a busy engine) listed a moment before inspect can see it
        if (found) pid = await engine.inspectContainer(found.id).then((state) => state.pid, () => 0);
        if (pid === 0) await Bun.sleep(20);
      }
      expect(pid).toBeGreaterThan(0);
      double.script(twoGpus([{ processes: [{ pid: 77, usedBytes: 1 * GiB, smPct: 50 }] }, { processes: [{ pid, usedBytes: 5 * GiB, smPct: 64 }] }]));
      const code = await child.exited;
      const [stdout, stderr] = await output;
      expect({ code, stderr }).toEqual({ code: 0, stderr: expect.any(String) });

      // table: GPU rows with the operator's own peak GPU memory (5 GiB / 1e6 MB) and one GPU used
      expect(stdout).toMatch(/\|\s+GPU\s+\|[^\n]*\|\s+gpu: 1\s+\|/);
      expect(stdout).toMatch(/\|\s+GPU memory\s+\|[^|]*\|\s+5368\.709 MB\s+\|/);

      // CSV: per-device columns, with the device-wide and per-container figures
      const [header, ...rows] = (await Bun.file(join(dir, "metrics", "trainer_final_result.csv")).text()).trim().split("\n");
      const columns = header!.split(",");
      // empty cells: rows after the nvml probe saw the container's init process gone
      const column = (key: string) => rows.map((row) => row.split(",")[columns.indexOf(key)]).filter((cell) => cell !== "");
      expect(columns).toContain("gpu.process_memory_bytes[1]");
      expect(column("gpu.process_memory_bytes[1]")).toContain(String(5 * GiB));
      expect(new Set(column("gpu.process_memory_bytes[0]"))).toEqual(new Set(["0"]));
      expect(new Set(column("gpu.power_w[0]"))).toEqual(new Set(["215.5"]));
      expect(new Set(column("gpu.memory_total_bytes[1]"))).toEqual(new Set([String(80 * GiB)]));

      // msgpack: the recorded series and the summary's GPU recommendation
      const recording = readRecording(join(dir, "run.msgpack"));
      const trainer = recording.operators[0]!;
      const slot = trainer.batches[0]!.columns.findIndex((c) => c.name === "gpu.process_memory_bytes" && c.device === 1);
      const width = trainer.batches[0]!.columns.length;
      const series = trainer.batches.flatMap((b) => Array.from({ length: b.rows }, (_, r) => b.values[r * width + slot]!));
      expect(Math.max(...series.filter((x) => !Number.isNaN(x)))).toBe(5 * GiB);
      expect(trainer.summary?.recommendation.gpu).toBe(1);
      expect(trainer.summary?.stats.find((s) => s.key === "gpu.process_memory_bytes[1]")?.max).toBe(5 * GiB);
    } finally {
      child?.kill();
      for (const c of await engine.listContainers([`cpost.pid=${child?.pid}`])) await engine.removeContainer(c.id, { force: true });
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("nvml named where NVML is missing", () => {
  // The collector's available() hook: `cpost run` and `cpost monitor serve` alike stop before anything starts.
  test("`cpost run --collectors nvml` and `cpost monitor serve --collectors nvml` exit 2 naming nvml and the reason; the monitor's defaults leave it out with a line", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cpost-nvml-missing-"));
    try {
      mkdirSync(join(dir, "in"));
      writeFileSync(join(dir, "pipeline.yaml"), `api-version: 0.4.0\nname: gpu\noperators:\n  - name: trainer\n    container: {image: cpost-test/busybox, tag: "1", command: ["true"]}\n`);
      const env = { ...process.env, CPOST_NVML_LIB: join(dir, "no-such-libnvidia-ml.so.1") };
      const spawn = async (args: string[], timeoutMs = 30_000) => {
        const child = Bun.spawn([BUN, join(REPO, "core/main.ts"), ...args], { cwd: dir, env, stdout: "pipe", stderr: "pipe" });
        const timer = setTimeout(() => child.kill(), timeoutMs);
        const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited]);
        clearTimeout(timer);
        return { code, stderr };
      };
      for (const args of [
        ["run", join(dir, "pipeline.yaml"), join(dir, "in"), "--collectors", "cgroup,nvml"],
        ["monitor", "serve", "--listen", "127.0.0.1:0", "--collectors", "cgroup,nvml"],
        ["monitor", "serve", "--listen", "127.0.0.1:0", "--host-collectors", "host,nvml"],
      ]) {
        const { code, stderr } = await spawn(args);
        expect({ args, code }).toEqual({ args, code: 2 });
        expect(stderr).toMatch(/--(host-)?collectors nvml: not available on this host: /);
        expect(stderr).toContain("leave nvml out of");
      }
      // Not named: the monitor starts without it and says why once (stopped here once it listens).
      const child = Bun.spawn([BUN, join(REPO, "core/main.ts"), "monitor", "serve", "--listen", "127.0.0.1:0"], { cwd: dir, env, stdout: "pipe", stderr: "pipe" });
      const reader = (child.stderr as ReadableStream<Uint8Array>).getReader();
      let text = "";
      const deadline = performance.now() + 30_000;
      while (!/listening|listens|control API/.test(text) && performance.now() < deadline) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
      child.kill("SIGTERM");
      await child.exited;
      expect(text).toContain("cpost monitor: nvml not used: ");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});
