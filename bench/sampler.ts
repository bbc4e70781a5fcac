/**
 * Benchmark of sampling one container (a real one, on the real Docker
 * engine), with Docker's own stats endpoint as the baseline in the same run:
 *
 * 1. per-sample cost of the cgroup + blkio probes' JS reads, back to back,
 *    with the clock they see advancing 1 ms per sample (so the ~10 ms
 *    memory.stat tier, the ~100 ms breakdown and disk tier and the ~1 s tier
 *    come round as at 1 kHz), 10 ms per sample, and with every tier read
 *    every sample;
 * 2. cpost's own CPU (utime + stime of /proc/self/stat, all threads) while
 *    the Sampler samples for N seconds after a 1 s warm-up, with the
 *    intervals it achieved, the share of ticks its native loop took, and the
 *    batches per second that crossed from its worker thread: one container
 *    at 1 kHz (native loop, then JS ticks in the worker, then the main
 *    thread), at the default 10 ms, and 20 containers at 100 Hz; beside the
 *    floors of merely waking a thread 1000×/s (a JS worker in Atomics.wait,
 *    and the native loop reading nothing), in the same run;
 * 3. the baseline: `GET /containers/{id}/stats?stream=false&one-shot=true`
 *    once per sample, back to back for N seconds: its latency, the
 *    intervals it achieves, and the CPU it costs cpost and the engine
 *    (dockerd, containerd and the container's shim).
 *
 *   node_modules/.bin/bun bench/sampler.ts [seconds=10]
 */
import { readdirSync, readFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { createBlkioCollector } from "../collectors/blkio/index.ts";
import { createCgroupCollector } from "../collectors/cgroup/index.ts";
import { Sampler } from "../core/sampling/sampler.ts";
import { openSamplingLoop } from "../native/sampling-loop.ts";
import { isUnavailable, type MetricBuffer, type Probe, type Target } from "../core/contracts/types.ts";

const seconds = Number(process.argv[2] ?? 10);
const cgroup = createCgroupCollector();
const blkio = createBlkioCollector();
const SOCKET = "/var/run/docker.sock";
const TICKS_PER_S = 100; // USER_HZ

async function api(method: string, path: string, body?: unknown): Promise<Response> {
  const res = await fetch(`http://docker/v1.41${path}`, {
    method,
    unix: SOCKET,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return res;
}

/** CPU seconds (user + system) of a process, all threads. */
function cpuSeconds(pid: number | "self"): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_S;
}

/** The engine's processes: dockerd, containerd, and the shims. */
function enginePids(): number[] {
  return readdirSync("/proc").filter((p) => /^\d+$/.test(p)).map(Number).filter((pid) => {
    try {
      return /^(dockerd|containerd|containerd-shim.*)$/.test(readFileSync(`/proc/${pid}/comm`, "latin1").trim());
    } catch {
      return false;
    }
  });
}
const engineCpu = (pids: number[]): number => pids.reduce((sum, pid) => {
  try {
    return sum + cpuSeconds(pid);
  } catch {
    return sum;
  }
}, 0);

function quantiles(xs: number[]): { p50: number; p99: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { p50: s[Math.floor(0.5 * (s.length - 1))]!, p99: s[Math.floor(0.99 * (s.length - 1))]! };
}
const f = (x: number, d = 2): string => x.toFixed(d);

const created = (await (await api("POST", "/containers/create", {
  Image: "cpost-test/busybox:1",
  Cmd: ["cpost-workload", "mem", "64", "600"],
  Labels: { "cpost.bench": "sampler" },
})).json()) as { Id: string };
const id = created.Id;
await api("POST", `/containers/${id}/start`);
const info = (await (await api("GET", "/info")).json()) as { CgroupDriver: "cgroupfs" | "systemd"; CgroupVersion: string; KernelVersion: string };
const target: Target = { kind: "container", containerId: id, pid: 0, engine: "docker", cgroupDriver: info.CgroupDriver, operator: "bench" };

try {
  console.log(`bench/sampler: ${cpus().length} CPUs, kernel ${info.KernelVersion}, cgroup v${info.CgroupVersion} (${info.CgroupDriver}), load average ${loadavg().map((x) => f(x)).join(" ")}`);
  console.log(`one container running \`cpost-workload mem 64 600\` (one process)\n`);

  // 1. per-sample cost of the probes
  const probes = [cgroup, blkio].map((c) => {
    const p = c.open(target);
    if (isUnavailable(p)) throw new Error(`${c.name}: ${p.unavailable}`);
    return p;
  });
  const width = probes.reduce((n, p) => n + p.metrics.length, 0);
  const out: MetricBuffer = { values: new Float64Array(width), base: 0, monotonicMs: 0 };
  const sampleAll = (ps: Probe[], ms: number): void => {
    out.monotonicMs = ms;
    let base = 0;
    for (const p of ps) {
      out.base = base;
      p.read(out);
      base += p.metrics.length;
    }
  };
  let clock = 0; // the probes' clock only ever advances
  const perSample = (stepMs: number, n: number): number => {
    for (let i = 0; i < 2000; i++) sampleAll(probes, (clock += stepMs)); // warm up the JIT
    const t0 = performance.now();
    for (let i = 0; i < n; i++) sampleAll(probes, (clock += stepMs));
    return ((performance.now() - t0) * 1000) / n;
  };
  const at1kHz: number[] = [];
  const at10ms: number[] = [];
  const everyTier: number[] = [];
  for (let round = 0; round < 5; round++) {
    at1kHz.push(perSample(1, 20_000));
    at10ms.push(perSample(10, 5_000));
    everyTier.push(perSample(2000, 5_000));
  }
  const best = (xs: number[]) => Math.min(...xs);
  const median = (xs: number[]) => quantiles(xs).p50;
  console.log("1. per-sample cost, cgroup + blkio of one container (5 rounds; median, best)");
  console.log(`   at 1 kHz (memory.stat, disk files ~10 ms; breakdown, /proc ~100 ms; PSI/limit ~1 s): ${f(median(at1kHz))} µs, best ${f(best(at1kHz))} µs   (goal ≤ 15 µs)`);
  console.log(`   at 10 ms (memory.stat and disk files every sample, the rest as above):            ${f(median(at10ms))} µs, best ${f(best(at10ms))} µs`);
  console.log(`   every file every sample:                                                ${f(median(everyTier))} µs, best ${f(best(everyTier))} µs`);
  for (const p of probes) console.log(`   source: ${p.source}`);
  for (const p of probes) p.close();

  // 2. the Sampler: 1 kHz and the default 10 ms on this container, and 20 containers at 100 Hz
  const runSampler = async (mainThread: boolean, intervalMs: number, targets: Target[], nativeLoop: boolean) => {
    let rows = 0;
    let batches = 0;
    const warnings: string[] = [];
    const sampler = new Sampler({ intervalMs, collectors: [cgroup, blkio], mainThread, nativeLoop, onBatch: (b) => ((rows += b.rows), batches++), onWarning: (w) => warnings.push(w) });
    const watches = targets.map((t) => sampler.watch(t));
    await Bun.sleep(1000); // past the worker's start and the JIT's first compiles
    rows = 0; // counted from here (to a batch, 250 ms)
    batches = 0;
    const before = sampler.intervals();
    const cpu0 = cpuSeconds("self");
    const t0 = performance.now();
    await Bun.sleep(seconds * 1000);
    const cpu = cpuSeconds("self") - cpu0;
    const wall = (performance.now() - t0) / 1000;
    const intervals = sampler.intervals();
    for (const w of watches) w.stop();
    sampler.close();
    const ticks = intervals.samples - before.samples;
    const nativeShare = ((intervals.nativeTicks ?? 0) - (before.nativeTicks ?? 0)) / ticks;
    return { rows, batches, cpuPct: (100 * cpu) / wall, intervals, warnings, wall, nativeShare };
  };
  const others: string[] = [];
  for (let i = 0; i < 19; i++) {
    const c = (await (await api("POST", "/containers/create", { Image: "cpost-test/busybox:1", Cmd: ["sleep", "600"], Labels: { "cpost.bench": "sampler" } })).json()) as { Id: string };
    others.push(c.Id);
    await api("POST", `/containers/${c.Id}/start`);
  }
  const twenty = [target, ...others.map((containerId) => ({ ...target, containerId }))];
  console.log(`\n2. the Sampler for ${seconds} s each (cpost's whole process, /proc/self/stat; the 19 extra containers run \`sleep 600\`)`);
  const results: Array<{ name: string; r: Awaited<ReturnType<typeof runSampler>> }> = [];
  const runs = [
    ["1 kHz, worker thread", false, 1, [target], 2, true],
    ["1 kHz, worker, JS ticks", false, 1, [target], NaN, false],
    ["1 kHz, main thread", true, 1, [target], NaN, false],
    ["10 ms, worker thread", false, 10, [target], 0.3, true],
    ["20 × 100 Hz, worker", false, 10, twenty, 3, true],
  ] as const;
  for (const [name, mainThread, intervalMs, targets, goal, nativeLoop] of runs) {
    const r = await runSampler(mainThread, intervalMs, [...targets], nativeLoop);
    results.push({ name, r });
    console.log(
      `   ${name.padEnd(23)}: CPU ${f(r.cpuPct)} % of a core${Number.isNaN(goal) ? "" : ` (goal ≤ ${goal} %)`}, ${r.rows} samples (${f(r.rows / r.wall, 0)}/s), ` +
        `${f(100 * r.nativeShare, 1)} % of ticks native, ${f(r.batches / r.wall, 1)} batches/s between threads, interval p50 ${f(r.intervals.p50, 3)} ms, p99 ${f(r.intervals.p99, 3)} ms${intervalMs === 1 ? " (goal p99 ≤ 1.5 ms)" : ""}${r.warnings.length ? `; warnings: ${r.warnings.join("; ")}` : ""}`,
    );
  }
  await Promise.all(others.map((o) => fetch(`http://docker/v1.41/containers/${o}?force=true`, { method: "DELETE", unix: SOCKET })));

  // the floor: what merely waking a thread 1000 times a second costs on this machine
  const floorCode = `self.onmessage = (e) => {
    const sab = new Int32Array(new SharedArrayBuffer(4));
    const t0 = performance.now(); let next = t0 + 1; let n = 0;
    while (performance.now() - t0 < e.data) { const w = next - performance.now(); if (w > 0) Atomics.wait(sab, 0, 0, w); n++; next += 1; }
    postMessage(n);
  };`;
  const floorWorker = new Worker(URL.createObjectURL(new Blob([floorCode], { type: "application/javascript" })));
  await Bun.sleep(200);
  const f0 = cpuSeconds("self");
  const ft0 = performance.now();
  const wakeups = await new Promise<number>((resolve) => {
    floorWorker.onmessage = (e) => resolve(e.data as number);
    floorWorker.postMessage(seconds * 1000);
  });
  const floorPct = (100 * (cpuSeconds("self") - f0)) / ((performance.now() - ft0) / 1000);
  floorWorker.terminate();
  console.log(`   floor: a worker that only wakes 1000×/s (Atomics.wait, nothing else): ${f(floorPct)} % of a core (${wakeups} wake-ups)`);
  // the native floor: the sampling loop itself, reading no files, 1000 slots a second, here on the main thread
  const loop = openSamplingLoop();
  if (typeof loop === "string") console.log(`   native floor: not measured (${loop})`);
  else {
    const ticks = seconds * 1000;
    const ms = (): number => performance.now() - loop.monotonicToNow;
    const one = () => new Int32Array(1);
    const sched = new Float64Array([ms() + 1, 1, ms() + ticks + 10, 0, 0, 0]);
    const n0 = cpuSeconds("self");
    const nt0 = performance.now();
    loop.capture({
      flag: one(), sched, nfiles: 0, fds: one(), caps: one(), offsets: one(), every: new Float64Array(1), due: new Float64Array(1),
      ngroups: 0, groupEnds: one(), times: new Float64Array(ticks), lengths: one(), data: new Uint8Array(1), recordBytes: 0, capacity: ticks,
    });
    const nativeFloorPct = (100 * (cpuSeconds("self") - n0)) / ((performance.now() - nt0) / 1000);
    console.log(`   native floor: the sampling loop reading nothing, 1000 slots/s: ${f(nativeFloorPct)} % of a core (${sched[3]} wake-ups)`);
  }
  const k = results[0]!.r.cpuPct;
  console.log(`   1 kHz / floor: ${f(k / floorPct)}× (goal < 1.5×); 1 kHz above the floor: ${f(k - floorPct)} % = ${f(((k - floorPct) / 100) * 1e6 / (results[0]!.r.rows / results[0]!.r.wall), 1)} µs per sample`);

  // 3. baseline: Docker's stats endpoint once per sample
  const engine = enginePids();
  const latencies: number[] = [];
  const starts: number[] = [];
  const cpu0 = cpuSeconds("self");
  const e0 = engineCpu(engine);
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    const t = performance.now();
    starts.push(t);
    const stats = (await (await api("GET", `/containers/${id}/stats?stream=false&one-shot=true`)).json()) as { memory_stats: { usage?: number } };
    if (stats.memory_stats.usage === undefined) throw new Error("stats without memory usage");
    latencies.push(performance.now() - t);
  }
  const wall = (performance.now() - t0) / 1000;
  const ownCpu = cpuSeconds("self") - cpu0;
  const engineCpuUsed = engineCpu(engine) - e0;
  const intervals = quantiles(starts.slice(1).map((t, i) => t - starts[i]!));
  const lat = quantiles(latencies);
  console.log(`\n3. baseline: Docker's stats endpoint (stream=false, one-shot=true) once per sample, back to back for ${seconds} s`);
  console.log(`   ${latencies.length} samples (${f(latencies.length / wall, 2)}/s); latency p50 ${f(lat.p50, 1)} ms, p99 ${f(lat.p99, 1)} ms; interval p50 ${f(intervals.p50, 1)} ms, p99 ${f(intervals.p99, 1)} ms`);
  console.log(`   CPU: cpost ${f((100 * ownCpu) / wall)} % of a core, engine (dockerd, containerd, shims) ${f((100 * engineCpuUsed) / wall)} %`);

  const worker = results[0]!.r;
  const cpostCpuPerSample = (worker.cpuPct / 100) * worker.wall / worker.rows * 1e6;
  const dockerCpuPerSample = ((ownCpu + engineCpuUsed) / latencies.length) * 1e6;
  console.log("\nratios (Docker's endpoint / cpost, same run)");
  console.log(`   wall time per sample: ${f(lat.p50 * 1000, 0)} µs / ${f(median(at1kHz))} µs = ${f((lat.p50 * 1000) / median(at1kHz), 0)}×`);
  console.log(`   CPU per sample (all processes involved): ${f(dockerCpuPerSample, 0)} µs / ${f(cpostCpuPerSample, 1)} µs = ${f(dockerCpuPerSample / cpostCpuPerSample, 0)}×`);
  console.log(`   samples per second: ${f(worker.rows / worker.wall, 0)} / ${f(latencies.length / wall, 2)} = ${f(worker.rows / worker.wall / (latencies.length / wall), 0)}×`);
} finally {
  await fetch(`http://docker/v1.41/containers/${id}?force=true`, { method: "DELETE", unix: SOCKET });
}
