/**
 * `cpost monitor` end to end, all real but the GPU and Elasticsearch: the
 * monitor runs as its own process (`bun core/main.ts monitor serve`), the
 * test starts labelled containers on the real engine, switches a session on
 * and off with the real client, and finds in the ES test server and in a
 * real Prometheus exactly the samples of the active window. The GPU is the
 * NVML double (the real ABI), so the GPU panels of the Grafana dashboard are
 * checked against series and documents that really went through the sinks.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { grafanaDashboard } from "../core/cli/commands/grafana-dashboard.ts";
import { connectDocker, type DockerClient } from "../core/engine/docker.ts";
import { startEsServer, type EsTestServer } from "./es-server.ts";
import { buildNvmlDouble, type NvmlDouble } from "./nvml/double.ts";
import { freePort, PROMETHEUS, prometheusTest, startPrometheus, type PrometheusServer } from "./prometheus-server.ts";
import { BUN, cpostSource, dockerTest, hasDocker, REPO, TEST_IMAGE } from "./support.ts";

/** Needs the engine and Prometheus: skipped locally without either, failed in CI. */
const monitorTest = (name: string, fn: () => Promise<void>, timeoutMs: number) => (PROMETHEUS ? dockerTest(name, fn, timeoutMs) : prometheusTest(name, fn, timeoutMs));

const TAG = `monitor-${process.pid}-${Date.now().toString(36)}`;
const LABEL = "cpost.test";
type Json = Record<string, unknown>;

/** A `cpost monitor serve` child process and what it printed. */
interface MonitorProcess {
  url: string;
  proc: ReturnType<typeof Bun.spawn>;
  stderr(): string;
}

const children: Array<ReturnType<typeof Bun.spawn>> = [];

async function spawnMonitor(args: string[], env: Record<string, string> = {}): Promise<MonitorProcess> {
  const proc = Bun.spawn([BUN, join(REPO, "core/main.ts"), "monitor", "serve", ...args], {
    cwd: REPO,
    env: { ...process.env, ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  children.push(proc);
  let text = "";
  const reader = (proc.stderr as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  void (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      text += decoder.decode(value, { stream: true });
    }
  })();
  const deadline = Date.now() + 30_000;
  for (;;) {
    const m = /listening on (http:\/\/\S+)/.exec(text);
    if (m) return { url: m[1]!, proc, stderr: () => text };
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`monitor did not start (exit ${proc.exitCode}):\n${text}`);
    await Bun.sleep(50);
  }
}

async function client(args: string[], env: Record<string, string> = {}) {
  return cpostSource(["monitor", ...args], { env, timeoutMs: 60_000 });
}

/** Leaves of a document as dotted paths. */
function paths(doc: Json, prefix = ""): string[] {
  return Object.entries(doc).flatMap(([k, v]) => (v !== null && typeof v === "object" && !Array.isArray(v) ? paths(v as Json, `${prefix}${k}.`) : [`${prefix}${k}`]));
}

function field(doc: Json, path: string): unknown {
  return path.split(".").reduce<unknown>((node, key) => (node as Json | undefined)?.[key], doc);
}

let engine: DockerClient;
let es: EsTestServer;
let prometheus: PrometheusServer;
let nvml: NvmlDouble;
let monitor: MonitorProcess;
let promPort: number;
const spoolDir = mkdtempSync(join(tmpdir(), "cpost-monitor-spool-"));

async function runContainer(name: string, cmd: string[]): Promise<string> {
  const id = await engine.createContainer({ name: `${TAG}-${name}`, image: TEST_IMAGE, cmd, env: {}, labels: { [LABEL]: TAG }, mounts: [] });
  await engine.startContainer(id);
  return id;
}

beforeAll(async () => {
  if (!hasDocker || !PROMETHEUS) return;
  engine = await connectDocker();
  es = startEsServer();
  nvml = await buildNvmlDouble();
  nvml.script({
    devices: [
      { name: "Fake A100", uuid: "GPU-0000", util: [37, 12], memory: [40e9, 5e9, 1e8], powerMw: 123_000, temperatureC: 51, smClockMhz: 1410 },
      { name: "Fake A100", uuid: "GPU-0001", util: [80, 40], memory: [40e9, 20e9, 1e8], powerMw: 250_000, temperatureC: 64, smClockMhz: 1410 },
    ],
  });
  promPort = freePort();
  prometheus = await startPrometheus([`127.0.0.1:${promPort}`]);
  monitor = await spawnMonitor(
    ["--listen", "127.0.0.1:0", "--interval", "100ms", "--sinks", "es,prometheus", "--es-url", es.url, "--es-flush", "200ms", "--es-spool-dir", spoolDir, "--prometheus-listen", `127.0.0.1:${promPort}`, "--label", `${LABEL}=${TAG}`],
    nvml.env(),
  );
}, 90_000);

afterAll(async () => {
  if (process.env.CPOST_TEST_DEBUG) console.error(monitor?.stderr());
  for (const child of children) child.kill("SIGKILL");
  if (engine) for (const c of await engine.listContainers([`${LABEL}=${TAG}`])) await engine.removeContainer(c.id, { force: true });
  await prometheus?.stop();
  es?.close();
  nvml?.remove();
  rmSync(spoolDir, { recursive: true, force: true });
});

describe("cpost monitor", () => {
  monitorTest("samples only between start and stop, into Elasticsearch and a real Prometheus; the dashboard's queries find data", async () => {
    const burner = await runContainer("burner", ["cpost-workload", "cpu", "1", "60"]);
    const holder = await runContainer("holder", ["cpost-workload", "mem", "64", "60"]);
    // Prometheus scrapes the idle endpoint before the session: no cpost series may come of it.
    await prometheus.waitFor("two scrapes before the session", async () => ((await prometheus.rawSamples(`up{instance="127.0.0.1:${promPort}"}`))[0]?.samples.length ?? 0) >= 2 || undefined);

    const started = await client(["start", "--url", monitor.url, "--job", "e2e", "--label", "site=lab", "--json"]);
    expect(started.stderr).toBe("");
    expect(started.code).toBe(0);
    const session = (JSON.parse(started.stdout) as { session: { id: string; startedAtMs: number } }).session;
    const again = await client(["start", "--url", monitor.url]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain(`session ${session.id} (e2e) is already active`);

    // A container that starts and ends inside the session is found and followed to its end.
    const brief = await runContainer("brief", ["cpost-workload", "sleep-ms", "1500"]);
    const watched = async () => {
      const status = (await (await fetch(`${monitor.url}/status`)).json()) as { active: { containers: Array<{ id: string; samples: number }> } };
      return status.active.containers;
    };
    await prometheus.waitFor("the brief container watched and gone", async () => {
      const containers = await watched();
      const state = await engine.inspectContainer(brief);
      return containers.some((c) => c.id === brief && c.samples > 0) && !state.running && containers.filter((c) => c.samples >= 10).length >= 2 ? true : undefined;
    }, 20_000);
    // Prometheus has taken a few scrapes of the session.
    await prometheus.waitFor("session series", async () => (await prometheus.rawSamples(`cpost_container_memory_usage_bytes{run_id="${session.id}"}`)).some((s) => s.samples.length >= 3) || undefined);

    const stopped = await client(["stop", "--url", monitor.url, "--json"]);
    expect(stopped.code).toBe(0);
    const window = (JSON.parse(stopped.stdout) as { session: { id: string; startedAtMs: number; endedAtMs: number; samples: number; containers: Array<{ id: string; operator: string }> } }).session;
    expect(window.id).toBe(session.id);
    expect(window.startedAtMs).toBe(session.startedAtMs);
    expect(new Set(window.containers.map((c) => c.id))).toEqual(new Set([burner, holder, brief]));
    expect(window.containers.find((c) => c.id === brief)?.operator).toBe(`${TAG}-brief`);
    const noSession = await client(["stop", "--url", monitor.url]);
    expect(noSession.code).toBe(2);
    expect(noSession.stderr).toContain("no session is active");
    // The containers still run and Prometheus still scrapes: nothing after the stop may arrive.
    const upCount = async () => (await prometheus.rawSamples(`up{instance="127.0.0.1:${promPort}"}`))[0]?.samples.length ?? 0;
    const scrapesAtStop = await upCount();
    await prometheus.waitFor("two scrapes after the session", async () => ((await upCount()) >= scrapesAtStop + 2 ? true : undefined));

    const inWindow = (ms: number) => ms >= window.startedAtMs && ms <= window.endedAtMs;

    // Elasticsearch: every document is of this session and inside its window.
    const containerDocs = [...es.docs("metrics-cpost.container-default").values()] as Json[];
    const gpuDocs = [...es.docs("metrics-cpost.gpu-default").values()] as Json[];
    expect(es.indices().sort()).toEqual(["metrics-cpost.container-default", "metrics-cpost.gpu-default"]);
    expect(es.protocolErrors).toEqual([]);
    for (const doc of [...containerDocs, ...gpuDocs]) {
      expect(field(doc, "cpost.run_id")).toBe(session.id);
      expect(field(doc, "cpost.pipeline")).toBe("e2e");
      expect(inWindow(Date.parse(field(doc, "@timestamp") as string))).toBe(true);
    }
    const byContainer = Map.groupBy(containerDocs, (d) => field(d, "container.id") as string);
    expect(new Set(byContainer.keys())).toEqual(new Set(["", burner, holder, brief]));
    expect(containerDocs.length).toBe(window.samples);
    // The window is covered: samples within half a second of both ends (interval 100 ms).
    const times = containerDocs.map((d) => Date.parse(field(d, "@timestamp") as string));
    expect(Math.min(...times) - window.startedAtMs).toBeLessThan(500);
    expect(window.endedAtMs - Math.max(...times)).toBeLessThan(500);
    // What the containers really did: one spins (its share of a loaded 2-core machine varies, so compared with the
    // one that sleeps), the other holds 64 MiB.
    const readings = (id: string, path: string) => byContainer.get(id)!.map((d) => Number(field(d, path) ?? NaN)).filter((v) => !Number.isNaN(v));
    const cpuTime = (id: string) => Math.max(...readings(id, "metrics.cpu.usage_ns")) - Math.min(...readings(id, "metrics.cpu.usage_ns"));
    expect(cpuTime(burner)).toBeGreaterThan(10 * cpuTime(holder) + 1e7);
    expect(Math.max(...readings(holder, "metrics.memory.usage_bytes"))).toBeGreaterThanOrEqual(64 << 20);
    expect(new Set(gpuDocs.map((d) => field(d, "gpu.index")))).toEqual(new Set([0, 1]));
    expect(gpuDocs.find((d) => field(d, "gpu.index") === 1 && field(d, "container.id") === "")).toMatchObject({ gpu: { utilization_pct: 80, power_w: 250 } });

    // Prometheus: the session's series hold only samples inside the window.
    const series = await prometheus.rawSamples(`{__name__=~"cpost_.+", run_id="${session.id}"}`, 600);
    expect(series.length).toBeGreaterThan(10);
    for (const s of series) {
      expect(s.metric).toMatchObject({ pipeline: "e2e", site: "lab", job: "cpost" });
      for (const [t] of s.samples) expect({ series: s.metric.__name__, t, inWindow: inWindow(t) }).toEqual({ series: s.metric.__name__, t, inWindow: true });
    }
    const all = await prometheus.rawSamples(`{__name__=~"cpost_.+"}`, 600);
    expect(all.every((s) => s.metric.run_id === session.id)).toBe(true);
    const memory = series.filter((s) => s.metric.__name__ === "cpost_container_memory_usage_bytes");
    expect(new Set(memory.map((s) => s.metric.container))).toEqual(new Set([burner, holder, brief]));
    expect(Math.max(...memory.find((s) => s.metric.container === holder)!.samples.map(([, v]) => v))).toBeGreaterThanOrEqual(64 << 20);

    // The Prometheus dashboard: every query returns data over the window.
    const dashboard = grafanaDashboard({ source: "prometheus", timezone: "utc" });
    const exprs = (dashboard.panels as Json[]).flatMap((p) => ((p.targets as Json[] | undefined) ?? []).map((t) => ({ panel: p.title as string, expr: t.expr as string })));
    expect(exprs.length).toBeGreaterThanOrEqual(10);
    for (const { panel, expr } of exprs) {
      const query = expr.replaceAll("$pipeline", "e2e").replaceAll("$operator", ".*").replaceAll("$__rate_interval", "2s");
      const res = (await (await fetch(`${prometheus.url}/api/v1/query_range?query=${encodeURIComponent(query)}&start=${window.startedAtMs / 1000}&end=${window.endedAtMs / 1000}&step=0.5`)).json()) as { status: string; data: { result: unknown[] } };
      expect({ panel, expr, status: res.status, found: res.data.result.length > 0 }).toEqual({ panel, expr, status: "success", found: true });
    }
    // The Elasticsearch dashboard: every field a panel or variable reads is in the documents written.
    const written = new Set([...containerDocs, ...gpuDocs].flatMap((d) => paths(d)));
    for (const target of (grafanaDashboard({ source: "es", timezone: "utc" }).panels as Json[]).flatMap((p) => (p.targets as Json[] | undefined) ?? [])) {
      const fields = [target.timeField, ...(target.metrics as Json[]).filter((m) => m.type !== "derivative").map((m) => m.field), ...(target.bucketAggs as Json[]).map((b) => b.field), ...[...String(target.query).matchAll(/([\w.@]+):/g)].map((m) => m[1])];
      for (const f of fields) expect({ field: f, written: written.has(f as string) }).toEqual({ field: f, written: true });
    }
  }, 120_000);

  monitorTest("refuses a busy port, an open address without a token, and requests without the token", async () => {
    const port = new URL(monitor.url).port;
    const busy = await cpostSource(["monitor", "serve", "--listen", `127.0.0.1:${port}`, "--sinks", "prometheus", "--prometheus-listen", "127.0.0.1:0"]);
    expect(busy.code).toBe(2);
    expect(busy.stderr).toContain(`cpost monitor: 127.0.0.1:${port} is already in use by another process`);
    const open = await cpostSource(["monitor", "serve", "--listen", "0.0.0.0:0"]);
    expect(open.code).toBe(2);
    expect(open.stderr).toContain("--listen 0.0.0.0:0 accepts connections from other machines, so the control API needs a token");

    const dir = mkdtempSync(join(tmpdir(), "cpost-monitor-token-"));
    try {
      writeFileSync(join(dir, "token"), "s3cret-token-for-test\n");
      const guarded = await spawnMonitor(["--listen", "0.0.0.0:0", "--token-file", join(dir, "token"), "--sinks", "prometheus", "--prometheus-listen", "127.0.0.1:0", "--label", `${LABEL}=${TAG}-none`]);
      const url = `http://127.0.0.1:${new URL(guarded.url).port}`;
      expect((await fetch(`${url}/status`)).status).toBe(401);
      expect((await fetch(`${url}/start`, { method: "POST", headers: { Authorization: "Bearer wrong-token-of-same-len" } })).status).toBe(401);
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      const denied = await client(["start", "--url", url]);
      expect(denied.code).toBe(2);
      expect(denied.stderr).toContain("missing or wrong token");
      const bad = await fetch(`${url}/start`, { method: "POST", headers: { Authorization: "Bearer s3cret-token-for-test" }, body: '{"labels": {"9bad": "x"}}' });
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as Json).error).toContain('label name "9bad"');
      const ok = await client(["start", "--url", url, "--token-file", join(dir, "token"), "--job", "guarded"]);
      expect(ok.stdout).toMatch(/^session \S+ started: guarded at /);
      // SIGTERM ends the active session, flushes the sinks and exits 0.
      guarded.proc.kill("SIGTERM");
      expect(await guarded.proc.exited).toBe(0);
      expect(guarded.stderr()).toMatch(/SIGTERM: stopping[\s\S]*session \S+ stopped at shutdown[\s\S]*stopped\n$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const gone = await client(["status", "--url", "http://127.0.0.1:9"]);
    expect(gone.code).toBe(2);
    expect(gone.stderr).toContain("no cpost monitor answers at http://127.0.0.1:9");
  }, 60_000);
});

test("the monitor's help lists its sub-commands", async () => {
  const help = await cpostSource(["monitor", "--help"]);
  expect(help.code).toBe(0);
  for (const word of ["serve", "start", "stop", "status"]) expect(help.stdout).toContain(word);
  const serve = await cpostSource(["monitor", "serve", "--help"]);
  expect(serve.stdout).toContain("--token-file");
});

test("the example pipeline switches the monitor on first and off last", async () => {
  const checked = await cpostSource(["validate", "examples/monitoring/pipeline.yaml", "--json"]);
  expect(checked.code).toBe(0);
  const pipeline = JSON.parse(checked.stdout) as { order: string[]; operators: Array<{ name: string; command: string[] }> };
  expect(pipeline.order).toEqual(["monitor-start", "segment", "monitor-stop"]);
  expect(pipeline.operators[0]!.command.join(" ")).toContain("cpost monitor start --job monitored-example");
  expect(pipeline.operators[2]!.command.join(" ")).toContain("cpost monitor stop");
});
