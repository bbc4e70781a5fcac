/**
 * The Grafana dashboards query only what the sinks really write: one
 * reading of every metric the built-in collectors declare (host, cgroup,
 * blkio, nvml, GPUs 0 and 1) goes through the real elasticsearch sink into
 * the ES test server (both document shapes) and through the real prometheus
 * sink; every field, metric name and label a panel or variable reads must be
 * among them. test/monitor.test.ts runs the Prometheus queries themselves
 * against a real Prometheus fed by a real monitor session.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { builtinCollectors } from "../collectors/index.ts";
import { grafanaDashboard, type DashboardSource } from "../core/cli/commands/grafana-dashboard.ts";
import { columnKey, type MetricColumn, type RunInfo, type SampleBatch, type SinkOptions } from "../core/contracts/types.ts";
import elasticsearchSink from "../plugins/elasticsearch/index.ts";
import prometheusSink, { type PrometheusSink } from "../plugins/prometheus.ts";
import { sinkFactory } from "../plugins/index.ts";
import { startEsServer } from "./es-server.ts";
import { cpostSource } from "./support.ts";

const elasticsearch = sinkFactory(elasticsearchSink);
const createPrometheusSink = (options: SinkOptions) => sinkFactory(prometheusSink)(options) as PrometheusSink;

type Json = Record<string, unknown>;
const spoolDir = mkdtempSync(join(tmpdir(), "cpost-dashboard-spool-"));
afterAll(() => rmSync(spoolDir, { recursive: true, force: true }));

/** Columns of every metric a built-in collector declares; per-device GPU metrics for GPUs 0 and 1. */
async function declaredColumns(names: string[]): Promise<MetricColumn[]> {
  const columns: MetricColumn[] = [];
  for (const name of names) {
    const collector = (await builtinCollectors[name]!()).default;
    for (const spec of collector.metrics) {
      const perDevice = spec.name.startsWith("gpu.") && !spec.name.startsWith("gpu.process_");
      for (const device of perDevice ? [0, 1] : [undefined]) {
        const s = device === undefined ? spec : { ...spec, device };
        columns.push({ ...s, key: columnKey(s), collector: name });
      }
    }
  }
  return columns;
}

function batches(container: MetricColumn[], host: MetricColumn[]): SampleBatch[] {
  const at = Date.now();
  const one = (containerId: string, operator: string, columns: MetricColumn[], t: number): SampleBatch => ({
    operator, containerId, columns, rows: 1,
    timestampMs: Float64Array.of(t), monotonicMs: Float64Array.of(t - at),
    values: Float64Array.from(columns, (_, i) => 1000 + i),
  });
  return [one("f".repeat(64), "segment", container, at), one("", "host", host, at + 1)];
}

const run: RunInfo = {
  id: "dash-1",
  pipeline: { file: "", apiVersion: "", name: "dashboards", operators: [], order: [] },
  host: { hostname: "h", cpus: 2, memoryBytes: 8e9, kernel: "k", arch: "x64", cgroupVersion: 1, engine: "docker", engineVersion: "20.10" },
  collectors: [], sinks: [], intervalMs: 10, startedAtMs: Date.now() - 10, cpostVersion: "test",
};
const ended = { results: [], summaries: [], endedAtMs: Date.now(), interval: { target: 10, p50: 10, p99: 10, samples: 1 }, interrupted: false };

function paths(doc: Json, prefix = ""): string[] {
  return Object.entries(doc).flatMap(([k, v]) => (v !== null && typeof v === "object" && !Array.isArray(v) ? paths(v as Json, `${prefix}${k}.`) : [`${prefix}${k}`]));
}

const targets = (dashboard: Json): Json[] => (dashboard.panels as Json[]).flatMap((p) => (p.targets as Json[] | undefined) ?? []);
const variables = (dashboard: Json) => (dashboard.templating as { list: Json[] }).list;

for (const source of ["es", "es-legacy"] as const satisfies DashboardSource[]) {
  test(`the ${source} dashboard reads only fields the elasticsearch sink writes`, async () => {
    const server = startEsServer();
    try {
      const sink = await elasticsearch({ options: { "es-url": server.url, "es-spool-dir": spoolDir, ...(source === "es-legacy" ? { "es-legacy": "true" } : {}) }, out: { write: () => true } });
      await sink.start(run);
      for (const b of batches(await declaredColumns(["cgroup", "blkio", "nvml"]), await declaredColumns(["host", "nvml"]))) await sink.write(b);
      await sink.end(ended);
      const docs = server.indices().flatMap((index) => [...server.docs(index).values()] as Json[]);
      expect(server.indices().sort()).toEqual(source === "es" ? ["metrics-cpost.container-default", "metrics-cpost.gpu-default"] : ["cpumetrics", "gpumetrics"]);
      const written = new Set(docs.flatMap((d) => paths(d)));

      const dashboard = grafanaDashboard({ source, timezone: "utc" });
      const read: string[] = [];
      for (const t of targets(dashboard)) {
        read.push(t.timeField as string, ...(t.bucketAggs as Json[]).map((b) => b.field as string));
        read.push(...(t.metrics as Json[]).filter((m) => m.type !== "derivative").map((m) => m.field as string));
        read.push(...[...String(t.query).matchAll(/([\w.@]+):/g)].map((m) => m[1]!));
        // A derivative refers to its metric by id, which must exist and be hidden.
        for (const d of (t.metrics as Json[]).filter((m) => m.type === "derivative")) {
          expect((t.metrics as Json[]).find((m) => m.id === d.pipelineAgg)).toMatchObject({ type: "max", hide: true });
        }
      }
      for (const v of variables(dashboard).filter((v) => v.type === "query")) read.push((JSON.parse(v.query as string) as { field: string }).field);
      const missing = [...new Set(read)].filter((f) => !written.has(f));
      expect(missing).toEqual([]);
      expect(read.length).toBeGreaterThan(40);
    } finally {
      server.close();
    }
  });
}

test("the prometheus dashboard reads only series and labels the prometheus sink exposes", async () => {
  const sink = createPrometheusSink({ options: { "prometheus-listen": "127.0.0.1:0" } });
  try {
    await sink.start(run);
    for (const b of batches(await declaredColumns(["cgroup", "blkio", "nvml"]), await declaredColumns(["host", "nvml"]))) await sink.write(b);
    const text = await (await fetch(sink.url)).text();
    await sink.end(ended);
    const names = new Set([...text.matchAll(/^(cpost_\w+)\{/gm)].map((m) => m[1]!));
    const labels = new Set([...text.matchAll(/[{,](\w+)="/g)].map((m) => m[1]!));
    const dashboard = grafanaDashboard({ source: "prometheus", timezone: "utc" });
    const queries = [...targets(dashboard).map((t) => t.expr as string), ...variables(dashboard).filter((v) => v.type === "query").map((v) => v.definition as string)];
    const readNames = new Set(queries.flatMap((q) => [...q.matchAll(/\bcpost_\w+/g)].map((m) => m[0])));
    const readLabels = new Set([
      ...queries.flatMap((q) => [...q.matchAll(/by \(([^)]*)\)/g)].flatMap((m) => m[1]!.split(",").map((l) => l.trim()))),
      ...queries.flatMap((q) => [...q.matchAll(/(\w+)=~?"/g)].map((m) => m[1]!)),
      ...queries.flatMap((q) => [...q.matchAll(/label_values\([^,]+,\s*(\w+)\)/g)].map((m) => m[1]!)),
      ...targets(dashboard).flatMap((t) => [...String(t.legendFormat).matchAll(/\{\{(\w+)\}\}/g)].map((m) => m[1]!)),
    ]);
    expect([...readNames].filter((n) => !names.has(n))).toEqual([]);
    expect([...readLabels].filter((l) => !labels.has(l))).toEqual([]);
    expect(readNames.size).toBeGreaterThanOrEqual(12);
  } finally {
    await sink.close();
  }
});

test("dashboards import as-is: datasource variables, unique ids, no overlapping panels, UTC", () => {
  for (const source of ["prometheus", "es", "es-legacy"] as const) {
    const dashboard = grafanaDashboard({ source, timezone: "utc" });
    expect(dashboard).toMatchObject({ id: null, uid: `cpost-${source}`, timezone: "utc", schemaVersion: 39 });
    const defined = new Set(variables(dashboard).filter((v) => v.type === "datasource").map((v) => `\${${v.name as string}}`));
    const panels = dashboard.panels as Array<{ id: number; type: string; datasource?: { uid: string }; gridPos: { x: number; y: number; w: number; h: number }; targets?: Array<{ datasource: { uid: string } }> }>;
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    for (const p of panels.filter((p) => p.type !== "row")) {
      expect(defined.has(p.datasource!.uid)).toBe(true);
      for (const t of p.targets!) expect(t.datasource.uid).toBe(p.datasource!.uid);
    }
    const cells = new Set<string>();
    for (const { gridPos: g } of panels) {
      for (let x = g.x; x < g.x + g.w; x++) for (let y = g.y; y < g.y + g.h; y++) {
        expect(cells.has(`${x},${y}`)).toBe(false);
        cells.add(`${x},${y}`);
      }
    }
  }
  expect(grafanaDashboard({ source: "es", timezone: "browser" }).timezone).toBe("browser");
});

test("cpost grafana-dashboard prints it, wraps it for the HTTP API, and refuses unknown datasources", async () => {
  const plain = await cpostSource(["grafana-dashboard"]);
  expect(plain.code).toBe(0);
  expect(JSON.parse(plain.stdout)).toEqual(grafanaDashboard({ source: "prometheus", timezone: "utc" }));
  const api = await cpostSource(["grafana-dashboard", "--datasource", "es", "--api", "--timezone", "browser"]);
  expect(JSON.parse(api.stdout)).toEqual({ dashboard: grafanaDashboard({ source: "es", timezone: "browser" }), overwrite: true });
  const bad = await cpostSource(["grafana-dashboard", "--datasource", "influx"]);
  expect(bad.code).toBe(2);
  expect(bad.stderr).toContain("--datasource influx: expected prometheus, es or es-legacy");
});
