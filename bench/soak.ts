/**
 * Soak: the compiled cpost as users leave it running (`cpost monitor
 * serve`), sampling 20 real containers at 100 Hz for 10 minutes, recording
 * every sample with the msgpack sink. Prints cpost's RSS and open fds after
 * the warm-up and at the end (goal: flat, no growth beyond 10 %), samples
 * dropped (taken by the sampler but missing from the recording; goal 0),
 * slots missed (ticks later than 1.5 intervals) and the interval p99, and
 * as the baseline measured in the same run, the RSS and fds of an idle
 * cpost monitor (same binary, no session) over the same time.
 *
 *   node_modules/.bin/bun bench/soak.ts [--minutes 10] [--containers 20] [--interval 10ms]
 *
 * test/soak.test.ts runs the same for 30 seconds.
 */
import { decodeMultiStream } from "@msgpack/msgpack";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectDocker, type DockerClient } from "../core/engine/docker.ts";
import { compile } from "../scripts/build.ts";
import { TEST_IMAGE } from "../test/support.ts";

/** What a soak is asked for. */
export interface SoakOptions {
  seconds: number;
  containers: number;
  intervalMs: number;
  /** Seconds after the session starts before the first RSS/fd reading (JIT, buffers, first batches). */
  warmupSeconds: number;
  /** The compiled cpost; built here when absent. */
  binary?: string;
  /** Progress lines (the bench prints them; the test stays quiet). */
  say?: (line: string) => void;
}

/** RSS (bytes) and open fds of a process. */
export interface Footprint {
  rssBytes: number;
  fds: number;
}

/** What a soak measured. */
export interface SoakResult {
  seconds: number;
  containers: number;
  intervalMs: number;
  start: Footprint;
  end: Footprint;
  /** RSS readings every second after the warm-up, bytes. */
  rssTrend: number[];
  baseline: { start: Footprint; end: Footprint };
  /** Rows the monitor's sampler delivered (its session's count), and rows found in the recording. */
  samplesTaken: number;
  samplesRecorded: number;
  dropped: number;
  /** Slots skipped because a tick came later than 1.5 intervals, over all container series. */
  missedSlots: number;
  /** Slots the container series spanned (first to last sample), for the missed share. */
  slots: number;
  interval: { target: number; p50: number; p99: number; samples: number };
  /** CPU of cpost over the measured window, % of one core. */
  cpuPct: number;
  perContainer: Array<{ id: string; taken: number; recorded: number }>;
}

/** RSS and fds of `pid`, from /proc. */
function footprint(pid: number): Footprint {
  const status = readFileSync(`/proc/${pid}/status`, "latin1");
  const rssKb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN);
  return { rssBytes: rssKb * 1024, fds: readdirSync(`/proc/${pid}/fd`).length };
}

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

/** Builds the single executable as `npm run build` does into a temp dir, removed when this process ends. */
export async function buildBinary(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "cpost-soak-bin-"));
  process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, "cpost");
  await compile(out);
  return out;
}

/** Starts `cpost monitor serve` and returns once it says where it listens. */
async function startMonitor(binary: string, args: string[]): Promise<{ proc: Bun.Subprocess<"ignore", "ignore", "pipe">; url: string; stderr: () => string }> {
  const proc = Bun.spawn([binary, "monitor", "serve", "--listen", "127.0.0.1:0", ...args], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  let text = "";
  let url: string | undefined;
  const reader = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stderr) text += decoder.decode(chunk);
  })();
  const deadline = performance.now() + 30_000;
  while (!(url = /listening on (http:\/\/\S+)/.exec(text)?.[1])) {
    if (proc.exitCode !== null || performance.now() > deadline) throw new Error(`cpost monitor did not start: ${text}`);
    await Bun.sleep(20);
  }
  void reader;
  return { proc, url, stderr: () => text };
}

/** Rows per container series in a recording, and slots missed between consecutive rows, read as a stream. */
async function countRecording(path: string, intervalMs: number): Promise<{ rows: Map<string, number>; missed: number; slots: number }> {
  const series = new Map<number, string>();
  const rows = new Map<string, number>();
  const lastMs = new Map<number, number>();
  const firstMs = new Map<number, number>();
  let missed = 0;
  for await (const record of decodeMultiStream(Bun.file(path).stream())) {
    const r = record as { t: string; id?: number; containerId?: string; c?: number; n?: number; ts?: Uint8Array };
    if (r.t === "cols") series.set(r.id!, r.containerId!);
    if (r.t !== "batch") continue;
    const id = series.get(r.c!)!;
    rows.set(id, (rows.get(id) ?? 0) + r.n!);
    if (id === "") continue; // the host series is sampled by its own sampler
    const ts = new Float64Array(new Uint8Array(r.ts!).buffer);
    let previous = lastMs.get(r.c!);
    if (!firstMs.has(r.c!)) firstMs.set(r.c!, ts[0]!);
    for (const t of ts) {
      if (previous !== undefined && t - previous > 1.5 * intervalMs) missed += Math.round((t - previous) / intervalMs) - 1;
      previous = t;
    }
    lastMs.set(r.c!, previous!);
  }
  let slots = 0;
  for (const [c, first] of firstMs) slots += Math.round((lastMs.get(c)! - first) / intervalMs) + 1;
  return { rows, missed, slots };
}

/** Runs one soak; removes its containers and files whatever happens. */
export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const say = options.say ?? (() => {});
  const tag = `soak-${process.pid}-${Date.now()}`;
  const dir = mkdtempSync(join(tmpdir(), "cpost-soak-"));
  const recording = join(dir, "soak.msgpack");
  const ids: string[] = [];
  const procs: Bun.Subprocess[] = [];
  let engine: DockerClient | undefined;
  try {
    const binary = options.binary ?? (say("building the compiled cpost ..."), await buildBinary());
    say(`starting ${options.containers} containers ...`);
    engine = await connectDocker({ host: "unix:///var/run/docker.sock" });
    for (let i = 0; i < options.containers; i++) {
      // Each breathes: takes a little memory, lets it go, sleeps; so every series changes, none hogs the 2 cores.
      const script = `while :; do cpost-workload mem ${2 + (i % 5)} 0.2; cpost-workload sleep-ms ${300 + 37 * i}; done`;
      const id = await engine.createContainer({ image: TEST_IMAGE, cmd: ["sh", "-c", script], env: {}, labels: { "cpost.soak": tag }, mounts: [] });
      ids.push(id);
      await engine.startContainer(id);
    }
    const baseline = await startMonitor(binary, ["--sinks", "msgpack", "--msgpack-file", join(dir, "idle.msgpack"), "--label", `cpost.soak=${tag}-none`]);
    procs.push(baseline.proc);
    const monitor = await startMonitor(binary, [
      "--interval", `${options.intervalMs}ms`, "--sinks", "msgpack", "--msgpack-file", recording,
      "--collectors", "cgroup,blkio", "--host-collectors", "host", "--label", `cpost.soak=${tag}`,
    ]);
    procs.push(monitor.proc);
    const pid = monitor.proc.pid;
    const started = await fetch(`${monitor.url}/start`, { method: "POST", body: JSON.stringify({ job: "soak" }) });
    if (!started.ok) throw new Error(`POST /start: ${started.status} ${await started.text()}`);
    const t0 = performance.now();
    const watching = async (): Promise<number> => ((await (await fetch(`${monitor.url}/status`)).json()) as { active: { containers: unknown[] } | null }).active?.containers.length ?? 0;
    while ((await watching()) < options.containers) {
      if (performance.now() - t0 > 30_000) throw new Error(`the monitor watches ${await watching()} of ${options.containers} containers after 30 s`);
      await Bun.sleep(100);
    }
    say(`sampling ${options.containers} containers at ${1000 / options.intervalMs} Hz for ${options.seconds} s (warm-up ${options.warmupSeconds} s) ...`);
    await Bun.sleep(Math.max(0, options.warmupSeconds * 1000 - (performance.now() - t0)));
    const readings: Array<{ at: number; f: Footprint }> = [];
    const take = () => readings.push({ at: performance.now(), f: footprint(pid) });
    // The start figure is the median of three readings a second apart: one reading can catch a GC half done.
    for (let i = 0; i < 3; i++) take(), await Bun.sleep(1000);
    const start: Footprint = { rssBytes: median(readings.map((r) => r.f.rssBytes)), fds: median(readings.map((r) => r.f.fds)) };
    const baselineStart = footprint(baseline.proc.pid);
    const cpu0 = cpuSeconds(pid);
    const c0 = performance.now();
    let lastSay = performance.now();
    while (performance.now() - t0 < options.seconds * 1000) {
      await Bun.sleep(1000);
      take();
      if (performance.now() - lastSay > 60_000) {
        lastSay = performance.now();
        const f = readings.at(-1)!.f;
        say(`  ${((performance.now() - t0) / 1000).toFixed(0)} s: RSS ${(f.rssBytes / 2 ** 20).toFixed(1)} MiB, ${f.fds} fds`);
      }
    }
    const last = readings.slice(-3);
    const end: Footprint = { rssBytes: median(last.map((r) => r.f.rssBytes)), fds: median(last.map((r) => r.f.fds)) };
    const cpuPct = (100 * (cpuSeconds(pid) - cpu0)) / ((performance.now() - c0) / 1000);
    const baselineEnd = footprint(baseline.proc.pid);
    const stopped = await fetch(`${monitor.url}/stop`, { method: "POST" });
    if (!stopped.ok) throw new Error(`POST /stop: ${stopped.status} ${await stopped.text()}`);
    const session = ((await stopped.json()) as { session: { samples: number; containers: Array<{ id: string; samples: number }>; interval: SoakResult["interval"] } }).session;
    monitor.proc.kill("SIGTERM");
    await monitor.proc.exited;
    const counted = await countRecording(recording, options.intervalMs);
    const samplesRecorded = [...counted.rows.values()].reduce((a, b) => a + b, 0);
    return {
      seconds: options.seconds,
      containers: options.containers,
      intervalMs: options.intervalMs,
      start,
      end,
      rssTrend: readings.map((r) => r.f.rssBytes),
      baseline: { start: baselineStart, end: baselineEnd },
      samplesTaken: session.samples,
      samplesRecorded,
      dropped: session.samples - samplesRecorded,
      missedSlots: counted.missed,
      slots: counted.slots,
      interval: session.interval,
      cpuPct,
      perContainer: session.containers.map((c) => ({ id: c.id, taken: c.samples, recorded: counted.rows.get(c.id) ?? 0 })),
    };
  } finally {
    for (const p of procs) p.kill("SIGKILL");
    for (const id of ids) await engine?.removeContainer(id, { force: true }).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
const growth = (a: number, b: number) => `${b >= a ? "+" : ""}${((100 * (b - a)) / a).toFixed(1)} %`;

/** The figures as the bench prints them. */
export function describeSoak(r: SoakResult): string[] {
  const minRss = Math.min(...r.rssTrend);
  const maxRss = Math.max(...r.rssTrend);
  return [
    `soak: ${r.containers} containers at ${1000 / r.intervalMs} Hz for ${r.seconds} s (cgroup + blkio per container, host; msgpack sink)`,
    `  cpost RSS: ${mib(r.start.rssBytes)} after the warm-up -> ${mib(r.end.rssBytes)} at the end (${growth(r.start.rssBytes, r.end.rssBytes)}; goal ≤ +10 %); range ${mib(minRss)}..${mib(maxRss)} over ${r.rssTrend.length} readings`,
    `  cpost RSS over time (MiB, every ${Math.max(1, Math.round(r.rssTrend.length / 10))} s): ${r.rssTrend.filter((_, i) => i % Math.max(1, Math.round(r.rssTrend.length / 10)) === 0).map((b) => (b / 2 ** 20).toFixed(1)).join(" ")}`,
    `  cpost open fds: ${r.start.fds} -> ${r.end.fds} (${growth(r.start.fds, r.end.fds)}; goal ≤ +10 %)`,
    `  baseline, an idle cpost monitor (same binary, no session) over the same time: RSS ${mib(r.baseline.start.rssBytes)} -> ${mib(r.baseline.end.rssBytes)} (${growth(r.baseline.start.rssBytes, r.baseline.end.rssBytes)}), fds ${r.baseline.start.fds} -> ${r.baseline.end.fds}`,
    `  RSS ratio sampling/idle: ${(r.end.rssBytes / r.baseline.end.rssBytes).toFixed(2)}× at the end (${(r.start.rssBytes / r.baseline.start.rssBytes).toFixed(2)}× after the warm-up)`,
    `  samples: ${r.samplesTaken} taken, ${r.samplesRecorded} recorded, dropped ${r.dropped} (goal 0)`,
    `  slots missed (ticks later than 1.5 intervals): ${r.missedSlots} of ${r.slots} (${((100 * r.missedSlots) / Math.max(1, r.slots)).toFixed(3)} %)`,
    `  interval: target ${r.interval.target} ms, p50 ${r.interval.p50.toFixed(3)} ms, p99 ${r.interval.p99.toFixed(3)} ms over ${r.interval.samples} ticks`,
    `  cpost CPU: ${r.cpuPct.toFixed(1)} % of one core`,
  ];
}

if (import.meta.main) {
  const argv = process.argv.slice(2);
  const flag = (name: string, fallback: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback;
  };
  const minutes = Number(flag("minutes", "10"));
  const containers = Number(flag("containers", "20"));
  const intervalMs = Number(flag("interval", "10ms").replace(/ms$/, ""));
  if (!(minutes > 0) || !(containers > 0) || !(intervalMs >= 1)) {
    console.error("usage: bun bench/soak.ts [--minutes 10] [--containers 20] [--interval 10ms]");
    process.exitCode = 2;
  } else {
    const result = await runSoak({ seconds: Math.round(minutes * 60), containers, intervalMs, warmupSeconds: Math.min(30, minutes * 6), say: (line) => console.log(line) });
    for (const line of describeSoak(result)) console.log(line);
  }
}
