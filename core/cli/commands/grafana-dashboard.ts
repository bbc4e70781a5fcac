/**
 * `cpost grafana-dashboard`: prints a Grafana dashboard (JSON) over what
 * cpost's sinks write: GPU utilisation and memory per GPU index, CPU,
 * memory and disk per operator/container, and the host. Datasources are
 * dashboard variables (picked at import, no `__inputs` to fill), time is
 * shown in UTC unless asked otherwise (cpost stores true UTC epoch time).
 */
import { defineCommand } from "citty";
import { CpostError } from "../../contracts/errors.ts";
import { HOST_OPERATOR } from "../../contracts/types.ts";

/** What the dashboard reads from. */
export type DashboardSource = "prometheus" | "es" | "es-legacy";

/** Options of the generator. */
export interface DashboardOptions {
  source: DashboardSource;
  timezone: "utc" | "browser";
  title?: string;
}

type Json = Record<string, unknown>;

/** One chart: a title, a unit, and one query per source. */
interface PanelSpec {
  title: string;
  unit: string;
  prometheus: Array<{ expr: string; legend: string }>;
  /** ES: which index group, the metric field, how to aggregate it, what to split series by, and a Lucene filter. */
  es: Array<{ group: "container" | "gpu"; field: keyof EsFields; agg: "max" | "avg" | "rate"; by: keyof EsFields; filter: "containers" | "host" | "all" }>;
}

/** Field names of the two Elasticsearch document shapes (plugins/elasticsearch/documents.ts). */
interface EsFields {
  time: string;
  operator: string;
  container: string;
  pipeline: string;
  gpuIndex: string;
  cpuPercent: string;
  memoryUsage: string;
  memoryWorkingSet: string;
  diskRead: string;
  diskWrite: string;
  gpuUtilization: string;
  gpuMemoryUsed: string;
  gpuMemoryTotal: string;
  gpuPower: string;
  gpuTemperature: string;
}

/** Data streams `metrics-cpost.{container,gpu}-*`: ECS-style nesting. */
const ES_FIELDS: EsFields = {
  time: "@timestamp", operator: "cpost.operator", container: "container.id", pipeline: "cpost.pipeline", gpuIndex: "gpu.index",
  cpuPercent: "metrics.cpu.percent", memoryUsage: "metrics.memory.usage_bytes", memoryWorkingSet: "metrics.memory.working_set_bytes",
  diskRead: "metrics.io.read_bytes", diskWrite: "metrics.io.write_bytes",
  gpuUtilization: "gpu.utilization_pct", gpuMemoryUsed: "gpu.memory_used_bytes", gpuMemoryTotal: "gpu.memory_total_bytes",
  gpuPower: "gpu.power_w", gpuTemperature: "gpu.temperature_c",
};
/** The Clara Monitoring Platform's `cpumetrics` / `gpumetrics` indices (`es-legacy` documents, MB where the original had MB). */
const ES_LEGACY_FIELDS: EsFields = {
  time: "timestamp", operator: "operator", container: "container_id", pipeline: "pipeline", gpuIndex: "index",
  cpuPercent: "cpu_utilization__pct", memoryUsage: "memory_usage__MB", memoryWorkingSet: "memory_working_set__MB",
  diskRead: "disk_read__B", diskWrite: "disk_write__B",
  gpuUtilization: "gpu_utilization__pct", gpuMemoryUsed: "memory_used__MB", gpuMemoryTotal: "memory_total__MB",
  gpuPower: "power_draw__W", gpuTemperature: "gpu_temperature__C",
};

const SEL = 'pipeline=~"$pipeline",operator=~"$operator"';
const HOST = 'pipeline=~"$pipeline"';

const ROWS: Array<{ title: string; panels: PanelSpec[] }> = [
  {
    title: "GPUs",
    panels: [
      { title: "GPU utilisation per index", unit: "percent", prometheus: [{ expr: `max by (gpu) (cpost_gpu_utilization_ratio{${HOST}}) * 100`, legend: "GPU {{gpu}}" }], es: [{ group: "gpu", field: "gpuUtilization", agg: "max", by: "gpuIndex", filter: "all" }] },
      { title: "GPU memory used per index", unit: "bytes", prometheus: [{ expr: `max by (gpu) (cpost_gpu_memory_used_bytes{${HOST}})`, legend: "GPU {{gpu}} used" }, { expr: `max by (gpu) (cpost_gpu_memory_total_bytes{${HOST}})`, legend: "GPU {{gpu}} total" }], es: [{ group: "gpu", field: "gpuMemoryUsed", agg: "max", by: "gpuIndex", filter: "all" }, { group: "gpu", field: "gpuMemoryTotal", agg: "max", by: "gpuIndex", filter: "all" }] },
      { title: "GPU power", unit: "watt", prometheus: [{ expr: `max by (gpu) (cpost_gpu_power_watts{${HOST}})`, legend: "GPU {{gpu}}" }], es: [{ group: "gpu", field: "gpuPower", agg: "max", by: "gpuIndex", filter: "all" }] },
      { title: "GPU temperature", unit: "celsius", prometheus: [{ expr: `max by (gpu) (cpost_gpu_temperature_celsius{${HOST}})`, legend: "GPU {{gpu}}" }], es: [{ group: "gpu", field: "gpuTemperature", agg: "max", by: "gpuIndex", filter: "all" }] },
    ],
  },
  {
    title: "Operators and containers",
    panels: [
      { title: "CPU per operator (100% = one core)", unit: "percent", prometheus: [{ expr: `sum by (operator) (rate(cpost_container_cpu_usage_seconds_total{${SEL}}[$__rate_interval])) * 100`, legend: "{{operator}}" }], es: [{ group: "container", field: "cpuPercent", agg: "max", by: "operator", filter: "containers" }] },
      { title: "Memory per operator", unit: "bytes", prometheus: [{ expr: `sum by (operator) (cpost_container_memory_usage_bytes{${SEL}})`, legend: "{{operator}}" }], es: [{ group: "container", field: "memoryUsage", agg: "max", by: "operator", filter: "containers" }] },
      { title: "Memory working set per container", unit: "bytes", prometheus: [{ expr: `max by (operator, container) (cpost_container_memory_working_set_bytes{${SEL}})`, legend: "{{operator}} {{container}}" }], es: [{ group: "container", field: "memoryWorkingSet", agg: "max", by: "container", filter: "containers" }] },
      { title: "Disk read and write per operator", unit: "Bps", prometheus: [{ expr: `sum by (operator) (rate(cpost_container_io_read_bytes_total{${SEL}}[$__rate_interval]))`, legend: "{{operator}} read" }, { expr: `sum by (operator) (rate(cpost_container_io_write_bytes_total{${SEL}}[$__rate_interval]))`, legend: "{{operator}} write" }], es: [{ group: "container", field: "diskRead", agg: "rate", by: "operator", filter: "containers" }, { group: "container", field: "diskWrite", agg: "rate", by: "operator", filter: "containers" }] },
    ],
  },
  {
    title: "Host",
    panels: [
      { title: "Host CPU (100% = one core)", unit: "percent", prometheus: [{ expr: `max(rate(cpost_host_cpu_usage_seconds_total{${HOST}}[$__rate_interval])) * 100`, legend: "host" }], es: [{ group: "container", field: "cpuPercent", agg: "max", by: "operator", filter: "host" }] },
      { title: "Host memory", unit: "bytes", prometheus: [{ expr: `max(cpost_host_memory_usage_bytes{${HOST}})`, legend: "used (with page cache)" }, { expr: `max(cpost_host_memory_working_set_bytes{${HOST}})`, legend: "used (without reclaimable cache)" }], es: [{ group: "container", field: "memoryUsage", agg: "max", by: "operator", filter: "host" }, { group: "container", field: "memoryWorkingSet", agg: "max", by: "operator", filter: "host" }] },
      { title: "Host disk", unit: "Bps", prometheus: [{ expr: `max(rate(cpost_host_io_read_bytes_total{${HOST}}[$__rate_interval]))`, legend: "read" }, { expr: `max(rate(cpost_host_io_write_bytes_total{${HOST}}[$__rate_interval]))`, legend: "write" }], es: [{ group: "container", field: "diskRead", agg: "rate", by: "operator", filter: "host" }, { group: "container", field: "diskWrite", agg: "rate", by: "operator", filter: "host" }] },
    ],
  },
];


/** Builds the dashboard JSON object (as Grafana's "Import dashboard" takes it). */
export function grafanaDashboard(options: DashboardOptions): Json {
  const es = options.source !== "prometheus";
  const f = options.source === "es-legacy" ? ES_LEGACY_FIELDS : ES_FIELDS;
  const dsVar = (name: string) => ({ type: es ? "elasticsearch" : "prometheus", uid: `\${${name}}` });
  const variables: Json[] = es
    ? [
        { name: "ds_container", label: "Container metrics", type: "datasource", query: "elasticsearch", regex: options.source === "es-legacy" ? "/cpumetrics/" : "/container|cpumetrics/", current: {}, hide: 0 },
        { name: "ds_gpu", label: "GPU metrics", type: "datasource", query: "elasticsearch", regex: options.source === "es-legacy" ? "/gpumetrics/" : "/gpu/", current: {}, hide: 0 },
        termsVariable("pipeline", f.pipeline, dsVar("ds_container")),
        termsVariable("operator", f.operator, dsVar("ds_container")),
      ]
    : [
        { name: "datasource", label: "Prometheus", type: "datasource", query: "prometheus", current: {}, hide: 0 },
        promVariable("pipeline", "label_values(cpost_run_info, pipeline)", dsVar("datasource")),
        promVariable("operator", 'label_values(cpost_container_memory_usage_bytes{pipeline=~"$pipeline"}, operator)', dsVar("datasource")),
      ];
  const panels: Json[] = [];
  let id = 1;
  let y = 0;
  for (const row of ROWS) {
    panels.push({ id: id++, type: "row", title: row.title, collapsed: false, gridPos: { x: 0, y: y++, w: 24, h: 1 }, panels: [] });
    row.panels.forEach((spec, i) => {
      const ds = es ? dsVar(spec.es[0]!.group === "gpu" ? "ds_gpu" : "ds_container") : dsVar("datasource");
      const targets = es
        ? spec.es.map((q, n) => esTarget(q, f, ds, n))
        : spec.prometheus.map((q, n) => ({ refId: String.fromCharCode(65 + n), datasource: ds, expr: q.expr, legendFormat: q.legend, range: true }));
      panels.push({
        id: id++,
        type: "timeseries",
        title: spec.title,
        datasource: ds,
        gridPos: { x: (i % 2) * 12, y: y + Math.floor(i / 2) * 8, w: 12, h: 8 },
        fieldConfig: { defaults: { unit: options.source === "es-legacy" && spec.unit === "bytes" ? "decmbytes" : spec.unit, min: 0, custom: { lineWidth: 1, fillOpacity: 10, showPoints: "never", spanNulls: true } }, overrides: [] },
        options: { legend: { displayMode: "table", placement: "bottom", calcs: ["mean", "max"] }, tooltip: { mode: "multi", sort: "desc" } },
        targets,
      });
    });
    y += Math.ceil(row.panels.length / 2) * 8;
  }
  return {
    id: null,
    uid: `cpost-${options.source}`,
    title: options.title ?? `cpost (${options.source === "prometheus" ? "Prometheus" : options.source === "es" ? "Elasticsearch" : "Elasticsearch, Clara indices"})`,
    description: "Resource use of pipeline operators and the host, as written by cpost (`cpost grafana-dashboard`).",
    tags: ["cpost"],
    timezone: options.timezone,
    editable: true,
    graphTooltip: 1,
    schemaVersion: 39,
    version: 1,
    refresh: "10s",
    time: { from: "now-1h", to: "now" },
    templating: { list: variables },
    annotations: { list: [{ builtIn: 1, datasource: { type: "grafana", uid: "-- Grafana --" }, enable: true, hide: true, iconColor: "rgba(0, 211, 255, 1)", name: "Annotations & Alerts", type: "dashboard" }] },
    panels,
  };
}

function promVariable(name: string, query: string, datasource: Json): Json {
  return { name, label: name, type: "query", datasource, query: { query, refId: name }, definition: query, refresh: 2, includeAll: true, multi: true, allValue: ".*", current: { text: "All", value: "$__all" }, sort: 1, hide: 0 };
}

function termsVariable(name: string, field: string, datasource: Json): Json {
  const query = JSON.stringify({ find: "terms", field });
  return { name, label: name, type: "query", datasource, query, definition: query, refresh: 2, includeAll: true, multi: true, allValue: "*", current: { text: "All", value: "$__all" }, sort: 1, hide: 0 };
}

function esTarget(q: PanelSpec["es"][number], f: EsFields, datasource: Json, n: number): Json {
  const hostOnly = `${f.operator}:"${HOST_OPERATOR}"`;
  const scope = q.group === "gpu" ? "" : q.filter === "host" ? hostOnly : `${f.operator}:$operator AND NOT ${hostOnly}`;
  const query = [`${f.pipeline}:$pipeline`, scope].filter(Boolean).join(" AND ");
  // Disk counters are cumulative: the per-second derivative of each bucket's maximum is the rate.
  const metrics = q.agg === "rate"
    ? [{ id: "1", type: "max", field: f[q.field], hide: true }, { id: "2", type: "derivative", field: "1", pipelineAgg: "1", settings: { unit: "1s" } }]
    : [{ id: "1", type: q.agg, field: f[q.field] }];
  return {
    refId: String.fromCharCode(65 + n),
    datasource,
    query,
    alias: `{{term ${f[q.by]}}} ${String(q.field)}`,
    metrics,
    bucketAggs: [
      { id: "3", type: "terms", field: f[q.by], settings: { size: "20", order: "asc", orderBy: "_term", min_doc_count: "1" } },
      { id: "4", type: "date_histogram", field: f.time, settings: { interval: "auto", min_doc_count: "0", trimEdges: "0" } },
    ],
    timeField: f.time,
  };
}

export default defineCommand({
  meta: {
    name: "grafana-dashboard",
    description: "Print a Grafana dashboard (JSON) over cpost's Prometheus series or Elasticsearch documents; import it as-is.",
  },
  args: {
    datasource: { type: "string", default: "prometheus", description: "prometheus, es (data streams metrics-cpost.*), or es-legacy (cpumetrics/gpumetrics indices, `--es-legacy`)", valueHint: "prometheus|es|es-legacy" },
    timezone: { type: "string", default: "utc", description: "how the dashboard shows time: utc or browser", valueHint: "utc|browser" },
    title: { type: "string", description: "dashboard title" },
    api: { type: "boolean", description: "wrap for Grafana's HTTP API: {\"dashboard\": …, \"overwrite\": true} for POST /api/dashboards/db" },
  },
  run({ args }) {
    const source = args.datasource === "elasticsearch" ? "es" : args.datasource;
    if (source !== "prometheus" && source !== "es" && source !== "es-legacy") {
      throw new CpostError("usage", `--datasource ${args.datasource}: expected prometheus, es or es-legacy`, { hint: "es for `--sinks es`, es-legacy for `--es-legacy`, prometheus for `--sinks prometheus`" });
    }
    if (args.timezone !== "utc" && args.timezone !== "browser") {
      throw new CpostError("usage", `--timezone ${args.timezone}: expected utc or browser`);
    }
    const dashboard = grafanaDashboard({ source, timezone: args.timezone, title: args.title });
    process.stdout.write(`${JSON.stringify(args.api ? { dashboard, overwrite: true } : dashboard, null, 2)}\n`);
    return 0;
  },
});
