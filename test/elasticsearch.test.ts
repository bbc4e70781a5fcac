/**
 * The Elasticsearch sink and `cpost es setup` against the ES-protocol test
 * server (test/es-server.ts): every sample arrives exactly once (counted by
 * `_id` and by content) through retries, dropped connections, an outage in
 * the middle of a run and a restart with a non-empty spool; mapping
 * conflicts and bad credentials give clear errors.
 */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CpostError } from "../core/contracts/errors.ts";
import type { MetricColumn, RunInfo, RunResult, SampleBatch, Sink } from "../core/contracts/types.ts";
import elasticsearchSink from "../plugins/elasticsearch/index.ts";
import { engineOf, setupRequests } from "../plugins/elasticsearch/setup.ts";
import { templateRequests } from "../plugins/elasticsearch/templates.ts";
import { sampleKey, spoolFiles, startEsServer, storedSamples, type EsServerOptions, type EsTestServer } from "./es-server.ts";
import { cpostSource, until } from "./support.ts";
import { sinkFactory } from "../plugins/index.ts";

const elasticsearch = sinkFactory(elasticsearchSink);

const CONTAINER = "metrics-cpost.container-default";
const ES8 = engineOf({ version: { number: "8.15.0", build_flavor: "default" } })!;
const GPU = "metrics-cpost.gpu-default";
const servers: EsTestServer[] = [];
const dirs: string[] = [];
const tempDir = () => {
  const dir = mkdtempSync(join(tmpdir(), "cpost-es-test-"));
  dirs.push(dir);
  return dir;
};
const server = (options?: EsServerOptions) => {
  const s = startEsServer(options);
  servers.push(s);
  return s;
};
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});
afterAll(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const col = (name: string, unit: MetricColumn["unit"], kind: MetricColumn["kind"] = "gauge", device?: number): MetricColumn => ({
  name, unit, kind, device, key: device === undefined ? name : `${name}[${device}]`, collector: device === undefined ? "cgroup" : "nvml",
});

/** Columns as the cgroup, blkio and nvml collectors give them, with `gpus` devices. */
function columnsFor(gpus: number): MetricColumn[] {
  const columns = [
    col("cpu.usage_ns", "ns", "counter"), col("cpu.percent", "percent"), col("memory.usage_bytes", "bytes"),
    col("memory.working_set_bytes", "bytes"), col("memory.limit_bytes", "bytes"), col("pids.current", "count"),
    col("io.read_bytes", "bytes", "counter"), col("io.write_bytes", "bytes", "counter"), col("psi.cpu.some_avg10", "percent"),
  ];
  for (let d = 0; d < gpus; d++) columns.push(col("gpu.utilization_pct", "percent", "gauge", d), col("gpu.memory_used_bytes", "bytes", "gauge", d), col("gpu.power_w", "watts", "gauge", d));
  return columns;
}

/** A container's series as the sampler hands it over: `rows` samples `stepMs` apart, in batches. */
function series(operator: string, rows: number, options: { gpus?: number; batchRows?: number; startMs?: number; stepMs?: number } = {}): SampleBatch[] {
  const columns = columnsFor(options.gpus ?? 0);
  const width = columns.length;
  const batchRows = options.batchRows ?? 250;
  const start = options.startMs ?? 1_732_400_000_000.25;
  const step = options.stepMs ?? 10;
  const batches: SampleBatch[] = [];
  for (let first = 0; first < rows; first += batchRows) {
    const n = Math.min(batchRows, rows - first);
    const values = new Float64Array(n * width);
    for (let r = 0; r < n; r++) {
      const i = first + r;
      const row = [i * 4e6, i === 0 ? NaN : (i * 37) % 200, 5e7 + i * 4096, 4e7, 2 ** 63, 3, i * 512, i * 256, 0.5];
      for (let d = 0; d < (options.gpus ?? 0); d++) row.push((i + d) % 100, 1e9 + d, 70.5 + d);
      values.set(row, r * width);
    }
    batches.push({
      operator, containerId: `${operator}-container`.padEnd(64, "f"), columns, rows: n, values,
      timestampMs: Float64Array.from({ length: n }, (_, r) => start + (first + r) * step),
      monotonicMs: Float64Array.from({ length: n }, (_, r) => (first + r) * step),
    });
  }
  return batches;
}

function runInfo(id: string, labels?: Record<string, string>): RunInfo {
  return {
    id,
    pipeline: { file: "p.yaml", apiVersion: "0.4.0", name: "spleen", operators: [], order: [] },
    host: { hostname: "gpu-host-1", cpus: 2, memoryBytes: 8e9, kernel: "6.1.0", arch: "x64", cgroupVersion: 1, engine: "docker", engineVersion: "20.10.24" },
    collectors: ["cgroup", "nvml"], sinks: ["elasticsearch"], intervalMs: 10, startedAtMs: 1_732_400_000_000, cpostVersion: "0.0.0-test", labels,
  };
}
const RESULT = { results: [], summaries: [], endedAtMs: 0, interval: { target: 10, p50: 10, p99: 11, samples: 0 }, interrupted: false } as RunResult;

/** The sink with options a test needs: short timeouts so failures show in milliseconds, its own spool. */
async function esSink(s: { url: string }, options: Record<string, string> = {}) {
  const out = { text: "", write(t: string) { out.text += t; return true; } };
  const sink = await elasticsearch({ out, options: { "es-url": s.url, "es-spool-dir": options["es-spool-dir"] ?? tempDir(), "es-flush": "30ms", "es-timeout": "1s", "es-backoff-max": "100ms", ...options } });
  return { sink, out };
}

/** The line the sink says when it put cpost's templates on a cluster that had none (every fresh stand-in). */
const PUT_TEMPLATES = /^elasticsearch: \S+ \S+ had no cpost templates: put them as `cpost es setup` does \([^)]*\)\n/m;
/** What the sink said, less that line. */
const said = (out: { text: string }) => out.text.replace(PUT_TEMPLATES, "");

/** Drives the sink as the runner does. */
async function feed(sink: Sink, run: RunInfo, batches: SampleBatch[], between?: (i: number) => Promise<void> | void): Promise<void> {
  await sink.start(run);
  for (const [i, batch] of batches.entries()) {
    expect(sink.write(batch)).toBeUndefined(); // write never waits for Elasticsearch
    await between?.(i);
  }
  await sink.end(RESULT);
}

/** Every sample of the batches appears exactly once among the stored container documents, and nothing else does. */
function expectExactlyOnce(s: EsTestServer, batches: SampleBatch[], index = CONTAINER): void {
  const expected = new Set<string>();
  for (const b of batches) for (let r = 0; r < b.rows; r++) expected.add(sampleKey(b.containerId, b.timestampMs[r]!, b.monotonicMs[r]!));
  const seen = storedSamples(s, index);
  expect([...seen.values()].filter((n) => n !== 1)).toEqual([]);
  expect(seen.size).toBe(expected.size);
  expect([...expected].filter((k) => !seen.has(k))).toEqual([]);
}


describe("documents", () => {
  test("one per sample per container and one per GPU per sample, ECS fields and cpost's metric names, framed as _bulk wants", async () => {
    const s = server();
    const batches = [...series("reader", 600, { gpus: 2 }), ...series("segment", 300)];
    const { sink, out } = await esSink(s);
    await feed(sink, runInfo("run-docs", { site: "lab-3" }), batches);
    expect(out.text).toBe("elasticsearch: Elasticsearch 8.15.0 had no cpost templates: put them as `cpost es setup` does (ILM policy cpost-metrics)\nelasticsearch: 2100 sent, 0 spooled, 0 rejected\n");
    expect(s.count(CONTAINER)).toBe(900);
    expect(s.count(GPU)).toBe(1200);
    expectExactlyOnce(s, batches);
    expect(s.protocolErrors).toEqual([]);
    const bulks = s.requests.filter((r) => r.path === "/_bulk");
    expect(bulks.length).toBeGreaterThan(0);
    expect(bulks.every((r) => r.contentType === "application/x-ndjson" && r.status === 200)).toBe(true);

    const reader = [...s.docs(CONTAINER).values()].map((d) => d as Record<string, any>).find((d) => d.cpost.operator === "reader" && d.cpost.monotonic_ms === 10)!;
    expect(reader).toEqual({
      "@timestamp": "2024-11-23T22:13:20.010Z",
      labels: { site: "lab-3" },
      host: { name: "gpu-host-1" },
      cpost: { run_id: "run-docs", pipeline: "spleen", operator: "reader", monotonic_ms: 10 },
      container: {
        id: "reader-container".padEnd(64, "f"),
        cpu: { usage: 37 / 100 / 2 }, // ECS: a fraction of all the host's cores
        memory: { usage: (5e7 + 4096) / 8e9 }, // of the host's memory: the cgroup limit is "unlimited"
        disk: { read: { bytes: 512 }, write: { bytes: 256 } }, // ECS: since the previous sample
      },
      metrics: {
        cpu: { usage_ns: 4e6, percent: 37 },
        memory: { usage_bytes: 5e7 + 4096, working_set_bytes: 4e7, limit_bytes: 2 ** 63 },
        pids: { current: 3 },
        io: { read_bytes: 512, write_bytes: 256 },
        psi: { cpu: { some_avg10: 0.5 } },
      },
    });
    const atBatchStart = [...s.docs(CONTAINER).values()].map((d) => d as Record<string, any>).find((d) => d.cpost.operator === "reader" && d.cpost.monotonic_ms === 2500)!;
    expect(atBatchStart.container.disk).toEqual({ read: { bytes: 512 }, write: { bytes: 256 } }); // deltas carry across batches
    const first = [...s.docs(CONTAINER).values()].map((d) => d as Record<string, any>).find((d) => d.cpost.operator === "reader" && d.cpost.monotonic_ms === 0)!;
    expect(first.metrics.cpu).toEqual({ usage_ns: 0 }); // NaN = not measured: left out, never null or 0
    expect(first.container.cpu).toBeUndefined();
    const gpu1 = [...s.docs(GPU).values()].map((d) => d as Record<string, any>).find((d) => d.gpu.index === 1 && d.cpost.monotonic_ms === 10)!;
    expect(gpu1.gpu).toEqual({ index: 1, utilization_pct: 2, memory_used_bytes: 1e9 + 1, power_w: 71.5 });
    expect(gpu1.container).toEqual({ id: "reader-container".padEnd(64, "f") });
  });

  test("two containers whose batches share one columns array keep their own identity", async () => {
    const s = server();
    const [a] = series("left", 5);
    const b = { ...a!, operator: "right", containerId: "right".padEnd(64, "0") };
    const { sink } = await esSink(s);
    await feed(sink, runInfo("run-shared"), [a!, b]);
    const byOperator = [...s.docs(CONTAINER).values()].map((d) => d as Record<string, any>).map((d) => `${d.cpost.operator} ${d.container.id.slice(0, 5)}`);
    expect(byOperator.sort()).toEqual([...Array(5).fill("left left-"), ...Array(5).fill("right right")]);
  });

  test("document ids are deterministic: replaying the same run stores nothing twice", async () => {
    const s = server();
    const batches = series("reader", 500, { gpus: 1 });
    const first = await esSink(s);
    await feed(first.sink, runInfo("run-replay"), batches);
    const again = await esSink(s);
    await feed(again.sink, runInfo("run-replay"), batches);
    expect(said(again.out)).toBe("elasticsearch: 1000 sent, 0 spooled, 0 rejected\n"); // 409s: already there
    expect(s.stats.conflicts).toBe(1000);
    expect(s.count()).toBe(1000);
  });

  test("Elasticsearch 7.17: the same documents, its answer shapes, its mapping error type", async () => {
    const s = server({ version: "7.17.22" });
    s.componentTemplates.set("theirs", { template: { mappings: { properties: { cpost: { properties: { operator: { type: "long" } } } } } } });
    s.indexTemplates.set("theirs", { index_patterns: ["metrics-cpost.gpu-*"], priority: 500, data_stream: {}, composed_of: ["theirs"] });
    const { sink, out } = await esSink(s);
    const batches = series("reader", 400, { gpus: 1 });
    await feed(sink, runInfo("run-7x"), batches);
    expectExactlyOnce(s, batches);
    expect(out.text).toContain("documents rejected: 400 mapper_parsing_exception: failed to parse field [cpost.operator] of type [long]");
    expect(out.text).toContain("elasticsearch: 400 sent, 0 spooled, 400 rejected");
  });

  test("--es-namespace picks the data streams (and --elasticsearch-* spellings work)", async () => {
    const s = server();
    const { sink } = await esSink(s, { "elasticsearch-namespace": "lab_3" });
    await feed(sink, runInfo("run-ns"), series("reader", 10, { gpus: 1 }));
    expect(s.indices().sort()).toEqual(["metrics-cpost.container-lab_3", "metrics-cpost.gpu-lab_3"]);
  });

  test("legacy mode writes the original's gpumetrics / cpumetrics fields", async () => {
    const s = server();
    const { sink } = await esSink(s, { "es-legacy": "true" });
    await feed(sink, runInfo("run-legacy"), series("reader", 20, { gpus: 2 }));
    expect(s.count("cpumetrics")).toBe(20);
    expect(s.count("gpumetrics")).toBe(40);
    const gpu = [...s.docs("gpumetrics").values()].map((d) => d as Record<string, any>).find((d) => d.index === 1 && d.timestamp.endsWith(":20.010Z"))!;
    expect(gpu).toMatchObject({ index: 1, gpu_utilization__pct: 2, memory_used__MB: 1000.000001, power_draw__W: 71.5, host: "gpu-host-1", run_id: "run-legacy", operator: "reader" });
    const cpu = [...s.docs("cpumetrics").values()].map((d) => d as Record<string, any>).find((d) => d.timestamp.endsWith(":20.010Z"))!;
    expect(cpu).toMatchObject({ cpu_utilization__pct: 37, memory_usage__MB: 50.004096, disk_read__B: 512, pids__count: 3 });
  });
});

describe("delivery", () => {
  test("429s, 500s and per-item 429/503 are retried with backoff: every document exactly once", async () => {
    const s = server();
    s.inject(
      { kind: "status", status: 429 },
      { kind: "items", status: 429, every: 3 },
      { kind: "status", status: 500 },
      { kind: "items", status: 503, every: 2, times: 2 },
      { kind: "status", status: 503 },
    );
    const batches = series("reader", 3000);
    const { sink, out } = await esSink(s, { "es-batch-docs": "700", "es-retries": "8" });
    await feed(sink, runInfo("run-retry"), batches);
    expect(s.stats.faultsPlayed).toBe(6);
    expect(said(out)).toBe("elasticsearch: 3000 sent, 0 spooled, 0 rejected\n");
    expectExactlyOnce(s, batches);
  });

  test("a request too large for the server (413) is split until it fits, nothing rejected", async () => {
    const s = server({ maxContentLength: 100_000 });
    const batches = series("reader", 1000);
    const { sink, out } = await esSink(s);
    await feed(sink, runInfo("run-413"), batches);
    expect(s.requests.some((r) => r.status === 413)).toBe(true);
    expect(said(out)).toBe("elasticsearch: 1000 sent, 0 spooled, 0 rejected\n");
    expectExactlyOnce(s, batches);
  });

  test("a dropped connection or a too-slow answer after storing: the resend is a 409, not a duplicate", async () => {
    const s = server();
    s.inject({ kind: "drop" }, { kind: "drop", store: false }, { kind: "slow", ms: 1500 });
    const batches = series("reader", 2000, { gpus: 1 });
    const { sink, out } = await esSink(s, { "es-batch-docs": "1000", "es-timeout": "500ms" });
    await feed(sink, runInfo("run-ambiguous"), batches);
    expect(s.stats.faultsPlayed).toBe(3);
    expect(s.stats.conflicts).toBeGreaterThan(0); // the server had stored what the client could not know about
    expect(said(out)).toBe("elasticsearch: 4000 sent, 0 spooled, 0 rejected\n");
    expectExactlyOnce(s, batches);
    expect(s.count(GPU)).toBe(2000);
  });

  test("an outage in the middle of a run: documents go to the spool, and are sent when Elasticsearch returns", async () => {
    const s = server();
    const spool = tempDir();
    const batches = series("segment", 6000, { batchRows: 100 });
    const { sink, out } = await esSink(s, { "es-spool-dir": spool });
    await feed(sink, runInfo("run-outage"), batches, async (i) => {
      if (i === 10) {
        await until("the first documents", () => (s.count(CONTAINER) > 0 ? true : undefined), 10_000); // it was up and sending before
        s.down();
      }
      if (i === 40) await until("documents in the spool", () => (spoolFiles(spool).length > 0 ? true : undefined), 10_000); // the outage was noticed, documents are on disk
      if (i === 45) s.up();
    });
    expect(out.text).toContain("not answering (ECONNREFUSED); documents go to the spool");
    expect(out.text).toMatch(/^elasticsearch: 6000 sent \(\d+ from the spool\), 0 spooled, 0 rejected$/m);
    expectExactlyOnce(s, batches);
    expect(spoolFiles(spool)).toEqual([]);
  });

  test("several nodes (--es-url a,b): when the one in use stops answering, the next takes its requests; nothing spooled, each sample stored once", async () => {
    const [a, b] = [server(), server()];
    const spool = tempDir();
    const batches = series("segment", 4000, { batchRows: 100 });
    const { sink, out } = await esSink({ url: `${a.url}, ${b.url}` }, { "es-spool-dir": spool });
    await feed(sink, runInfo("run-nodes"), batches, async (i) => {
      if (i === 10) {
        await until("the first documents on the first node", () => (a.count(CONTAINER) > 0 ? true : undefined), 10_000);
        a.down();
      }
    });
    expect(said(out)).toBe("elasticsearch: 4000 sent, 0 spooled, 0 rejected\n");
    expect(spoolFiles(spool)).toEqual([]);
    // Two stand-ins are two stores, not one cluster: between them every sample is there once.
    const stored = storedSamples(a, CONTAINER);
    for (const [key, n] of storedSamples(b, CONTAINER)) stored.set(key, (stored.get(key) ?? 0) + n);
    expect(stored.size).toBe(4000);
    expect([...stored.values()].filter((n) => n !== 1)).toEqual([]);
    expect(a.count(CONTAINER)).toBeGreaterThan(0);
    expect(b.count(CONTAINER)).toBeGreaterThan(0);
    // Once moved, requests stay on the node that answers: the first one is not asked again.
    expect(b.requests.filter((r) => r.path === "/_bulk").length).toBeGreaterThan(0);
    expect(b.requests[0]!.path).not.toBe("/");
  });

  test("--es-url with several nodes: each must be an http(s) URL", () => {
    expect(() => elasticsearch({ options: { "es-url": "http://127.0.0.1:9200,localhost:9201", "es-spool-dir": tempDir() } })).toThrow('not localhost: ("localhost:9201")');
    expect(() => elasticsearch({ options: { "es-url": " , ", "es-spool-dir": tempDir() } })).toThrow("needs a URL");
  });

  test("a restart with a non-empty spool: the next run sends it, exactly once", async () => {
    const s = server();
    const spool = tempDir();
    const before = series("reader", 1500, { gpus: 1 });
    s.down();
    const first = await esSink(s, { "es-spool-dir": spool });
    await feed(first.sink, runInfo("run-a"), before);
    expect(first.out.text).toContain(`elasticsearch: 0 sent, 3000 spooled in ${spool}`);
    expect(spoolFiles(spool).length).toBeGreaterThan(0);

    s.up();
    const after = series("writer", 700, { startMs: 1_732_500_000_000 });
    const second = await esSink(s, { "es-spool-dir": spool });
    await feed(second.sink, runInfo("run-b"), after);
    expect(second.out.text).toContain("3000 documents from earlier runs wait in");
    expect(second.out.text).toContain("elasticsearch: 3700 sent (3000 from the spool), 0 spooled, 0 rejected");
    expectExactlyOnce(s, [...before, ...after]);
    expect(s.count(GPU)).toBe(1500);
    expect(spoolFiles(spool)).toEqual([]);
  });

  test("two sinks sharing a spool, and the claim of a process that died, still give every document exactly once", async () => {
    const s = server();
    const spool = tempDir();
    s.down();
    const a = await esSink(s, { "es-spool-dir": spool });
    const b = await esSink(s, { "es-spool-dir": spool });
    const left = series("left", 800, { batchRows: 100 });
    const right = series("right", 800, { batchRows: 100 });
    await Promise.all([feed(a.sink, runInfo("run-left"), left), feed(b.sink, runInfo("run-right"), right)]);
    const files = spoolFiles(spool);
    expect(files.length).toBeGreaterThan(1);
    // A cpost that died while sending one file left it claimed.
    const dead = Bun.spawn(["true"]);
    await dead.exited;
    renameSync(join(spool, files[0]!), join(spool, `${files[0]}.claimed-${dead.pid}-0a1b2c`));

    s.up();
    const c = await esSink(s, { "es-spool-dir": spool });
    await feed(c.sink, runInfo("run-after"), []);
    expect(c.out.text).toContain("elasticsearch: 1600 sent (1600 from the spool), 0 spooled, 0 rejected");
    expectExactlyOnce(s, [...left, ...right]);
  });

  test("end never waits past its deadline: what Elasticsearch has not taken stays in the spool", async () => {
    const s = server();
    s.inject({ kind: "slow", ms: 5000, times: 100 });
    const spool = tempDir();
    const { sink, out } = await esSink(s, { "es-spool-dir": spool, "es-timeout": "10s", "es-end-timeout": "300ms" });
    const started = performance.now();
    await feed(sink, runInfo("run-deadline"), series("reader", 400));
    expect(performance.now() - started).toBeLessThan(5000); // had it waited for an answer, it would have taken 5 s
    expect(out.text).toMatch(/elasticsearch: 0 sent, 400 spooled in /);
  });

  test("a full spool drops documents loudly, counts them, and end throws", async () => {
    const s = server();
    s.down();
    const { sink, out } = await esSink(s, { "es-spool-max": "20k" });
    let error: unknown;
    try {
      await feed(sink, runInfo("run-full"), series("reader", 2000));
    } catch (e) {
      error = e;
    }
    expect(out.text).toContain("cannot take documents (full (--es-spool-max 20480 bytes)): they are being DROPPED");
    const lost = Number(/(\d+) LOST \(spool full\)/.exec(out.text)?.[1]);
    const spooled = Number(/(\d+) spooled/.exec(out.text)?.[1]);
    expect(lost).toBeGreaterThan(0);
    expect(lost + spooled).toBe(2000);
    expect(error).toBeInstanceOf(CpostError);
    expect((error as CpostError).message).toContain(`${lost} documents were dropped: the spool`);
  });
});

describe("errors", () => {
  test("a mapping conflict rejects documents with the reason, said once, with what to do", async () => {
    const s = server();
    // Someone mapped container.cpu as a number for cpost's data stream.
    s.componentTemplates.set("theirs", { template: { mappings: { properties: { container: { properties: { cpu: { type: "long" } } } } } } });
    s.indexTemplates.set("theirs", { index_patterns: ["metrics-cpost.container-*"], priority: 500, data_stream: {}, composed_of: ["theirs"] });
    const { sink, out } = await esSink(s);
    await feed(sink, runInfo("run-conflict"), series("reader", 300));
    const lines = said(out).trim().split("\n");
    expect(lines).toEqual([
      "elasticsearch: documents rejected: 400 document_parsing_exception: failed to parse field [container.cpu] of type [long] (the index mapping disagrees with cpost's documents: run `cpost es setup`, then roll the data stream over, or use another --es-namespace)",
      "elasticsearch: 1 sent, 0 spooled, 299 rejected", // the first sample has no CPU reading, so no container.cpu
    ]);
  });

  test("bad credentials: start fails with what to fix and never shows the secret; good ones work", async () => {
    const s = server({ auth: { apiKey: "Y3Bvc3Q6Z29vZA==", user: "cpost", password: "right horse" } });
    const dir = tempDir();
    writeFileSync(join(dir, "key"), "Y3Bvc3Q6d3Jvbmc=\n");
    const bad = await esSink(s, { "es-api-key-file": join(dir, "key") });
    const error = await Promise.resolve(bad.sink.start(runInfo("run-auth"))).then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(CpostError);
    expect((error as CpostError).code).toBe("input");
    expect((error as CpostError).message).toBe(`elasticsearch at ${s.url} refused the credentials to read cluster info (HTTP 401 security_exception: unable to authenticate with provided credentials and anonymous access is not allowed for this request)`);
    expect((error as CpostError).hint).toContain(`the API key in ${join(dir, "key")}`);
    expect(JSON.stringify(error)).not.toContain("Y3Bvc3Q6d3Jvbmc");
    await bad.sink.end(RESULT);

    writeFileSync(join(dir, "key"), "cpost:good\n"); // id:key pairs are encoded by cpost
    const good = await esSink(s, { "es-api-key-file": join(dir, "key") });
    await feed(good.sink, runInfo("run-auth"), series("reader", 50));
    expect(said(good.out)).toBe("elasticsearch: 50 sent, 0 spooled, 0 rejected\n");
    writeFileSync(join(dir, "pw"), "right horse\n");
    const basic = await esSink(s, { "es-user": "cpost", "es-password-file": join(dir, "pw") });
    await feed(basic.sink, runInfo("run-basic"), series("writer", 50));
    expect(said(basic.out)).toBe("elasticsearch: 50 sent, 0 spooled, 0 rejected\n");
    expect(s.requests.filter((r) => r.path === "/_bulk").every((r) => r.authorization)).toBe(true);
  });

  test("option errors name the option and what to do", async () => {
    const make = (options: Record<string, string>) => elasticsearch({ options: { "es-spool-dir": tempDir(), ...options } });
    expect(() => make({})).toThrow(expect.objectContaining({ code: "usage", hint: expect.stringContaining("CPOST_ES_URL") }));
    expect(() => make({ "es-url": "localhost:9200" })).toThrow("--es-url must be http:// or https://");
    expect(() => make({ "es-url": "http://x", "es-api-key": "abc" })).toThrow("--es-api-key takes no secret on the command line");
    expect(() => make({ "es-url": "http://x", "es-api-key-file": "/nonexistent/key" })).toThrow("cannot read --es-api-key-file /nonexistent/key");
    expect(() => make({ "es-url": "http://x", "es-spool-max": "lots" })).toThrow('--es-spool-max "lots" is not a size');
    expect(() => make({ "es-url": "http://x", "es-batch-docs": "0" })).toThrow('--es-batch-docs "0" is not a whole number of at least 1');
    expect(() => make({ "es-url": "http://x", "es-retries": "many" })).toThrow('--es-retries "many" is not a whole number');
    expect(() => make({ "es-url": "http://x", "es-namespace": "Lab-3" })).toThrow('--es-namespace "Lab-3" cannot be part of a data stream name');
  });
});

describe("cpost es setup", () => {
  test("creates component and composable templates, is idempotent, and the sink's documents get the typed mappings", async () => {
    const s = server();
    const setup = await cpostSource(["es", "setup", "--es-url", s.url]);
    expect(setup.stderr).toBe("");
    expect(setup.code).toBe(0);
    expect(setup.stdout).toContain(`Elasticsearch 8.15.0 at ${s.url}`);
    expect(setup.stdout).toContain("index template metrics-cpost.container: created");
    expect(s.indexTemplates.get("metrics-cpost.gpu")).toMatchObject({ index_patterns: ["metrics-cpost.gpu-*"], data_stream: {}, priority: 200 });
    const again = await cpostSource(["es", "setup", "--es-url", s.url]);
    expect(again.code).toBe(0);
    expect(again.stdout.match(/unchanged/g)?.length).toBe(setupRequests(ES8, { legacy: false, force: false }).length);

    const { sink } = await esSink(s);
    await feed(sink, runInfo("run-mapped", { team: "imaging" }), series("reader", 30, { gpus: 1 }));
    expect(s.fieldType(CONTAINER, "container.cpu.usage")).toBe("scaled_float");
    expect(s.fieldType(CONTAINER, "metrics.cpu.percent")).toBe("float");
    expect(s.fieldType(CONTAINER, "metrics.memory.usage_bytes")).toBe("long");
    expect(s.fieldType(CONTAINER, "cpost.run_id")).toBe("keyword");
    expect(s.fieldType(CONTAINER, "labels.team")).toBe("keyword");
    expect(s.fieldType(GPU, "gpu.index")).toBe("integer");
    expect(s.fieldType(GPU, "gpu.power_w")).toBe("float");
  });

  test("--legacy makes the gpumetrics / cpumetrics templates; --dry-run prints the JSON and contacts nothing", async () => {
    const s = server({ distribution: "opensearch" });
    const legacy = await cpostSource(["es", "setup", "--legacy", "--es-url", s.url]);
    expect(legacy.code).toBe(0);
    expect(legacy.stdout).toContain("OpenSearch 2.11.0");
    const { sink } = await esSink(s, { "es-legacy": "true" });
    await feed(sink, runInfo("run-legacy-mapped"), series("reader", 10, { gpus: 1 }));
    expect(s.fieldType("gpumetrics", "gpu_utilization__pct")).toBe("float");
    expect(s.fieldType("gpumetrics", "index")).toBe("integer");
    expect(s.fieldType("cpumetrics", "timestamp")).toBe("date");

    const before = s.requests.length;
    const dry = await cpostSource(["es", "setup", "--dry-run"]);
    expect(dry.code).toBe(0);
    expect(s.requests.length).toBe(before);
    const blocks = dry.stdout.trim().split("\n\n");
    const sent = setupRequests(ES8, { legacy: false, force: false });
    expect(blocks.map((b) => b.split("\n")[0])).toEqual(sent.map((r) => `PUT ${r.path}`));
    expect(blocks[0]!.split("\n")[0]).toBe("PUT /_ilm/policy/cpost-metrics");
    expect(JSON.parse(blocks[1]!.split("\n").slice(1).join("\n"))).toEqual(templateRequests(false, { ilm: true })[0]!.body);
  });

  test("a conflicting template and bad credentials are clear errors (exit 2)", async () => {
    const s = server({ auth: { user: "elastic", password: "changeme" } });
    const denied = await cpostSource(["es", "setup", "--es-url", s.url], { env: { CPOST_ES_USER: "elastic", CPOST_ES_PASSWORD: "wrong" } });
    expect(denied.code).toBe(2);
    expect(denied.stderr).toContain("refused the credentials to read cluster info (HTTP 401 security_exception");
    expect(denied.stderr).toContain("hint: cpost used user elastic with the password from CPOST_ES_PASSWORD");
    expect(denied.stderr).not.toContain("wrong");

    s.indexTemplates.set("someone-elses", { index_patterns: ["metrics-cpost.*"], priority: 200 });
    const clash = await cpostSource(["es", "setup", "--es-url", s.url], { env: { CPOST_ES_USER: "elastic", CPOST_ES_PASSWORD: "changeme" } });
    expect(clash.code).toBe(2);
    expect(clash.stderr).toContain("refused index template metrics-cpost.container: HTTP 400 illegal_argument_exception: index template [metrics-cpost.container] has index patterns [metrics-cpost.container-*] matching patterns from existing templates [someone-elses]");
    expect(clash.stderr).toContain("hint: another template or policy matches the same indices at the same priority");
  });
});

describe("engines and lifecycle", () => {
  test("Elasticsearch: an ILM policy first, templates that name it, backing indices under it; --retention-days adds a delete phase", async () => {
    const s = server();
    const setup = await cpostSource(["es", "setup", "--es-url", s.url]);
    expect(setup.stderr).toBe("");
    expect(setup.code).toBe(0);
    expect(setup.stdout.split("\n").slice(0, 2)).toEqual([`Elasticsearch 8.15.0 at ${s.url}`, "  lifecycle: ILM policy cpost-metrics: created"]);
    const ilmPut = s.requests.findIndex((r) => r.method === "PUT" && r.path === "/_ilm/policy/cpost-metrics");
    const firstTemplate = s.requests.findIndex((r) => r.method === "PUT" && r.path.startsWith("/_component_template/"));
    expect(ilmPut).toBeGreaterThanOrEqual(0);
    expect(ilmPut).toBeLessThan(firstTemplate); // a template must not name a policy that is not there yet
    expect(s.policies.get("cpost-metrics")?.policy).toEqual({
      _meta: { managed_by: "cpost", version: 2, description: "cpost metrics: roll over at 30 days or 50gb per primary shard, keep" },
      phases: { hot: { min_age: "0ms", actions: { rollover: { max_age: "30d", max_primary_shard_size: "50gb" } } } },
    });
    expect(s.indexTemplates.get("metrics-cpost.container")?.composed_of).toEqual(["cpost-lifecycle@settings", "cpost-common@mappings", "cpost-container@mappings"]);
    const { sink } = await esSink(s);
    await feed(sink, runInfo("run-ilm"), series("reader", 20, { gpus: 1 }));
    expect(s.settings(CONTAINER)?.["index.lifecycle.name"]).toBe("cpost-metrics");
    expect(s.settings(GPU)?.["index.lifecycle.name"]).toBe("cpost-metrics");

    const again = await cpostSource(["es", "setup", "--es-url", s.url]);
    expect(again.stdout).toContain("  lifecycle: ILM policy cpost-metrics: unchanged (version 2)");
    const retention = await cpostSource(["es", "setup", "--es-url", s.url, "--force", "--retention-days", "30"]);
    expect(retention.code).toBe(0);
    expect(retention.stdout).toContain("  lifecycle: ILM policy cpost-metrics: updated (version 2 -> 2)");
    expect((s.policies.get("cpost-metrics")?.policy as Record<string, any>).phases.delete).toEqual({ min_age: "30d", actions: { delete: {} } });
    const bad = await cpostSource(["es", "setup", "--es-url", s.url, "--retention-days", "soon"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--retention-days "soon" is not a whole number of days');

    // A policy of that name that cpost did not make is the cluster owner's: left alone, and said.
    s.policies.set("cpost-metrics", { version: 7, modified_date: "2025-01-01T00:00:00Z", policy: { phases: { hot: { actions: {} } } } });
    const theirs = await cpostSource(["es", "setup", "--es-url", s.url, "--force"]);
    expect(theirs.stdout).toContain("  lifecycle: ILM policy cpost-metrics: kept (there already, not made by cpost)");
    expect(s.policies.get("cpost-metrics")?.version).toBe(7);
  });

  test("OpenSearch with the ISM plugin: an ISM policy that finds the data streams by name, no index.lifecycle setting; an update names the sequence numbers", async () => {
    const s = server({ distribution: "opensearch", version: "2.19.2", lifecycle: true });
    const setup = await cpostSource(["es", "setup", "--es-url", s.url]);
    expect(setup.stderr).toBe("");
    expect(setup.code).toBe(0);
    expect(setup.stdout).toContain(`OpenSearch 2.19.2 at ${s.url}\n  lifecycle: ISM policy cpost-metrics: created\n`);
    const stored = s.policies.get("cpost-metrics") as { policy: Record<string, any> };
    expect(stored.policy.ism_template).toEqual([{ index_patterns: ["metrics-cpost.container-*", "metrics-cpost.gpu-*"], priority: 200 }]);
    expect(stored.policy.states[0].actions).toEqual([{ rollover: { min_index_age: "30d", min_primary_shard_size: "50gb" } }]);
    expect(s.componentTemplates.has("cpost-lifecycle@settings")).toBe(false);
    expect(s.indexTemplates.get("metrics-cpost.container")?.composed_of).toEqual(["cpost-common@mappings", "cpost-container@mappings"]);

    const again = await cpostSource(["es", "setup", "--es-url", s.url]);
    expect(again.stdout).toContain("  lifecycle: ISM policy cpost-metrics: unchanged (version 2)");
    // ISM only overwrites a policy when told which one (if_seq_no, if_primary_term); without them its answer is a 409.
    const forced = await cpostSource(["es", "setup", "--es-url", s.url, "--force", "--retention-days", "14"]);
    expect(forced.stderr).toBe("");
    expect(forced.stdout).toContain("  lifecycle: ISM policy cpost-metrics: updated (version 2 -> 2)");
    expect(s.requests.some((r) => r.method === "PUT" && r.path === "/_plugins/_ism/policies/cpost-metrics" && r.status === 200)).toBe(true);
    const states = (s.policies.get("cpost-metrics") as { policy: { states: Array<Record<string, any>> } }).policy.states;
    expect(states.map((st) => st.name)).toEqual(["hot", "delete"]);
    expect(states[0]!.transitions).toEqual([{ state_name: "delete", conditions: { min_rollover_age: "14d" } }]);

    // The stand-in plays the engine's own refusal of an ILM setting, which is why the templates carry none on OpenSearch.
    const ilmSetting = await fetch(`${s.url}/_component_template/x`, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ template: { settings: { "index.lifecycle.name": "p" } } }) });
    expect(ilmSetting.status).toBe(400);
    expect(await ilmSetting.text()).toContain("unknown setting [index.lifecycle.name]");
  });

  test("OpenSearch without the ISM plugin (the minimal engine): no policy, and setup says what to do instead", async () => {
    const s = server({ distribution: "opensearch", version: "2.19.2" });
    const setup = await cpostSource(["es", "setup", "--es-url", s.url]);
    expect(setup.code).toBe(0);
    expect(setup.stdout).toContain("  lifecycle: none: no index-management plugin (ISM) on this cluster: roll data streams over (POST <stream>/_rollover) and delete old backing indices yourself");
    expect(setup.stdout).toContain("  index template metrics-cpost.container: created");
    expect(s.policies.size).toBe(0);
    const dry = await cpostSource(["es", "setup", "--dry-run", "--engine", "opensearch"]);
    expect(dry.stdout.split("\n")[0]).toBe("PUT /_plugins/_ism/policies/cpost-metrics");
    expect(dry.stdout).not.toContain("index.lifecycle");
  });

  test("a sink that finds no templates on OpenSearch and may not put them holds its documents in the spool (no plain index is made); after es setup they arrive", async () => {
    const options: EsServerOptions = { distribution: "opensearch", version: "2.19.2", denyTemplates: true };
    const s = server(options);
    const spool = tempDir();
    const batches = series("reader", 300);
    const held = await esSink(s, { "es-spool-dir": spool });
    await feed(held.sink, runInfo("run-held"), batches);
    expect(held.out.text).toContain("elasticsearch: OpenSearch 2.19.2 has no cpost templates and cpost could not put them (elasticsearch at");
    expect(held.out.text).toContain("denied the credentials the right to put component template cpost-common@mappings (HTTP 403 security_exception: no permissions for [cluster:admin/component_template/put]");
    expect(held.out.text).toContain("run `cpost es setup`, and the next run sends them");
    expect(held.out.text).toMatch(/^elasticsearch: 0 sent, 300 spooled in /m);
    expect(s.stats.bulkRequests).toBe(0);
    expect(s.indices()).toEqual([]);

    // An administrator runs es setup (credentials that may put templates); the next run sends what waited.
    options.denyTemplates = false;
    expect((await cpostSource(["es", "setup", "--es-url", s.url])).code).toBe(0);
    const next = await esSink(s, { "es-spool-dir": spool });
    await feed(next.sink, runInfo("run-after-setup"), []);
    expect(next.out.text).toBe("elasticsearch: 300 documents from earlier runs wait in " + join(spool, readdirSync(spool)[0]!) + "; sending them in the background\nelasticsearch: 300 sent (300 from the spool), 0 spooled, 0 rejected\n");
    expectExactlyOnce(s, batches);
    expect(s.fieldType(CONTAINER, "metrics.cpu.percent")).toBe("float");
  });

  test("a sink that finds no templates on Elasticsearch and may not put them sends into the built-in metrics data streams, and says so", async () => {
    const s = server({ denyTemplates: true });
    const batches = series("reader", 200);
    const { sink, out } = await esSink(s);
    await feed(sink, runInfo("run-builtin"), batches);
    expect(out.text).toContain("elasticsearch: no cpost templates on Elasticsearch 8.15.0 and cpost could not put them (");
    expect(out.text).toContain("documents go to the built-in metrics-*-* data streams with guessed field types: run `cpost es setup`");
    expect(out.text).toContain("elasticsearch: 200 sent, 0 spooled, 0 rejected");
    expectExactlyOnce(s, batches);
    expect(s.fieldType(CONTAINER, "cpost.operator")).toBe("keyword"); // the built-in template's strings_as_keyword
  });
});

describe("https", () => {
  const openssl = Bun.which("openssl");
  test.skipIf(!openssl)("trusts the CA given with --es-ca (and refuses an unknown certificate)", async () => {
    const dir = tempDir();
    const made = Bun.spawnSync([openssl!, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
      "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")], { stderr: "pipe" });
    expect(made.exitCode).toBe(0);
    const s = server({ tls: { cert: await Bun.file(join(dir, "cert.pem")).text(), key: await Bun.file(join(dir, "key.pem")).text() } });
    const trusted = await esSink(s, { "es-ca": join(dir, "cert.pem") });
    await feed(trusted.sink, runInfo("run-tls"), series("reader", 40));
    expect(said(trusted.out)).toBe("elasticsearch: 40 sent, 0 spooled, 0 rejected\n");
    const untrusted = await esSink(s, { "es-retries": "0" });
    await feed(untrusted.sink, runInfo("run-tls-2"), series("writer", 40));
    expect(untrusted.out.text).toMatch(/not answering \(.*(CERT|SELF_SIGNED|certificate).*\)/i);
    expect(untrusted.out.text).toContain("0 sent, 40 spooled");
  });
});
