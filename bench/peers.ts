/**
 * cpost beside the tools users would pick instead, on the same containers in
 * the same run: cAdvisor (v0.55.1's library, 1 s housekeeping as Kubernetes
 * runs it), denet (PyPI, 100 ms, follows a pid tree), Docker's stats
 * endpoint (streamed, one reading a second), and cpost at its default 10 ms
 * and at 1 ms. Each workload of the static test workload runs in a fresh
 * container; every tool watches it from as early as it can until it exits.
 *
 * Per tool: samples per second, the peak memory it reported (and whether it
 * saw the 256 MiB held for 100 ms), the CPU seconds it saw against the
 * workload's own (its getrusage, printed by cpost-workload), and its own
 * CPU per sample and per second and its peak RSS; ratios against cpost.
 *
 * The peers are installed on first use under .cache/peers/ (pinned: cAdvisor
 * v0.55.1 built with the Go toolchain from bench/peers/cadvisor/go.sum;
 * denet==0.10.3 in a venv); a peer that cannot be had is skipped with the
 * reason. Figures, not a timed test.
 *
 *   node_modules/.bin/bun bench/peers.ts
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, copyFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { REPO } from "../scripts/build.ts";

const SOCKET = "/var/run/docker.sock";
const IMAGE = "cpost-test/busybox:1";
const CACHE = join(REPO, ".cache/peers");
const CADVISOR_VERSION = "v0.55.1";
const DENET_VERSION = "0.10.3";
const CADVISOR_PORT = 18080;
const MIB = 1024 * 1024;
const TICKS_PER_S = 100;

const WORKLOADS = [
  { name: "one busy thread, 6 s", cmd: ["cpu", "1", "6"], peakTruth: NaN },
  { name: "two busy threads, 6 s", cmd: ["cpu", "2", "6"], peakTruth: NaN },
  { name: "256 MiB held 100 ms every 2 s, 6 s", cmd: ["spike", "256", "100", "2000", "6"], peakTruth: 256 * MIB },
  { name: "a 150 ms operator (one busy thread)", cmd: ["cpu", "1", "0.15"], peakTruth: NaN },
] as const;

async function api(method: string, path: string, body?: unknown): Promise<Response> {
  const res = await fetch(`http://docker/v1.41${path}`, { method, unix: SOCKET, headers: body ? { "content-type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined });
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return res;
}
const json = async <T>(res: Promise<Response>): Promise<T> => (await (await res).json()) as T;

/** CPU seconds (user + system, all threads) of a process; NaN once it is gone. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_S;
  } catch {
    return NaN;
  }
}
/** Peak (VmHWM) or current (VmRSS) resident memory of a process, bytes. */
function rss(pid: number, field: "VmHWM" | "VmRSS" = "VmHWM"): number {
  try {
    const m = readFileSync(`/proc/${pid}/status`, "latin1").match(new RegExp(`${field}:\\s+(\\d+) kB`));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}
const enginePids = (): number[] => readdirSync("/proc").filter((p) => /^\d+$/.test(p)).map(Number).filter((pid) => {
  try {
    return /^(dockerd|containerd|containerd-shim.*)$/.test(readFileSync(`/proc/${pid}/comm`, "latin1").trim());
  } catch {
    return false;
  }
});
const engineCpu = (): number => enginePids().reduce((sum, pid) => sum + (cpuSeconds(pid) || 0), 0);

async function sh(argv: string[], env: Record<string, string> = {}): Promise<{ ok: boolean; out: string }> {
  try {
    const p = Bun.spawn(argv, { env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" });
    const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
    return { ok: (await p.exited) === 0, out: (out + err).trim() };
  } catch (e) {
    return { ok: false, out: e instanceof Error ? e.message : String(e) };
  }
}
const lastLine = (text: string): string => text.split("\n").filter(Boolean).slice(-1)[0] ?? "";

/** Builds cAdvisor once into .cache/peers; the path, or why not. */
async function installCadvisor(): Promise<{ path: string } | { skip: string }> {
  const bin = join(CACHE, `cadvisor-lite-${CADVISOR_VERSION}`);
  if (existsSync(bin)) return { path: bin };
  const go = Bun.which("go");
  if (!go) return { skip: "no Go toolchain here (cAdvisor v0.55.1 needs Go ≥ 1.24: apt-get install golang-go, or GOTOOLCHAIN through the module proxy)" };
  const build = join(CACHE, "cadvisor-build");
  mkdirSync(build, { recursive: true });
  for (const f of ["main.go", "go.mod", "go.sum"]) copyFileSync(join(REPO, "bench/peers/cadvisor", f), join(build, f));
  console.log(`installing cAdvisor ${CADVISOR_VERSION} (Go module proxy, into .cache/peers; a few minutes the first time)…`);
  const env = { GOPATH: join(CACHE, "go"), GOFLAGS: "-modcacherw -mod=readonly", CGO_ENABLED: "0", GOTOOLCHAIN: "auto" };
  const r = await sh(["sh", "-c", `cd '${build}' && '${go}' build -o '${bin}' .`], env);
  return r.ok ? { path: bin } : { skip: `go build of cAdvisor ${CADVISOR_VERSION} failed: ${lastLine(r.out)}` };
}

/** Installs denet once into a venv under .cache/peers; its python, or why not. */
async function installDenet(): Promise<{ path: string } | { skip: string }> {
  const venv = join(CACHE, "denet-venv");
  const python = join(venv, "bin/python");
  if ((await sh([python, "-c", `import denet, importlib.metadata as m; assert m.version("denet") == "${DENET_VERSION}"`])).ok) return { path: python };
  const py = Bun.which("python3");
  if (!py) return { skip: "no python3 here" };
  console.log(`installing denet ${DENET_VERSION} (PyPI, into .cache/peers/denet-venv)…`);
  const v = await sh([py, "-m", "venv", venv]);
  if (!v.ok) return { skip: `python3 -m venv failed: ${lastLine(v.out)}` };
  const pip = await sh([join(venv, "bin/pip"), "install", "-q", "--only-binary=:all:", `denet==${DENET_VERSION}`]);
  if (!pip.ok) return { skip: `pip install denet==${DENET_VERSION} failed: ${lastLine(pip.out)}` };
  return { path: python };
}

/** What one tool made of one workload. */
interface Seen {
  samples: number;
  peakBytes: number;
  cpuSeenSeconds: number;
  ownCpuSeconds: number;
  rssBytes: number;
  note?: string;
}

/** A child that prints one JSON line at the end (cpost-watch.ts, denet-watch.py). */
function child(argv: string[]) {
  const p = Bun.spawn(argv, { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
  const lines: string[] = [];
  let waiting: (() => void) | undefined;
  const done = (async () => {
    const decoder = new TextDecoder();
    let buffered = "";
    for await (const chunk of p.stdout) {
      buffered += decoder.decode(chunk);
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) lines.push(buffered.slice(0, nl)), (buffered = buffered.slice(nl + 1)), waiting?.();
    }
  })();
  return {
    pid: p.pid,
    send: (line: string) => (p.stdin.write(`${line}\n`), p.stdin.flush()),
    async line(timeoutMs = 20_000): Promise<string> {
      const deadline = performance.now() + timeoutMs;
      while (lines.length === 0 && performance.now() < deadline) await new Promise<void>((r) => ((waiting = r), setTimeout(r, 100)));
      if (lines.length === 0) throw new Error(`${argv.slice(0, 2).join(" ")}: no answer (${await new Response(p.stderr).text()})`);
      return lines.shift()!;
    },
    async end(): Promise<void> {
      await done;
      await p.exited;
    },
    kill: () => p.kill(),
  };
}

const peers = { cadvisor: await installCadvisor(), denet: await installDenet() };
const info = await json<{ CgroupDriver: "cgroupfs" | "systemd"; CgroupVersion: string; KernelVersion: string; ServerVersion: string }>(api("GET", "/info"));
console.log(`bench/peers: ${cpus().length} CPUs, kernel ${info.KernelVersion}, Docker ${info.ServerVersion}, cgroup v${info.CgroupVersion} (${info.CgroupDriver}), load average ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
for (const [name, p] of Object.entries(peers)) if ("skip" in p) console.log(`   ${name} skipped: ${p.skip}`);

let cadvisor: ReturnType<typeof Bun.spawn> | undefined;
if ("path" in peers.cadvisor) {
  cadvisor = Bun.spawn([peers.cadvisor.path, `--port=${CADVISOR_PORT}`, "--docker_only", "--housekeeping_interval=1s", "--allow_dynamic_housekeeping=false",
    "--containerd=/run/docker/containerd/containerd.sock", "--containerd-namespace=moby", "--logtostderr", "-v=0"], { stdout: "ignore", stderr: "ignore" });
  const deadline = performance.now() + 15_000;
  while (performance.now() < deadline) {
    if (await fetch(`http://127.0.0.1:${CADVISOR_PORT}/healthz`).then((r) => r.ok, () => false)) break;
    await Bun.sleep(200);
  }
}

type Tool = "cpost 10 ms" | "cpost 1 ms" | "cAdvisor 1 s" | "denet 100 ms" | "docker stats";
const TOOLS: Tool[] = ["cpost 10 ms", "cpost 1 ms", "cAdvisor 1 s", "denet 100 ms", "docker stats"];
const results: Array<{ workload: (typeof WORKLOADS)[number]; truthCpu: number; wall: number; seen: Map<Tool, Seen | string> }> = [];

try {
  for (const workload of WORKLOADS) {
    const seen = new Map<Tool, Seen | string>();
    const { Id: id } = await json<{ Id: string }>(api("POST", "/containers/create", { Image: IMAGE, Cmd: ["cpost-workload", ...workload.cmd], Labels: { "cpost.bench": "peers" } }));
    const cposts = (["10", "1"] as const).map((ms) => child([process.execPath, join(REPO, "bench/peers/cpost-watch.ts"), id, ms, info.CgroupDriver]));
    for (const c of cposts) await c.line();
    const cadvisorCpu0 = cadvisor ? cpuSeconds(cadvisor.pid) : NaN;
    const engine0 = engineCpu();
    const t0 = performance.now();
    await api("POST", `/containers/${id}/start`);
    const { State } = await json<{ State: { Pid: number } }>(api("GET", `/containers/${id}/json`));
    for (const c of cposts) c.send(`pid ${State.Pid}`);
    const denet = "path" in peers.denet && State.Pid > 0 ? child([peers.denet.path, join(REPO, "bench/peers/denet-watch.py"), String(State.Pid)]) : undefined;
    // Docker's stats, streamed as `docker stats` reads them: one reading a second
    const dockerRows: Array<{ cpu: number; mem: number; max: number }> = [];
    const abort = new AbortController();
    const streaming = (async () => {
      const res = await fetch(`http://docker/v1.41/containers/${id}/stats?stream=true`, { unix: SOCKET, signal: abort.signal });
      let buffered = "";
      for await (const chunk of res.body!) {
        buffered += new TextDecoder().decode(chunk);
        let nl: number;
        while ((nl = buffered.indexOf("\n")) >= 0) {
          const s = JSON.parse(buffered.slice(0, nl)) as { cpu_stats: { cpu_usage: { total_usage: number } }; memory_stats: { usage?: number; max_usage?: number } };
          buffered = buffered.slice(nl + 1);
          if (s.memory_stats.usage !== undefined) dockerRows.push({ cpu: s.cpu_stats.cpu_usage.total_usage, mem: s.memory_stats.usage, max: s.memory_stats.max_usage ?? 0 });
        }
      }
    })().catch(() => undefined);
    // cAdvisor keeps its readings in memory while the container lives: read them as a client would
    const cadvisorRows = new Map<number, { cpu: number; mem: number; max: number }>();
    let running = true;
    const polling = (async () => {
      while (running && cadvisor) {
        const rows = await fetch(`http://127.0.0.1:${CADVISOR_PORT}/stats?id=${id}&count=-1`).then((r) => (r.ok ? r.json() : []), () => []) as Array<{ t: number; cpu: number; mem: number; max: number }>;
        for (const r of rows) cadvisorRows.set(r.t, r);
        await Bun.sleep(250);
      }
    })();
    await (await api("POST", `/containers/${id}/wait`)).json(); // the engine answers the headers at once, the body at exit
    const wall = (performance.now() - t0) / 1000;
    running = false;
    await polling;
    const cadvisorCpu = cadvisor ? cpuSeconds(cadvisor.pid) - cadvisorCpu0 : NaN;
    abort.abort();
    await streaming;
    const engineUsed = engineCpu() - engine0;
    const logs = await (await api("GET", `/containers/${id}/logs?stdout=true`)).text();
    const truthCpu = Number(logs.match(/cpu_seconds=([\d.]+)/)?.[1] ?? NaN);
    for (const [i, c] of cposts.entries()) {
      c.send("finish");
      const r = JSON.parse(await c.line()) as { rows: Array<[number, number, number]>; cpuSeconds: number; maxRssBytes: number };
      await c.end();
      const cpu = r.rows.map((x) => x[1]).filter((x) => !Number.isNaN(x));
      seen.set(i === 0 ? "cpost 10 ms" : "cpost 1 ms", {
        samples: r.rows.length, peakBytes: Math.max(0, ...r.rows.map((x) => x[2]).filter((x) => !Number.isNaN(x))),
        cpuSeenSeconds: cpu.length ? (Math.max(...cpu) - Math.min(...cpu)) / 1e9 : NaN, ownCpuSeconds: r.cpuSeconds, rssBytes: r.maxRssBytes,
      });
    }
    if (cadvisor) {
      const rows = [...cadvisorRows.values()];
      seen.set("cAdvisor 1 s", rows.length === 0 ? "no reading of the container before it was gone (discovery + first housekeeping)" : {
        samples: rows.length, peakBytes: Math.max(...rows.map((r) => r.mem)),
        cpuSeenSeconds: (Math.max(...rows.map((r) => r.cpu)) - Math.min(...rows.map((r) => r.cpu))) / 1e9,
        ownCpuSeconds: cadvisorCpu, rssBytes: rss(cadvisor.pid), note: "watches every container on the host",
      });
    } else seen.set("cAdvisor 1 s", (peers.cadvisor as { skip: string }).skip);
    if (denet) {
      const r = JSON.parse(await denet.line(30_000)) as { rows: Array<[number, number, number]>; cpuSeconds: number; maxRssBytes: number; error: string | null };
      await denet.end();
      let cpuSeen = 0;
      for (let k = 1; k < r.rows.length; k++) cpuSeen += (r.rows[k]![1] / 100) * ((r.rows[k]![0] - r.rows[k - 1]![0]) / 1000);
      seen.set("denet 100 ms", r.rows.length === 0 ? `no sample (${r.error ?? "the process ended before the first"})` : {
        samples: r.rows.length, peakBytes: Math.max(...r.rows.map((x) => x[2])), cpuSeenSeconds: cpuSeen, ownCpuSeconds: r.cpuSeconds, rssBytes: r.maxRssBytes,
        note: "RSS of the pid tree, not the cgroup",
      });
    } else seen.set("denet 100 ms", "skip" in peers.denet ? peers.denet.skip : "the container had no pid");
    seen.set("docker stats", dockerRows.length === 0 ? "no reading before the container was gone" : {
      samples: dockerRows.length, peakBytes: Math.max(...dockerRows.map((r) => r.mem)),
      cpuSeenSeconds: (Math.max(...dockerRows.map((r) => r.cpu)) - Math.min(...dockerRows.map((r) => r.cpu))) / 1e9,
      ownCpuSeconds: engineUsed, rssBytes: enginePids().reduce((s, p) => s + (rss(p, "VmRSS") || 0), 0),
      note: "CPU and RSS: the whole engine (dockerd, containerd, shims) over the span, container start and stop included",
    });
    await api("DELETE", `/containers/${id}?force=true`);
    results.push({ workload, truthCpu, wall, seen });
  }
} finally {
  cadvisor?.kill();
}

const f = (x: number, d = 1): string => (Number.isFinite(x) ? x.toFixed(d) : "–");
const mib = (b: number): string => f(b / MIB, 0);
for (const { workload, truthCpu, wall, seen } of results) {
  const peakNote = Number.isNaN(workload.peakTruth) ? "" : `, truth ${mib(workload.peakTruth)} MiB held 100 ms`;
  console.log(`\n## ${workload.name}: \`cpost-workload ${workload.cmd.join(" ")}\`, ${f(wall, 2)} s from start to exit, workload CPU ${f(truthCpu, 3)} s${peakNote}`);
  console.log("| tool | samples/s | peak memory, MiB | spike seen | CPU seen / truth | own CPU per sample | own CPU, % of a core | RSS, MiB | vs cpost 10 ms: samples/s, CPU/sample, RSS |");
  console.log("|---|---|---|---|---|---|---|---|---|");
  const base = seen.get("cpost 10 ms") as Seen;
  for (const tool of TOOLS) {
    const s = seen.get(tool)!;
    if (typeof s === "string") {
      console.log(`| ${tool} | – | – | – | – | – | – | – | ${s} |`);
      continue;
    }
    const perSample = (s.ownCpuSeconds / s.samples) * 1e6;
    const basePerSample = (base.ownCpuSeconds / base.samples) * 1e6;
    const spike = Number.isNaN(workload.peakTruth) ? "" : s.peakBytes >= 0.9 * workload.peakTruth ? "yes" : "no";
    console.log(
      `| ${tool} | ${f(s.samples / wall)} | ${mib(s.peakBytes)} | ${spike} | ${f(s.cpuSeenSeconds, 3)} s / ${f(truthCpu, 3)} s (${f((100 * s.cpuSeenSeconds) / truthCpu, 0)} %) | ` +
        `${f(perSample, 0)} µs | ${f((100 * s.ownCpuSeconds) / wall, 2)} | ${f(s.rssBytes / MIB, 0)} | ` +
        `${f(s.samples / base.samples, 3)}×, ${f(perSample / basePerSample, 2)}×, ${f(s.rssBytes / base.rssBytes, 2)}×${s.note ? ` (${s.note})` : ""} |`,
    );
  }
}
console.log("\nCPU seen: the rise of each tool's cumulative CPU counter between its first and last reading (denet: its CPU % integrated over its samples);");
console.log("the truth is the workload's own getrusage. Own CPU: the tool's process (utime+stime) while the workload ran; cpost and denet from when they were ready.");
