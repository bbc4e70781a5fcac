/**
 * The prometheus sink against the real thing: Debian's promtool lints its
 * exposition, and a real Prometheus scrapes it; the test reads back through
 * Prometheus's HTTP API exactly the samples (values and timestamps) it wrote.
 */
import { afterAll, expect, test } from "bun:test";
import { CpostError } from "../core/contracts/errors.ts";
import { columnKey, type MetricColumn, type MetricSpec, type RunInfo, type SampleBatch, type SinkOptions } from "../core/contracts/types.ts";
import { sinkFactory } from "../plugins/index.ts";
import prometheusSink, { prometheusFamily, type PrometheusSink } from "../plugins/prometheus.ts";
import { prometheusTest, startPrometheus, type PrometheusServer } from "./prometheus-server.ts";

const createPrometheusSink = (options: SinkOptions) => sinkFactory(prometheusSink)(options) as PrometheusSink;

const CONTAINER = "c0ffee".padEnd(64, "0");

function columns(specs: MetricSpec[]): MetricColumn[] {
  return specs.map((s) => ({ ...s, key: columnKey(s), collector: "test" }));
}

const containerColumns = columns([
  { name: "cpu.usage_ns", unit: "ns", kind: "counter" },
  { name: "cpu.percent", unit: "percent", kind: "gauge" },
  { name: "memory.usage_bytes", unit: "bytes", kind: "gauge" },
  { name: "io.read_bytes", unit: "bytes", kind: "counter" },
  { name: "gpu.utilization_pct", unit: "percent", kind: "gauge", device: 0 },
  { name: "gpu.utilization_pct", unit: "percent", kind: "gauge", device: 1 },
  { name: "gpu.sm_clock_mhz", unit: "mhz", kind: "gauge", device: 0 },
  { name: "gpu.process_memory_bytes", unit: "bytes", kind: "gauge" },
]);
const hostColumns = columns([
  { name: "cpu.percent", unit: "percent", kind: "gauge" },
  { name: "memory.usage_bytes", unit: "bytes", kind: "gauge" },
  { name: "gpu.power_w", unit: "watts", kind: "gauge", device: 0 },
]);

function batch(containerId: string, operator: string, cols: MetricColumn[], rows: Array<{ t: number; v: number[] }>): SampleBatch {
  const values = new Float64Array(rows.length * cols.length);
  rows.forEach((row, r) => values.set(row.v, r * cols.length));
  return {
    operator,
    containerId,
    columns: cols,
    rows: rows.length,
    timestampMs: Float64Array.from(rows.map((r) => r.t)),
    monotonicMs: Float64Array.from(rows.map((_, i) => i)),
    values,
  };
}

function runInfo(id: string, labels?: Record<string, string>, startedAtMs = Date.now()): RunInfo {
  return {
    id,
    pipeline: { file: "p.yaml", apiVersion: "0.4.0", name: "spleen", operators: [], order: [] },
    host: { hostname: "h", cpus: 2, memoryBytes: 1, kernel: "k", arch: "x64", cgroupVersion: 1, engine: "docker", engineVersion: "20.10" },
    collectors: ["test"],
    sinks: ["prometheus"],
    intervalMs: 10,
    startedAtMs,
    cpostVersion: "test",
    labels,
  };
}

const sinks: PrometheusSink[] = [];
let prometheus: PrometheusServer | undefined;
afterAll(async () => {
  for (const s of sinks) await s.close();
  await prometheus?.stop();
});

const ended = { results: [], summaries: [], endedAtMs: 0, interval: { target: 10, p50: 10, p99: 10, samples: 1 }, interrupted: false };

function sink(extra: Record<string, string> = {}): PrometheusSink {
  const s = createPrometheusSink({ options: { "prometheus-listen": "127.0.0.1:0", ...extra } });
  sinks.push(s);
  return s;
}

test("families follow Prometheus naming: base units, _total on counters, gpu scope per device", () => {
  const names = containerColumns.map((c) => prometheusFamily(c, false).name);
  expect(names).toEqual([
    "cpost_container_cpu_usage_seconds_total",
    "cpost_container_cpu_usage_ratio",
    "cpost_container_memory_usage_bytes",
    "cpost_container_io_read_bytes_total",
    "cpost_gpu_utilization_ratio",
    "cpost_gpu_utilization_ratio",
    "cpost_gpu_sm_clock_hertz",
    "cpost_container_gpu_process_memory_bytes",
  ]);
  expect(prometheusFamily(hostColumns[2]!, true)).toMatchObject({ name: "cpost_gpu_power_watts", type: "gauge", scale: 1 });
  expect(prometheusFamily(hostColumns[0]!, true).name).toBe("cpost_host_cpu_usage_ratio");
});

prometheusTest("the exposition is what was written, in base units, and promtool accepts it", async () => {
  const s = sink();
  await s.start(runInfo("run-1", { team: "radiology", job: "clashes", "bad-key": "x\"y\\z\nw" }, 1_700_000_000_000));
  const t = 1_700_000_000_123.4;
  await s.write(batch(CONTAINER, "segment", containerColumns, [
    { t, v: [1e9, 150, 2e8, 4096, 40, 60, 1410, 5e8] },
    { t: t + 10, v: [2.5e9, 125.5, 3e8, 8192, NaN, 65, 1410, 5e8] },
  ]));
  await s.write(batch("", "host", hostColumns, [{ t: t + 5, v: [30, 1.5e9, 71.25] }]));
  const res = await fetch(s.url);
  expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  const text = await res.text();
  const run = 'run_id="run-1",pipeline="spleen",team="radiology",label_job="clashes",bad_key="x\\"y\\\\z\\nw"';
  const ts = Math.round(t + 10);
  expect(text).toContain("# TYPE cpost_container_cpu_usage_seconds_total counter\n");
  expect(text).toContain(`cpost_container_cpu_usage_seconds_total{container="${CONTAINER}",operator="segment",${run}} 2.5 ${ts}\n`);
  expect(text).toContain(`cpost_container_cpu_usage_ratio{container="${CONTAINER}",operator="segment",${run}} 1.255 ${ts}\n`);
  expect(text).toContain(`cpost_container_io_read_bytes_total{container="${CONTAINER}",operator="segment",${run}} 8192 ${ts}\n`);
  // NaN in the last row: the newest measured reading (row 0) is exposed, with its own time.
  expect(text).toContain(`cpost_gpu_utilization_ratio{container="${CONTAINER}",operator="segment",gpu="0",${run}} 0.4 ${Math.round(t)}\n`);
  expect(text).toContain(`cpost_gpu_utilization_ratio{container="${CONTAINER}",operator="segment",gpu="1",${run}} 0.65 ${ts}\n`);
  expect(text).toContain(`cpost_gpu_sm_clock_hertz{container="${CONTAINER}",operator="segment",gpu="0",${run}} 1410000000 ${ts}\n`);
  expect(text).toContain(`cpost_host_memory_usage_bytes{operator="host",${run}} 1500000000 ${Math.round(t + 5)}\n`);
  expect(text).toContain(`cpost_gpu_power_watts{operator="host",gpu="0",${run}} 71.25 ${Math.round(t + 5)}\n`);
  // Stamped with the newest reading, like every other series of the run.
  expect(text).toContain(`cpost_run_info{${run}} 1 ${ts}\n`);
  // One HELP/TYPE per family even with several series in it.
  expect(text.match(/# TYPE cpost_gpu_utilization_ratio /g)).toHaveLength(1);

  const lint = Bun.spawn(["promtool", "check", "metrics"], { stdin: new TextEncoder().encode(text), stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(lint.stdout).text(), new Response(lint.stderr).text(), lint.exited]);
  expect({ code, out, err }).toEqual({ code: 0, out: "", err: "" });

  // Scraped since the last write: end does not wait, and the run's series leave the endpoint.
  const before = performance.now();
  await s.end(ended);
  expect(performance.now() - before).toBeLessThan(500);
  expect(await (await fetch(s.url)).text()).toBe("");
});

test("a port held by another server is a clear error; sinks of one process share their address", async () => {
  const other = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("not cpost") });
  try {
    const busy = (() => {
      try {
        createPrometheusSink({ options: { "prometheus-listen": `127.0.0.1:${other.port}` } });
      } catch (e) {
        return e;
      }
    })() as CpostError;
    expect(busy).toBeInstanceOf(CpostError);
    expect(busy.code).toBe("input");
    expect(busy.message).toBe(`prometheus sink: 127.0.0.1:${other.port} is already in use by another process`);
    expect(busy.hint).toContain("--prometheus-listen");
  } finally {
    other.stop(true);
  }
  expect(() => createPrometheusSink({ options: { "prometheus-listen": "localhost:http" } })).toThrow(/--prometheus-listen "localhost:http" is not an address/);
  expect(() => createPrometheusSink({ options: { "prometheus-listen": "127.0.0.1:0", "prometheus-timestamps": "yes" } })).toThrow(/expected true or false/);

  // Two sessions of a monitor: a fresh sink each, one endpoint; between them it answers, empty.
  const first = sink();
  const second = sink({ "prometheus-listen": new URL(first.url).host });
  expect(second.url).toBe(first.url);
  await first.start(runInfo("session-1"));
  await expect((async () => second.start(runInfo("session-2")))()).rejects.toThrow(/already exposes another run/);
  await first.write(batch(CONTAINER, "a", hostColumns.slice(0, 1), [{ t: 1_700_000_000_000, v: [50] }]));
  expect(await (await fetch(first.url)).text()).toContain('cpost_container_cpu_usage_ratio{container="' + CONTAINER + '",operator="a",run_id="session-1",pipeline="spleen"} 0.5 1700000000000\n');
  await first.end(ended);
  expect((await fetch(first.url)).status).toBe(200);
  expect(await (await fetch(first.url)).text()).toBe("");
  await second.start(runInfo("session-2", undefined, 1_700_000_000_500));
  expect(await (await fetch(first.url)).text()).toBe('# HELP cpost_run_info The run (or monitor session) cpost is recording now.\n# TYPE cpost_run_info gauge\ncpost_run_info{run_id="session-2",pipeline="spleen"} 1 1700000000500\n');
  await second.end(ended);
});

test("a container whose columns change keeps one series per label set", async () => {
  const s = sink();
  await s.start(runInfo("run-3", undefined, 1_700_000_000_000));
  await s.write(batch(CONTAINER, "op", containerColumns, [{ t: 1_700_000_000_100, v: [1e9, 50, 1, 1, 1, 1, 1, 1] }]));
  // The sampler hands a new columns array when a probe drops out: same metrics, same labels.
  await s.write(batch(CONTAINER, "op", containerColumns.slice(0, 3), [{ t: 1_700_000_000_200, v: [2e9, 60, 2] }]));
  const text = await (await fetch(s.url)).text();
  expect(text.match(/^cpost_container_cpu_usage_seconds_total\{/gm)).toHaveLength(1);
  expect(text).toContain('cpost_container_cpu_usage_seconds_total{container="' + CONTAINER + '",operator="op",run_id="run-3",pipeline="spleen"} 2 1700000000200\n');
  // The series the new columns lack keep their last reading.
  expect(text).toContain(`cpost_container_io_read_bytes_total{container="${CONTAINER}",operator="op",run_id="run-3",pipeline="spleen"} 1 1700000000100\n`);
  await s.end(ended);
});

prometheusTest("a real Prometheus scrapes exactly the samples written, and end waits for the last one", async () => {
  const s = sink();
  prometheus = await startPrometheus([new URL(s.url).host]);
  await s.start(runInfo("run-2", { site: "lab" }));
  const written: Array<[number, number]> = [];
  let usage = 0;
  const writeOne = async () => {
    usage += 0.25e9;
    const t = Date.now();
    written.push([t, usage / 1e9]);
    await s.write(batch(CONTAINER, "writer", containerColumns, [{ t, v: [usage, 100, 1e8, 0, 1, 2, 3, 4] }]));
  };
  const series = 'cpost_container_cpu_usage_seconds_total{operator="writer",run_id="run-2",site="lab"}';
  const p = prometheus;
  // Keep writing until Prometheus has stored three scrapes.
  await p.waitFor("three scraped samples", async () => {
    await writeOne();
    const found = await p.rawSamples(series);
    return found[0] && found[0].samples.length >= 3 ? found : undefined;
  });
  await writeOne();
  const last = written[written.length - 1]!;
  await s.end(ended);

  const [stored] = await p.waitFor("the last sample", async () => {
    const found = await p.rawSamples(series);
    return found[0]?.samples.some(([t]) => t === last[0]) ? found : undefined;
  }, 5000);
  expect(stored!.metric).toMatchObject({ __name__: "cpost_container_cpu_usage_seconds_total", container: CONTAINER, operator: "writer", pipeline: "spleen", job: "cpost" });
  // Every stored sample is one the sink was given, at the time it was measured.
  const byTime = new Map(written);
  for (const [t, v] of stored!.samples) expect(byTime.get(t)).toBe(v);
  const metadata = (await (await fetch(`${p.url}/api/v1/metadata?metric=cpost_container_cpu_usage_seconds_total`)).json()) as { data: Record<string, Array<{ type: string }>> };
  expect(metadata.data.cpost_container_cpu_usage_seconds_total?.[0]?.type).toBe("counter");
  expect(await (await fetch(s.url)).text()).toBe("");
});

