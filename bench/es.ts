/**
 * Benchmark of the Elasticsearch sink against the ES-protocol test server
 * (test/es-server.ts, in its own process so its CPU is not cpost's), or with
 * `--opensearch` against a real OpenSearch node (test/opensearch/node.ts,
 * 1 GiB heap, `cpost es setup`'s templates; its CPU is the node's process):
 *
 * 1. docs/s from one cpost into the server, beside the baseline of the same
 *    documents pre-encoded and posted bare with fetch (the server's and the
 *    transport's ceiling, measured in the same run); every document counted.
 * 2. the sink's extra CPU at 1 kHz sampling: batches of 250 rows every
 *    250 ms in real time, once into the es sink and once into a null sink.
 *
 *   node_modules/.bin/bun bench/es.ts [docs=500000] [seconds-at-1kHz=10] [--opensearch]
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import type { MetricColumn, RunInfo, RunResult, SampleBatch, Sink } from "../core/contracts/types.ts";
import elasticsearchSink from "../plugins/elasticsearch/index.ts";
import { defineEncoder } from "../plugins/elasticsearch/documents.ts";
import { KNOWN_METRICS, templateRequests } from "../plugins/elasticsearch/templates.ts";
import { startOpenSearch } from "../test/opensearch/node.ts";
import { sinkFactory } from "../plugins/index.ts";

const elasticsearch = sinkFactory(elasticsearchSink);

const real = process.argv.includes("--opensearch");
const positional = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const docs = Number(positional[0] ?? (real ? 200_000 : 500_000));
const seconds = Number(positional[1] ?? 10);
const dir = mkdtempSync(join(tmpdir(), "cpost-bench-es-"));

const server = real
  ? await (async () => {
    const node = await startOpenSearch({ name: "bench", heapMb: 1024, jit: "full" });
    for (const t of templateRequests(false)) {
      const res = await fetch(`${node.url}/${t.kind === "component" ? "_component_template" : "_index_template"}/${t.name}`, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify(t.body) });
      if (!res.ok) throw new Error(`template ${t.name}: ${await res.text()}`);
    }
    console.log(`a real OpenSearch 2.19.2 node (1 GiB heap), up in ${Math.round(node.startedInMs)} ms`);
    return { url: node.url, pid: node.pid, stop: () => node.stop() };
  })()
  : await (async () => {
    const proc = Bun.spawn([process.execPath, join(import.meta.dir, "../test/es-server.ts"), "--ids-only"], { stdout: "pipe", stderr: "inherit" });
    const reader = proc.stdout.getReader();
    const { url } = JSON.parse(new TextDecoder().decode((await reader.read()).value)) as { url: string };
    return { url, pid: proc.pid, stop: async () => void proc.kill() };
  })();
const url = server.url;
const serverName = real ? "OpenSearch" : "test server";
/** CPU time the server process has used, ms (utime + stime of /proc/<pid>/stat, in clock ticks of 10 ms). */
const serverCpuMs = () => {
  const fields = readFileSync(`/proc/${server.pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
};
const stats = async (): Promise<{ count: number }> => {
  if (!real) return (await (await fetch(`${url}/_test/stats`)).json()) as { count: number };
  await fetch(`${url}/metrics-cpost.*/_refresh`, { method: "POST" });
  const answer = (await (await fetch(`${url}/metrics-cpost.*/_count`)).json()) as { count?: number };
  return { count: answer.count ?? 0 };
};

// Every container metric cpost knows (the cgroup and blkio collectors' full set), and optionally GPUs.
function columns(gpus: number): MetricColumn[] {
  const out: MetricColumn[] = [];
  for (const [name, unit] of Object.entries(KNOWN_METRICS)) {
    const perDevice = name.startsWith("gpu.") && !name.startsWith("gpu.process_");
    if (!perDevice) out.push({ name, unit: unit as MetricColumn["unit"], kind: "gauge", key: name, collector: "bench" });
    else for (let d = 0; d < gpus; d++) out.push({ name, unit: unit as MetricColumn["unit"], kind: "gauge", device: d, key: `${name}[${d}]`, collector: "bench" });
  }
  return out;
}

function batchMaker(operator: string, gpus: number) {
  const cols = columns(gpus);
  const whole = cols.map((c) => ["ns", "bytes", "count", "ops", "us"].includes(c.unit));
  let row = 0;
  return (rows: number, startMs: number): SampleBatch => {
    // As collectors give them: whole numbers for counters and bytes, full-precision doubles for percent/W/°C.
    const values = new Float64Array(rows * cols.length);
    for (let i = 0; i < values.length; i++) {
      const x = (row * 7919 + i * 104729) % 1_000_000;
      values[i] = whole[i % cols.length] ? x * 4096 : x / 7;
    }
    const b = { operator, containerId: operator.padEnd(64, "0"), columns: cols, rows, values,
      timestampMs: Float64Array.from({ length: rows }, (_, r) => startMs + r), monotonicMs: Float64Array.from({ length: rows }, (_, r) => row + r) };
    row += rows;
    return b;
  };
}

function run(id: string): RunInfo {
  return {
    id, pipeline: { file: "bench.yaml", apiVersion: "0.4.0", name: "bench", operators: [], order: [] },
    host: { hostname: "bench", cpus: 2, memoryBytes: 8e9, kernel: "", arch: "x64", cgroupVersion: 1, engine: "docker", engineVersion: "" },
    collectors: ["cgroup", "blkio"], sinks: ["elasticsearch"], intervalMs: 1, startedAtMs: Date.now(), cpostVersion: "bench",
  };
}
const RESULT = { results: [], summaries: [], endedAtMs: 0, interval: { target: 1, p50: 1, p99: 1, samples: 0 }, interrupted: false } as RunResult;
const said: string[] = [];
const sinkFor = (spool: string) =>
  elasticsearch({ out: { write: (t: string) => said.push(t.trim()) }, options: { "es-url": url, "es-spool-dir": join(dir, spool), "es-end-timeout": "5m" } });
const rate = (n: number, ms: number) => `${Math.round(n / (ms / 1000)).toLocaleString("en-US")} docs/s`;

// ---- 1. throughput
const startMs = Date.UTC(2025, 0, 1);
let epoch = startMs; // every document of the benchmark has its own timestamp, so none is a 409
const batchesOf = (make: ReturnType<typeof batchMaker>, n: number) => {
  const out: SampleBatch[] = [];
  for (let done = 0; done < n; done += 250) out.push(make(Math.min(250, n - done), (epoch += 250)));
  return out;
};

/** Feeds `batches` to a fresh sink at `perSecond` docs/s (Infinity: as fast as they can be written); docs/s until end() returned. */
async function throughput(batches: SampleBatch[], perSecond: number, label: string) {
  const before = (await stats()).count;
  const sink = await sinkFor(label);
  await sink.start(run(label));
  const cpu0 = process.cpuUsage();
  const server0 = serverCpuMs();
  const t0 = performance.now();
  let written = 0;
  for (const b of batches) {
    sink.write(b);
    written += b.rows;
    const due = t0 + (written / perSecond) * 1000;
    if (Number.isFinite(perSecond)) await Bun.sleep(Math.max(0, due - performance.now()));
    else if (written % 5000 === 0) await Bun.sleep(0); // as under the runner: writes interleave with I/O
  }
  await sink.end(RESULT);
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  const serverMs = serverCpuMs() - server0;
  const line = said.splice(0).join(" / ");
  const viaSpool = Number(/\((\d+) from the spool\)/.exec(line)?.[1] ?? 0);
  return { ms, docs: written, stored: (await stats()).count - before, viaSpool, line, cpuMs, serverMs };
}

{
  // Baseline: the same kind of documents, encoded beforehand, posted bare, two requests in flight as the sink does.
  const encoder = defineEncoder(run("baseline"), { namespace: "default", legacy: false });
  const items: string[] = [];
  for (const b of batchesOf(batchMaker("baseline", 0), docs)) encoder.encode(b, items);
  const bodies: string[] = [];
  for (let i = 0; i < items.length; i += 5000) bodies.push(items.slice(i, i + 5000).join(""));
  const t0 = performance.now();
  const post = async (body: string) => (await fetch(`${url}/_bulk`, { method: "POST", body, headers: { "content-type": "application/x-ndjson" } })).arrayBuffer();
  for (let i = 0; i < bodies.length; i += 2) await Promise.all(bodies.slice(i, i + 2).map(post));
  const baseMs = performance.now() - t0;
  const bytes = items.reduce((n, x) => n + x.length, 0);
  items.length = 0;

  const encodeOnly = defineEncoder(run("encode"), { namespace: "default", legacy: false });
  const toEncode = batchesOf(batchMaker("encode", 0), docs);
  const e0 = performance.now();
  for (const b of toEncode) encodeOnly.encode(b, items);
  const encodeMs = performance.now() - e0;
  items.length = 0;

  const baseRate = docs / (baseMs / 1000);
  console.log(`es throughput into the ${serverName}, container documents of ${columns(0).length} metrics (~${Math.round(bytes / docs)} bytes each):`);
  console.log(`  baseline, ${docs.toLocaleString("en-US")} pre-encoded documents posted bare: ${rate(docs, baseMs)}`);
  console.log(`  encoding alone:                                    ${rate(docs, encodeMs)}`);
  const flat = await throughput(batchesOf(batchMaker("flat-out", 0), docs), Infinity, "flat-out");
  console.log(`  cpost es sink, written as fast as possible:         ${rate(flat.docs, flat.ms)} = ${(flat.docs / (flat.ms / 1000) / baseRate).toFixed(2)}x baseline; ${flat.viaSpool} went through the spool (queue past its memory bound); stored ${flat.stored} of ${flat.docs}`);
  console.log(`    CPU per document: cpost ${((flat.cpuMs * 1000) / flat.docs).toFixed(1)} us (= ${Math.round(flat.docs / (flat.cpuMs / 1000)).toLocaleString("en-US")} docs per CPU-second, batch making included), ${serverName} ${((flat.serverMs * 1000) / flat.docs).toFixed(1)} us`);
  console.log("  cpost es sink at a steady rate, 3 s each (kept up = nothing needed the spool and >= 90 % of the rate was done by end()):");
  for (const target of real ? [5_000, 10_000, 20_000, 40_000] : [25_000, 50_000, 75_000, 100_000, 150_000]) {
    const r = await throughput(batchesOf(batchMaker(`paced-${target}`, 0), target * 3), target, `paced-${target}`);
    const kept = r.viaSpool === 0 && r.stored === r.docs && r.docs / (r.ms / 1000) >= 0.9 * target;
    console.log(`    ${target.toLocaleString("en-US").padStart(7)} docs/s asked: ${rate(r.docs, r.ms).padStart(14)} done (write -> end), ${String(r.viaSpool).padStart(6)} via the spool, stored ${r.stored} of ${r.docs}, CPU cpost ${Math.round((100 * r.cpuMs) / r.ms)} % / server ${Math.round((100 * r.serverMs) / r.ms)} %: ${kept ? "kept up" : "fell behind"}`);
  }
  if (!real) console.log("  goal: >= 50,000 docs/s from one cpost");
}

// ---- 2. CPU at 1 kHz
async function cpuAt1kHz(sink: Sink, gpus: number, label: string): Promise<number> {
  const make = batchMaker(label, gpus);
  await sink.start(run(label));
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const wall0 = Date.now();
  for (let tick = 1; tick <= seconds * 4; tick++) {
    sink.write(make(250, wall0 + (tick - 1) * 250));
    await Bun.sleep(Math.max(0, t0 + tick * 250 - performance.now()));
  }
  await sink.end(RESULT);
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1000 / (performance.now() - t0); // fraction of one core
}
const nullSink = (): Sink => ({ name: "null", start() {}, write() {}, operatorDone() {}, end() {} });
console.log(`\nCPU at 1 kHz sampling, ${seconds} s each, batches of 250 rows every 250 ms (fraction of one core, this process only):`);
for (const gpus of [0, 2]) {
  const base = await cpuAt1kHz(nullSink(), gpus, `null-${gpus}`);
  const before = (await stats()).count;
  const es = await cpuAt1kHz(await sinkFor(`cpu-${gpus}`), gpus, `es-${gpus}`);
  const stored = (await stats()).count - before;
  const docsPerS = 1000 * (1 + gpus);
  said.splice(0);
  console.log(`  ${gpus} GPUs (${docsPerS} docs/s): null sink ${(base * 100).toFixed(2)} %, es sink ${(es * 100).toFixed(2)} %, extra ${((es - base) * 100).toFixed(2)} % of a core (${((es - base) * 1e6 / docsPerS).toFixed(1)} us per doc); stored ${stored} of ${seconds * docsPerS}`);
}

console.log(`\nload average during the run: ${loadavg().map((l) => l.toFixed(2)).join(" ")} on ${cpus().length} cores (other work on this machine slows both columns)`);
await server.stop();
rmSync(dir, { recursive: true, force: true });
