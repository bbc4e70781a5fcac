/**
 * Overhead of `cpost monitor serve` watching 20 running containers (and the
 * host), at 1 s and at 10 ms intervals, with the es and prometheus sinks
 * (the ES test server runs in its own process; /metrics is scraped every
 * second as Prometheus would). For each interval it prints the monitor
 * process's CPU (% of one core, from /proc/<pid>/stat) and RSS:
 *
 *   idle     serving, no session (nothing is sampled)
 *   session  sampling 20 containers + host into both sinks
 *   bare     baseline measured in the same run: this process opening the same
 *            collectors' probes on the same targets and reading them on a
 *            timer at the same interval, no sampler thread, sinks or HTTP
 *
 * and the ratio session / bare: what the monitor costs beyond reading the files.
 *
 *   node_modules/.bin/bun bench/monitor.ts [seconds-per-window=10] [containers=20]
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadBuiltinCollector } from "../collectors/index.ts";
import { connectDocker } from "../core/engine/docker.ts";
import { isUnavailable, type MetricBuffer, type Probe, type Target } from "../core/contracts/types.ts";

const seconds = Number(process.argv[2] ?? 10);
const count = Number(process.argv[3] ?? 20);
const REPO = join(import.meta.dir, "..");
const TAG = `bench-monitor-${process.pid}`;
const TICK_S = 100; // USER_HZ
const engine = await connectDocker();

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / TICK_S;
}
const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;

/** CPU % of one core of `pid` over `seconds`, scraping /metrics every second meanwhile. */
async function measure(pid: number, metricsUrl: string): Promise<{ cpu: number; rss: number }> {
  const c0 = cpuSeconds(pid);
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    await fetch(metricsUrl).then((r) => r.text());
    await Bun.sleep(1000);
  }
  return { cpu: ((cpuSeconds(pid) - c0) / ((performance.now() - t0) / 1000)) * 100, rss: rssMb(pid) };
}

/** The baseline: the same probes read on a plain timer in this process. */
async function bare(intervalMs: number, targets: Target[]): Promise<number> {
  const [cgroup, blkio, host] = await Promise.all([loadBuiltinCollector("cgroup"), loadBuiltinCollector("blkio"), loadBuiltinCollector("host")]);
  const probes: Probe[] = [];
  for (const t of targets) {
    for (const c of t.kind === "host" ? [host] : [cgroup, blkio]) {
      const p = c.open(t);
      if (!isUnavailable(p)) probes.push(p);
    }
  }
  const buffers: MetricBuffer[] = probes.map((p) => ({ values: new Float64Array(p.metrics.length), base: 0, monotonicMs: 0 }));
  const u0 = process.cpuUsage();
  const t0 = performance.now();
  let reads = 0;
  await new Promise<void>((done) => {
    const timer = setInterval(() => {
      for (let i = 0; i < probes.length; i++) {
        buffers[i]!.monotonicMs = performance.now();
        probes[i]!.read(buffers[i]!);
      }
      reads++;
      if (performance.now() - t0 >= seconds * 1000) {
        clearInterval(timer);
        done();
      }
    }, intervalMs);
  });
  const u = process.cpuUsage(u0);
  for (const p of probes) p.close();
  return ((u.user + u.system) / 1e6 / ((performance.now() - t0) / 1000)) * 100 * (reads > 0 ? 1 : 0);
}

const es = Bun.spawn([process.execPath, join(REPO, "test/es-server.ts"), "--ids-only"], { stdout: "pipe", stderr: "inherit" });
const esUrl = (JSON.parse(new TextDecoder().decode((await es.stdout.getReader().read()).value)) as { url: string }).url;
const ids: string[] = [];
const rows: string[] = [];
try {
  for (let i = 0; i < count; i++) {
    const id = await engine.createContainer({ name: `${TAG}-${i}`, image: "cpost-test/busybox:1", cmd: ["cpost-workload", "sleep-ms", "600000"], env: {}, labels: { "cpost.bench": TAG }, mounts: [] });
    await engine.startContainer(id);
    ids.push(id);
  }
  const targets: Target[] = [
    { kind: "host", containerId: "", pid: 0, engine: engine.info.engine, operator: "host" },
    ...(await Promise.all(ids.map(async (id, i) => ({ kind: "container" as const, containerId: id, pid: (await engine.inspectContainer(id)).pid, engine: engine.info.engine, cgroupDriver: engine.info.cgroupDriver, operator: `c${i}` })))),
  ];
  console.log(`cpost monitor overhead: ${count} running containers + host, collectors cgroup,blkio + host, sinks es,prometheus, ${seconds} s windows, ${navigator.hardwareConcurrency} cores`);
  for (const interval of ["1s", "10ms"]) {
    const probe = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
    const promPort = probe.port!;
    probe.stop(true);
    const proc = Bun.spawn(
      [process.execPath, join(REPO, "core/main.ts"), "monitor", "serve", "--listen", "127.0.0.1:0", "--interval", interval, "--collectors", "cgroup,blkio", "--host-collectors", "host",
        "--label", `cpost.bench=${TAG}`, "--sinks", "es,prometheus", "--es-url", esUrl, "--prometheus-listen", `127.0.0.1:${promPort}`],
      { stdout: "ignore", stderr: "pipe", env: { ...process.env, CPOST_NVML_LIB: "/nonexistent" } },
    );
    const reader = proc.stderr.getReader();
    let text = "";
    while (!/listening on (\S+)/.test(text)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`monitor did not start:\n${text}`);
      text += new TextDecoder().decode(value);
    }
    void (async () => { while (!(await reader.read()).done); })();
    const url = /listening on (\S+)/.exec(text)![1]!;
    const metricsUrl = `http://127.0.0.1:${promPort}/metrics`;
    const idle = await measure(proc.pid, metricsUrl);
    await fetch(`${url}/start`, { method: "POST", body: JSON.stringify({ job: "bench" }) });
    for (;;) {
      const status = (await (await fetch(`${url}/status`)).json()) as { active: { containers: unknown[] } };
      if (status.active.containers.length >= count) break;
      await Bun.sleep(100);
    }
    const session = await measure(proc.pid, metricsUrl);
    const stopped = (await (await fetch(`${url}/stop`, { method: "POST" })).json()) as { session: { samples: number; startedAtMs: number; endedAtMs: number; interval: { p50: number; p99: number } } };
    proc.kill("SIGTERM");
    await proc.exited;
    const baseline = await bare(interval === "1s" ? 1000 : 10, targets);
    const s = stopped.session;
    // Per target, from the counts: the sampler's histogram tops out at 100 ms, so at 1 s its p50/p99 say 100.
    const meanMs = (s.endedAtMs - s.startedAtMs) / (s.samples / (count + 1) - 1);
    const percentiles = interval === "10ms" ? `, sampler p50 ${s.interval.p50.toFixed(2)} ms p99 ${s.interval.p99.toFixed(2)} ms` : "";
    rows.push(
      `interval ${interval.padEnd(4)}  idle ${idle.cpu.toFixed(1).padStart(5)} % CPU ${idle.rss.toFixed(0).padStart(4)} MB | session ${session.cpu.toFixed(1).padStart(5)} % CPU ${session.rss.toFixed(0).padStart(4)} MB, ${s.samples} samples, mean interval ${meanMs.toFixed(1)} ms${percentiles} | bare reads ${baseline.toFixed(1).padStart(5)} % CPU | session/bare ${(session.cpu / Math.max(baseline, 0.05)).toFixed(1)}x`,
    );
    console.log(rows[rows.length - 1]);
  }
} finally {
  for (const id of ids) await engine.removeContainer(id, { force: true });
  es.kill();
}
