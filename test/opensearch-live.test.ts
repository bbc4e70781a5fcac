/**
 * The es sink and `cpost es setup` against a real search engine: an
 * OpenSearch node resolved with Maven and started by test/opensearch/node.ts.
 * Real pipelines on the real Docker engine, recorded with `--record`; what
 * the engine stored is compared with the recording: the mappings it made
 * (`_mapping`), every sample exactly once (by `@timestamp`, container and
 * monotonic time), and per-container aggregations (`_search`) against the
 * recorded values. Rollover of the data stream during a run, and during an
 * outage with a spool; what a resend after a rollover does to duplicates.
 */
import { afterAll, beforeAll, expect } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { MetricColumn, RunInfo, RunResult, SampleBatch } from "../core/contracts/types.ts";
import { readRecording } from "../core/sinks/recording.ts";
import elasticsearchSink from "../plugins/elasticsearch/index.ts";
import { sampleKey, spoolFiles } from "./es-server.ts";
import { startLink, type Link } from "./opensearch/link.ts";
import { openSearchTest, openSearchUnavailable, startOpenSearch, type OpenSearchNode } from "./opensearch/node.ts";
import { BUN, cpostSource, defineTestScratch, hasDocker, IN_CI, REPO, until } from "./support.ts";
import { sinkFactory } from "../plugins/index.ts";

const elasticsearch = sinkFactory(elasticsearchSink);

const { scratch, pids, cleanup } = defineTestScratch("opensearch-live");
let node: OpenSearchNode;
const links: Link[] = [];

beforeAll(async () => {
  if (openSearchUnavailable !== undefined) return; // the tests say why
  node = await startOpenSearch({ name: "live-1" });
  console.log(`opensearch node up in ${Math.round(node.startedInMs)} ms at ${node.url}`);
}, 120_000);
afterAll(async () => {
  for (const link of links) link.close();
  await node?.stop();
  await cleanup();
});

type Json = Record<string, any>;

async function os(method: string, path: string, body?: unknown): Promise<{ status: number; body: Json }> {
  const res = await fetch(`${node.url}${path}`, {
    method,
    headers: body === undefined ? {} : { "content-type": typeof body === "string" ? "application/x-ndjson" : "application/json" },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Json };
}

/** `os` that must succeed. */
async function ok(method: string, path: string, body?: unknown): Promise<Json> {
  const answer = await os(method, path, body);
  if (answer.status >= 300) throw new Error(`${method} ${path}: HTTP ${answer.status} ${JSON.stringify(answer.body).slice(0, 500)}`);
  return answer.body;
}

/** Docker tests need the engine; in CI its absence fails them, as everywhere. */
function liveTest(name: string, fn: () => Promise<void>, timeoutMs = 120_000): void {
  if (!hasDocker && !IN_CI) return openSearchTest(`${name} (skipped: no Docker engine; run test/setup.sh)`, () => {}, timeoutMs);
  openSearchTest(name, async () => {
    if (!hasDocker) throw new Error("no Docker engine answers on /var/run/docker.sock (CI requires one; run test/setup.sh)");
    await fn();
  }, timeoutMs);
}

function pipeline(seconds: number, operators = 1): { file: string; input: string } {
  const dir = scratch();
  const file = join(dir, "pipeline.yaml");
  const ops = Array.from({ length: operators }, (_, i) =>
    `  - name: busy${i}\n    container: {image: cpost-test/busybox, tag: "1", command: ["cpost-workload", "cpu", "1", "${seconds}"]}\n    input: [{path: /input}]\n`).join("");
  writeFileSync(file, `api-version: 0.4.0\nname: opensearch-live\noperators:\n${ops}`);
  mkdirSync(join(dir, "input"));
  writeFileSync(join(dir, "input", "x"), "x\n");
  return { file, input: join(dir, "input") };
}

/** `cpost run … --sinks table,es --record …` into `url`; resolves when it exits. */
function runCpost(url: string, namespace: string, seconds: number, extra: string[] = [], operators = 1) {
  const { file, input } = pipeline(seconds, operators);
  const recording = join(scratch(), "run.msgpack");
  const spool = scratch();
  const args = ["run", file, input, "--interval", "5ms", "--sinks", "table,es", "--record", recording, "--es-url", url,
    "--es-namespace", namespace, "--es-spool-dir", spool, "--es-flush", "100ms", "--es-backoff-max", "300ms", ...extra];
  const proc = Bun.spawn([BUN, join(REPO, "core/main.ts"), ...args], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
  pids.push(proc.pid);
  const timer = setTimeout(() => proc.kill("SIGKILL"), 100_000);
  const done = Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]).then(([stdout, stderr, code]) => {
    clearTimeout(timer);
    return { stdout, stderr, code, recording };
  });
  return { spool, done };
}

interface Recorded {
  keys: string[];
  /** Per container: rows, max cpu.percent, max memory.usage_bytes. */
  byContainer: Map<string, { rows: number; cpuMax: number; memoryMax: number }>;
}

function recorded(path: string): Recorded {
  const recording = readRecording(path);
  expect(recording.complete).toBe(true);
  const keys: string[] = [];
  const byContainer = new Map<string, { rows: number; cpuMax: number; memoryMax: number }>();
  for (const op of recording.operators) {
    for (const b of op.batches) {
      const cpu = b.columns.findIndex((c) => c.name === "cpu.percent" && c.device === undefined);
      const memory = b.columns.findIndex((c) => c.name === "memory.usage_bytes" && c.device === undefined);
      const entry = byContainer.get(b.containerId) ?? { rows: 0, cpuMax: -Infinity, memoryMax: -Infinity };
      for (let r = 0; r < b.rows; r++) {
        keys.push(sampleKey(b.containerId, b.timestampMs[r]!, b.monotonicMs[r]!));
        const at = (i: number) => b.values[r * b.columns.length + i]!;
        entry.rows++;
        // The mapping stores cpu.percent as float: the engine's max is the recorded value in single precision.
        if (Number.isFinite(at(cpu))) entry.cpuMax = Math.max(entry.cpuMax, Math.fround(at(cpu)));
        if (Number.isFinite(at(memory))) entry.memoryMax = Math.max(entry.memoryMax, at(memory));
      }
      byContainer.set(b.containerId, entry);
    }
  }
  return { keys, byContainer };
}

/** How often each sample is stored in data stream `stream` (all its backing indices). */
async function storedSamples(stream: string): Promise<Map<string, number>> {
  await ok("POST", `/${stream}/_refresh`);
  const seen = new Map<string, number>();
  let search = await ok("POST", `/${stream}/_search?scroll=1m`, { size: 5000, _source: ["@timestamp", "container.id", "cpost.monotonic_ms"], sort: ["_doc"] });
  for (;;) {
    const hits = search.hits.hits as Array<{ _source: Json }>;
    if (hits.length === 0) break;
    for (const { _source: d } of hits) {
      const key = sampleKey(d.container.id, Date.parse(d["@timestamp"]), d.cpost.monotonic_ms);
      seen.set(key, (seen.get(key) ?? 0) + 1);
    }
    search = await ok("POST", "/_search/scroll", { scroll: "1m", scroll_id: search._scroll_id });
  }
  return seen;
}

async function expectExactlyOnce(stream: string, keys: string[]): Promise<void> {
  const stored = await storedSamples(stream);
  expect(new Set(keys).size).toBe(keys.length);
  expect([...stored.entries()].filter(([, n]) => n !== 1)).toEqual([]);
  expect(keys.filter((k) => !stored.has(k))).toEqual([]);
  expect(stored.size).toBe(keys.length);
  expect((await ok("GET", `/${stream}/_count`)).count).toBe(keys.length);
}

/** Leaf field -> type, from `GET <index>/_mapping` of the data stream's first backing index. */
async function fieldTypes(stream: string): Promise<Record<string, string>> {
  const mapping = await ok("GET", `/${stream}/_mapping`);
  const out: Record<string, string> = {};
  const walk = (properties: Json, prefix: string) => {
    for (const [name, field] of Object.entries(properties as Record<string, Json>)) {
      if (field.properties) walk(field.properties, `${prefix}${name}.`);
      else out[`${prefix}${name}`] = field.type;
    }
  };
  const first = Object.keys(mapping).sort()[0]!;
  walk(mapping[first].mappings.properties, "");
  return out;
}

openSearchTest("cpost es setup: the real engine takes every template, and a second run leaves them alone", async () => {
  const first = await cpostSource(["es", "setup", "--es-url", node.url]);
  expect(first.stderr).toBe("");
  expect(first.code).toBe(0);
  expect(first.stdout).toContain("OpenSearch 2.19.2 at");
  // The minimal engine has no index-management plugin: no ISM policy, and setup says so (GET /_plugins/_ism/… has no handler here).
  expect(first.stdout).toContain("  lifecycle: none: no index-management plugin (ISM) on this cluster");
  expect(first.stdout).toContain("index template metrics-cpost.container: created");
  expect(first.stdout).not.toContain("cpost-lifecycle@settings"); // OpenSearch refuses index.lifecycle.* settings
  const again = await cpostSource(["es", "setup", "--es-url", node.url]);
  expect(again.code).toBe(0);
  expect(again.stdout).not.toContain("created");
  expect(again.stdout).toContain("index template metrics-cpost.gpu: unchanged");
  const legacy = await cpostSource(["es", "setup", "--legacy", "--es-url", node.url]);
  expect(legacy.stderr).toBe("");
  expect(legacy.code).toBe(0);
  const templates = await ok("GET", "/_index_template/metrics-cpost.*");
  expect(templates.index_templates.map((t: Json) => t.name).sort()).toEqual(["metrics-cpost.container", "metrics-cpost.gpu"]);
  expect(templates.index_templates[0].index_template.data_stream).toBeDefined();
});

liveTest("a live run: documents land with the template's mappings; _count and a _search aggregation match the recording", async () => {
  expect((await cpostSource(["es", "setup", "--es-url", node.url])).code).toBe(0);
  const stream = "metrics-cpost.container-live";
  const run = await runCpost(node.url, "live", 2, [], 2).done;
  expect(run.stderr).toBe("");
  expect(run.code).toBe(0);
  const { keys, byContainer } = recorded(run.recording);
  expect(byContainer.size).toBe(2);
  expect(run.stdout).toMatch(new RegExp(`^elasticsearch: ${keys.length} sent, 0 spooled, 0 rejected$`, "m"));
  await expectExactlyOnce(stream, keys);

  const types = await fieldTypes(stream);
  expect(types).toMatchObject({
    "@timestamp": "date", "host.name": "keyword", "container.id": "keyword", "cpost.run_id": "keyword", "cpost.operator": "keyword",
    "cpost.monotonic_ms": "double", "container.cpu.usage": "scaled_float", "container.memory.usage": "scaled_float",
    "metrics.cpu.percent": "float", "metrics.cpu.usage_ns": "long", "metrics.memory.usage_bytes": "long",
    "metrics.memory.working_set_bytes": "long", "metrics.pids.current": "long",
  });
  // Nothing was mapped dynamically as text (a field the templates miss would be `text` + `keyword`).
  expect(Object.entries(types).filter(([, t]) => t === "text")).toEqual([]);

  const search = await ok("POST", `/${stream}/_search`, {
    size: 0,
    aggs: { containers: { terms: { field: "container.id", size: 10 }, aggs: { cpu: { max: { field: "metrics.cpu.percent" } }, memory: { max: { field: "metrics.memory.usage_bytes" } } } } },
  });
  const buckets = search.aggregations.containers.buckets as Array<{ key: string; doc_count: number; cpu: { value: number }; memory: { value: number } }>;
  expect(buckets.length).toBe(2);
  for (const bucket of buckets) {
    const want = byContainer.get(bucket.key)!;
    expect(bucket.doc_count).toBe(want.rows);
    expect(bucket.cpu.value).toBe(want.cpuMax);
    expect(bucket.memory.value).toBe(want.memoryMax);
  }
}, 120_000);

liveTest("legacy indices (--es-legacy): cpumetrics takes the legacy template's types", async () => {
  expect((await cpostSource(["es", "setup", "--legacy", "--es-url", node.url])).code).toBe(0);
  const run = await runCpost(node.url, "legacy", 1, ["--es-legacy", "true"]).done;
  expect(run.stderr).toBe("");
  expect(run.code).toBe(0);
  const { keys } = recorded(run.recording);
  expect(run.stdout).toContain(`elasticsearch: ${keys.length} sent, 0 spooled, 0 rejected`);
  await ok("POST", "/cpumetrics/_refresh");
  expect((await ok("GET", "/cpumetrics/_count")).count).toBe(keys.length);
  const mapping = (await ok("GET", "/cpumetrics/_mapping")).cpumetrics.mappings.properties;
  expect(mapping.timestamp.type).toBe("date");
  expect(mapping.cpu_utilization__pct.type).toBe("float");
  expect(mapping.memory_usage__MB.type).toBe("float");
  expect(mapping.container_id.type).toBe("keyword");
});

liveTest("rollover during a run: every sample exactly once across both backing indices", async () => {
  expect((await cpostSource(["es", "setup", "--es-url", node.url])).code).toBe(0);
  const stream = "metrics-cpost.container-rollover";
  const { done } = runCpost(node.url, "rollover", 4);
  await until("the first documents", async () => ((await os("GET", `/${stream}/_count`)).body.count > 0 ? true : undefined), 30_000);
  const rolled = await ok("POST", `/${stream}/_rollover`);
  expect(rolled.rolled_over).toBe(true);
  const run = await done;
  expect(run.stderr).toBe("");
  expect(run.code).toBe(0);
  const { keys } = recorded(run.recording);
  const backing = (await ok("GET", `/_data_stream/${stream}`)).data_streams[0].indices as Array<{ index_name: string }>;
  expect(backing.length).toBe(2);
  for (const { index_name } of backing) expect((await ok("GET", `/${index_name}/_count`)).count).toBeGreaterThan(0);
  expect(run.stdout).toMatch(new RegExp(`^elasticsearch: ${keys.length} sent, 0 spooled, 0 rejected$`, "m"));
  await expectExactlyOnce(stream, keys);
}, 120_000);

liveTest("rollover while the link is cut and documents wait in the spool: every sample exactly once", async () => {
  expect((await cpostSource(["es", "setup", "--es-url", node.url])).code).toBe(0);
  const stream = "metrics-cpost.container-outage";
  const link = startLink(node.url);
  links.push(link);
  const { spool, done } = runCpost(link.url, "outage", 5);
  await until("the first documents", async () => ((await os("GET", `/${stream}/_count`)).body.count > 0 ? true : undefined), 30_000);
  link.cut();
  await until("documents in the spool", () => (spoolFiles(spool).length > 0 ? true : undefined), 30_000);
  expect((await ok("POST", `/${stream}/_rollover`)).rolled_over).toBe(true);
  await Bun.sleep(500);
  link.restore();
  const run = await done;
  expect(run.stderr).toBe("");
  expect(run.code).toBe(0);
  expect(run.stdout).toContain("not answering (ECONNREFUSED); documents go to the spool");
  const { keys } = recorded(run.recording);
  expect(run.stdout).toMatch(new RegExp(`^elasticsearch: ${keys.length} sent \\(\\d+ from the spool\\), 0 spooled, 0 rejected$`, "m"));
  expect((await ok("GET", `/_data_stream/${stream}`)).data_streams[0].indices.length).toBe(2);
  await expectExactlyOnce(stream, keys);
  expect(spoolFiles(spool)).toEqual([]);
}, 120_000);

openSearchTest("duplicates: a resend is a 409 in the same backing index, a second copy after a rollover", async () => {
  expect((await cpostSource(["es", "setup", "--es-url", node.url])).code).toBe(0);
  const stream = "metrics-cpost.container-dups";
  const doc = (i: number) => `{"create":{"_index":"${stream}","_id":"dup-${i}"}}\n{"@timestamp":"2025-01-01T00:00:0${i}Z","container":{"id":"c"},"cpost":{"monotonic_ms":${i}}}\n`;
  const body = doc(1) + doc(2);
  const first = await ok("POST", "/_bulk?refresh=true", body);
  expect(first.items.map((i: Json) => i.create.status)).toEqual([201, 201]);
  // The ambiguous failure cpost guards against: the same documents again. Same backing index: 409, counted as sent, one copy.
  const resend = await ok("POST", "/_bulk?refresh=true", body);
  expect(resend.items.map((i: Json) => i.create.status)).toEqual([409, 409]);
  expect((await ok("GET", `/${stream}/_count`)).count).toBe(2);
  // After a rollover the write index is new and `_id`s are unique only within one backing index: a second copy.
  await ok("POST", `/${stream}/_rollover`);
  const after = await ok("POST", "/_bulk?refresh=true", body);
  expect(after.items.map((i: Json) => i.create.status)).toEqual([201, 201]);
  expect((await ok("GET", `/${stream}/_count`)).count).toBe(4);
  // The copies share their `_id`: a reader that must count exactly can collapse on it.
  const ids = await ok("POST", `/${stream}/_search`, { size: 0, aggs: { ids: { cardinality: { field: "_id" } } } });
  expect(ids.aggregations.ids.value).toBe(2);
});

openSearchTest("a sink that finds no cpost templates puts them: a data stream with the template's types, not a plain index with guessed ones", async () => {
  // As on a cluster where nobody ran es setup: OpenSearch has no built-in template for metrics-*-*.
  // (An index template in use by data streams cannot be deleted: the earlier tests' streams go first.)
  await ok("DELETE", "/_data_stream/metrics-cpost.*");
  for (const name of ["metrics-cpost.container", "metrics-cpost.gpu"]) expect([200, 404]).toContain((await os("DELETE", `/_index_template/${name}`)).status);
  const stream = "metrics-cpost.container-auto";
  expect((await os("GET", `/_index_template/metrics-cpost.container`)).status).toBe(404);
  const out = { text: "", write(t: string) { out.text += t; return true; } };
  const sink = await elasticsearch({ out, options: { "es-url": node.url, "es-namespace": "auto", "es-spool-dir": scratch(), "es-flush": "30ms" } });
  const batch = gpuBatch(50);
  await sink.start(gpuRun);
  sink.write(batch);
  await sink.end(RESULT);
  expect(out.text).toBe("elasticsearch: OpenSearch 2.19.2 had no cpost templates: put them as `cpost es setup` does (no lifecycle policy)\nelasticsearch: 150 sent, 0 spooled, 0 rejected\n");
  const streams = (await ok("GET", `/_data_stream/${stream}`)).data_streams as Array<{ name: string; indices: unknown[] }>;
  expect(streams.map((d) => d.name)).toEqual([stream]);
  expect(await fieldTypes(stream)).toMatchObject({ "metrics.cpu.percent": "float", "cpost.operator": "keyword", "host.name": "keyword" });
  await ok("POST", `/${stream}/_refresh`);
  expect((await ok("GET", `/${stream}/_count`)).count).toBe(50);
});

const column = (name: string, unit: MetricColumn["unit"], device?: number): MetricColumn => ({
  name, unit, kind: "gauge", device, key: device === undefined ? name : `${name}[${device}]`, collector: device === undefined ? "cgroup" : "nvml",
});

/** A batch of `rows` samples with 2 GPUs, monitor labels and a plugin's unknown metrics. */
function gpuBatch(rows: number): SampleBatch {
  const columns = [
    column("cpu.percent", "percent"), column("memory.usage_bytes", "bytes"), column("memory.limit_bytes", "bytes"),
    // A plugin's metric whose first reading is a whole number, and a name that is both a leaf and a prefix.
    column("queue.depth", "count"), column("queue.depth.max", "count"),
    column("gpu.utilization_pct", "percent", 0), column("gpu.memory_used_bytes", "bytes", 0), column("gpu.power_w", "watts", 0),
    column("gpu.utilization_pct", "percent", 1), column("gpu.memory_used_bytes", "bytes", 1), column("gpu.power_w", "watts", 1),
  ];
  const values = new Float64Array(rows * columns.length);
  for (let r = 0; r < rows; r++) values.set([r % 150, 5e7 + r, 8e9, r === 0 ? 0 : r + 0.5, r * 2, r % 100, 1e9 + r, 70.5, 50, 2e9, 80.25], r * columns.length);
  return {
    operator: "infer", containerId: "f".repeat(64), columns, rows, values,
    timestampMs: Float64Array.from({ length: rows }, (_, r) => 1_732_400_000_000.25 + r * 10),
    monotonicMs: Float64Array.from({ length: rows }, (_, r) => r * 10),
  };
}

const gpuRun: RunInfo = {
  id: "run-gpu", pipeline: { file: "p.yaml", apiVersion: "0.4.0", name: "gpu", operators: [], order: [] },
  host: { hostname: "gpu-host-1", cpus: 2, memoryBytes: 8e9, kernel: "6.1.0", arch: "x64", cgroupVersion: 1, engine: "docker", engineVersion: "20.10.24" },
  collectors: ["cgroup", "nvml"], sinks: ["elasticsearch"], intervalMs: 10, startedAtMs: 1_732_400_000_000, cpostVersion: "0.0.0-test", labels: { site: "lab-3" },
};
const RESULT = { results: [], summaries: [], endedAtMs: 0, interval: { target: 10, p50: 10, p99: 11, samples: 0 }, interrupted: false } as RunResult;

openSearchTest("GPU documents, monitor labels and a plugin's unknown metrics: the real engine maps them as the templates say", async () => {
  expect((await cpostSource(["es", "setup", "--es-url", node.url])).code).toBe(0);
  const rows = 200;
  const batch = gpuBatch(rows);
  const run = gpuRun;
  const out = { text: "", write(t: string) { out.text += t; return true; } };
  const sink = await elasticsearch({ out, options: { "es-url": node.url, "es-namespace": "gpu", "es-spool-dir": scratch(), "es-flush": "30ms" } });
  await sink.start(run);
  sink.write(batch);
  await sink.end(RESULT);
  expect(out.text).toBe(`elasticsearch: ${rows * 3} sent, 0 spooled, 0 rejected\n`);
  await ok("POST", "/metrics-cpost.*-gpu/_refresh");
  expect((await ok("GET", "/metrics-cpost.container-gpu/_count")).count).toBe(rows);
  expect((await ok("GET", "/metrics-cpost.gpu-gpu/_count")).count).toBe(rows * 2);
  expect(await fieldTypes("metrics-cpost.container-gpu")).toMatchObject({
    "labels.site": "keyword", "metrics.queue.depth._": "double", "metrics.queue.depth.max": "double", "metrics.memory.limit_bytes": "long",
  });
  expect(await fieldTypes("metrics-cpost.gpu-gpu")).toMatchObject({
    "gpu.index": "integer", "gpu.utilization_pct": "float", "gpu.memory_used_bytes": "long", "gpu.power_w": "float", "container.id": "keyword",
  });
  const power = await ok("POST", "/metrics-cpost.gpu-gpu/_search", { size: 0, aggs: { d: { terms: { field: "gpu.index" }, aggs: { p: { avg: { field: "gpu.power_w" } }, m: { max: { field: "gpu.memory_used_bytes" } } } } } });
  const byDevice = Object.fromEntries(power.aggregations.d.buckets.map((b: Json) => [b.key, [b.doc_count, b.p.value, b.m.value]]));
  expect(byDevice).toEqual({ 0: [rows, 70.5, 1e9 + rows - 1], 1: [rows, 80.25, 2e9] });
});
