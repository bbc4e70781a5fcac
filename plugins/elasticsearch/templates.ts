/**
 * Index templates and mappings for cpost's Elasticsearch data, as
 * `cpost es setup` puts them (PUT /_component_template, PUT /_index_template).
 * Plain data: no I/O here. Field names match plugins/elasticsearch/documents.ts.
 */

/** Bumped whenever a template or the lifecycle policy changes; `es setup` leaves those of this version alone. 2: ILM settings on Elasticsearch. */
export const TEMPLATE_VERSION = 2;

/** The ILM (Elasticsearch) or ISM (OpenSearch) policy `es setup` puts for the data streams (plugins/elasticsearch/setup.ts). */
export const LIFECYCLE_POLICY = "cpost-metrics";

/** Above the built-in `metrics-*-*` template (priority 100), which would otherwise win. */
const PRIORITY = 200;

/** Data stream names: `metrics-cpost.<dataset>-<namespace>`, the Elastic naming scheme. */
export function dataStreamName(dataset: "container" | "gpu", namespace: string): string {
  return `metrics-cpost.${dataset}-${namespace}`;
}

/** Legacy index names, as the Clara Monitoring Platform's Grafana panels query them. */
export const LEGACY_INDICES = { container: "cpumetrics", gpu: "gpumetrics" } as const;

type Mapping = Record<string, unknown>;
const keyword = { type: "keyword", ignore_above: 1024 };
const long = { type: "long" };
const float = { type: "float" };
const double = { type: "double" };
const fraction = { type: "scaled_float", scaling_factor: 1000 };

/** Unit -> field type: whole-number units are `long`; readings with fractions are `float`. */
const INTEGRAL_UNITS = new Set(["ns", "bytes", "count", "ops", "us"]);

/** cpost's metric names (core/contracts/types.ts MetricSpec.name) and their units, for typed mappings. */
export const KNOWN_METRICS: Record<string, string> = {
  "cpu.usage_ns": "ns", "cpu.percent": "percent", "cpu.user_ns": "ns", "cpu.system_ns": "ns",
  "cpu.nr_throttled": "count", "cpu.throttled_ns": "ns",
  "memory.usage_bytes": "bytes", "memory.working_set_bytes": "bytes", "memory.rss_bytes": "bytes",
  "memory.cache_bytes": "bytes", "memory.peak_bytes": "bytes", "memory.limit_bytes": "bytes", "memory.oom_kills": "count",
  "pids.current": "count",
  "io.read_bytes": "bytes", "io.write_bytes": "bytes", "io.read_ops": "ops", "io.write_ops": "ops",
  "psi.cpu.some_avg10": "percent", "psi.cpu.full_avg10": "percent", "psi.memory.some_avg10": "percent",
  "psi.memory.full_avg10": "percent", "psi.io.some_avg10": "percent", "psi.io.full_avg10": "percent",
  "gpu.process_memory_bytes": "bytes", "gpu.process_sm_pct": "percent",
  "gpu.utilization_pct": "percent", "gpu.memory_utilization_pct": "percent", "gpu.memory_used_bytes": "bytes",
  "gpu.memory_total_bytes": "bytes", "gpu.power_w": "watts", "gpu.temperature_c": "celsius", "gpu.sm_clock_mhz": "mhz",
};

/** Nests dotted names into ES `properties` objects. */
function nest(fields: Record<string, Mapping>): Mapping {
  const root: Mapping = {};
  for (const [dotted, mapping] of Object.entries(fields)) {
    const parts = dotted.split(".");
    let node = root;
    for (const part of parts.slice(0, -1)) {
      const child = (node[part] ??= { properties: {} }) as { properties: Mapping };
      node = child.properties;
    }
    node[parts[parts.length - 1]!] = mapping;
  }
  return root;
}

function metricFields(prefix: string, gpuDevice: boolean): Record<string, Mapping> {
  const out: Record<string, Mapping> = {};
  for (const [name, unit] of Object.entries(KNOWN_METRICS)) {
    // Per-container GPU metrics (gpu.process_*) live in container documents, and in GPU ones when a collector gives them a device.
    const fits = gpuDevice ? name.startsWith("gpu.") : !name.startsWith("gpu.") || name.startsWith("gpu.process_");
    if (fits) out[`${prefix}${gpuDevice ? name.slice(4) : name}`] = INTEGRAL_UNITS.has(unit) ? long : float;
  }
  return out;
}

const common = nest({
  "@timestamp": { type: "date" },
  "host.name": keyword,
  "cpost.run_id": keyword, "cpost.pipeline": keyword, "cpost.operator": keyword, "cpost.monotonic_ms": double,
  "container.id": keyword,
});

/** Plugin metrics cpost does not know: numbers as double, so a first reading of `0` does not lock a gauge to long; monitor labels as keywords. */
const dynamicTemplates = (metrics: string) => [
  { cpost_plugin_metrics: { path_match: metrics, match_mapping_type: "long", mapping: double } },
  { cpost_labels: { path_match: "labels.*", match_mapping_type: "string", mapping: keyword } },
];

function component(properties: Mapping, dynamicTemplates?: unknown[]): Mapping {
  return {
    version: TEMPLATE_VERSION,
    _meta: { managed_by: "cpost", description: "cpost metrics (cpost es setup)" },
    template: { mappings: { ...(dynamicTemplates ? { dynamic_templates: dynamicTemplates } : {}), properties } },
  };
}

function indexTemplate(patterns: string[], composedOf: string[], dataStream: boolean): Mapping {
  return {
    index_patterns: patterns,
    priority: PRIORITY,
    composed_of: composedOf,
    ...(dataStream ? { data_stream: {} } : {}),
    version: TEMPLATE_VERSION,
    _meta: { managed_by: "cpost" },
  };
}

/** One request `es setup` makes, in order: component templates first, they are referenced after. */
export interface TemplateRequest {
  kind: "component" | "index";
  name: string;
  body: Mapping;
}

/**
 * The templates for data streams (default) or for the legacy `cpumetrics` / `gpumetrics` indices.
 * `ilm`: the data streams' backing indices name the ILM policy (Elasticsearch only: OpenSearch
 * refuses `index.lifecycle.*` as an unknown setting, and its ISM finds indices by pattern instead).
 */
export function templateRequests(legacy: boolean, options: { ilm: boolean } = { ilm: false }): TemplateRequest[] {
  if (legacy) return legacyTemplates();
  const container = nest({
    "container.cpu.usage": fraction, "container.memory.usage": fraction,
    "container.disk.read.bytes": long, "container.disk.write.bytes": long,
    ...metricFields("metrics.", false),
  });
  const gpu = nest({ "gpu.index": { type: "integer" }, "gpu.uuid": keyword, ...metricFields("gpu.", true) });
  const settings = options.ilm ? ["cpost-lifecycle@settings"] : [];
  return [
    ...(options.ilm ? [{ kind: "component" as const, name: "cpost-lifecycle@settings", body: lifecycleSettings() }] : []),
    { kind: "component", name: "cpost-common@mappings", body: component(common) },
    { kind: "component", name: "cpost-container@mappings", body: component(merge(common, container), dynamicTemplates("metrics.*")) },
    { kind: "component", name: "cpost-gpu@mappings", body: component(merge(common, gpu), dynamicTemplates("gpu.*")) },
    { kind: "index", name: "metrics-cpost.container", body: indexTemplate(["metrics-cpost.container-*"], [...settings, "cpost-common@mappings", "cpost-container@mappings"], true) },
    { kind: "index", name: "metrics-cpost.gpu", body: indexTemplate(["metrics-cpost.gpu-*"], [...settings, "cpost-common@mappings", "cpost-gpu@mappings"], true) },
  ];
}

/** The settings component that hands new backing indices to ILM (a data stream needs no rollover alias). */
function lifecycleSettings(): Mapping {
  return {
    version: TEMPLATE_VERSION,
    _meta: { managed_by: "cpost", description: "cpost metrics lifecycle (cpost es setup)" },
    template: { settings: { index: { lifecycle: { name: LIFECYCLE_POLICY } } } },
  };
}

function merge(a: Mapping, b: Mapping): Mapping {
  const out: Mapping = { ...a };
  for (const [key, value] of Object.entries(b)) {
    const left = out[key] as { properties?: Mapping } | undefined;
    const right = value as { properties?: Mapping };
    out[key] = left?.properties && right.properties ? { properties: merge(left.properties, right.properties) } : value;
  }
  return out;
}

/** Field names of the legacy documents (`<name>__<unit>`, as the original's panels expect). */
function legacyTemplates(): TemplateRequest[] {
  const shared = { timestamp: { type: "date" }, host: keyword, run_id: keyword, pipeline: keyword, operator: keyword, container_id: keyword };
  const cpu = {
    ...shared,
    cpu_utilization__pct: float, memory_usage__MB: float, memory_working_set__MB: float, memory_rss__MB: float,
    disk_read__B: long, disk_write__B: long, pids__count: long, gpu_process_memory__MB: float,
  };
  const gpu = {
    ...shared,
    index: { type: "integer" }, gpu_utilization__pct: float, memory_utilization__pct: float,
    memory_used__MB: float, memory_total__MB: float, power_draw__W: float, gpu_temperature__C: float, gpu_clock__MHz: float,
  };
  return [
    { kind: "component", name: "cpost-legacy-cpumetrics@mappings", body: component(cpu, dynamicTemplates("*__*")) },
    { kind: "component", name: "cpost-legacy-gpumetrics@mappings", body: component(gpu, dynamicTemplates("*__*")) },
    { kind: "index", name: "cpost-legacy-cpumetrics", body: indexTemplate([LEGACY_INDICES.container, `${LEGACY_INDICES.container}-*`], ["cpost-legacy-cpumetrics@mappings"], false) },
    { kind: "index", name: "cpost-legacy-gpumetrics", body: indexTemplate([LEGACY_INDICES.gpu, `${LEGACY_INDICES.gpu}-*`], ["cpost-legacy-gpumetrics@mappings"], false) },
  ];
}
