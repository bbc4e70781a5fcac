/**
 * Sink `prometheus`: serves the latest reading of every series at /metrics
 * in the Prometheus text exposition format 0.0.4, for an existing
 * Prometheus/Grafana stack to scrape instead of Elasticsearch.
 *
 * The sink runs its own HTTP server on `--prometheus-listen` (default
 * 127.0.0.1:9686), opened when the sink is created so a busy port fails
 * before anything runs. The server does not keep the process alive: it
 * serves while cpost runs (a whole `cpost monitor serve`, or one pipeline
 * run). Each sample carries its own timestamp, so Prometheus stores when it
 * was measured, not when it was scraped. Pull means flushing is being
 * scraped: `end` waits (bounded) for one more scrape of the last readings,
 * then the run's series leave the endpoint.
 */
import { CpostError } from "../core/contracts/errors.ts";
import { listenHttp, parseListen, urlOf, type ListenAddress } from "../core/contracts/listen.ts";
import { defineSink } from "../core/contracts/plugin-sdk.ts";
import type { MetricColumn, MetricSpec, RunInfo, SampleBatch, Sink } from "../core/contracts/types.ts";

const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";
/** Labels cpost sets itself; a run label of the same name is renamed `label_<name>`. */
const OWN_LABELS = new Set(["container", "operator", "gpu", "run_id", "pipeline", "job", "instance"]);

/** A cpost metric as a Prometheus family: base units, `_total` on counters. */
export interface PrometheusFamily {
  name: string;
  type: "gauge" | "counter";
  /** Multiply cpost's value by this to get the base unit. */
  scale: number;
  help: string;
}

const UNIT_SUFFIX: Record<string, { strip: RegExp; suffix: string; scale: number }> = {
  ns: { strip: /_ns$/, suffix: "_seconds", scale: 1e-9 },
  us: { strip: /_us$/, suffix: "_seconds", scale: 1e-6 },
  percent: { strip: /_(pct|percent)$/, suffix: "_ratio", scale: 0.01 },
  bytes: { strip: /_bytes$/, suffix: "_bytes", scale: 1 },
  watts: { strip: /_w(atts)?$/, suffix: "_watts", scale: 1 },
  celsius: { strip: /_c(elsius)?$/, suffix: "_celsius", scale: 1 },
  mhz: { strip: /_mhz$/, suffix: "_hertz", scale: 1e6 },
};

/**
 * The family a metric is exposed as. Per-device GPU metrics are
 * `cpost_gpu_*` (label gpu); the rest `cpost_container_*` or, for the host
 * target, `cpost_host_*`. `cpu.percent` (100 = one core) is `cpu_usage_ratio` (1 = one core).
 */
export function prometheusFamily(spec: Pick<MetricSpec, "name" | "unit" | "kind" | "device" | "description">, host: boolean): PrometheusFamily {
  const perDevice = spec.device !== undefined && spec.name.startsWith("gpu.");
  const scope = perDevice ? "gpu" : host ? "host" : "container";
  let base = (perDevice ? spec.name.slice(4) : spec.name).replace(/[^A-Za-z0-9_]/g, "_");
  if (spec.name === "cpu.percent") base = "cpu_usage";
  const unit = UNIT_SUFFIX[spec.unit];
  if (unit) base = base.replace(unit.strip, "") + unit.suffix;
  const name = `cpost_${scope}_${base}${spec.kind === "counter" ? "_total" : ""}`;
  const help = `${spec.description ?? `cpost metric ${spec.name}`} (cpost ${spec.name}, ${spec.unit}${unit && unit.scale !== 1 ? ` x ${unit.scale}` : ""})`;
  return { name, type: spec.kind, scale: unit?.scale ?? 1, help };
}

interface Series {
  labels: string;
  scale: number;
  value: number;
  timestampMs: number;
}
interface Family extends PrometheusFamily {
  /** By label text: a container whose columns change (a probe dropped out) keeps its series. */
  series: Map<string, Series>;
}

/** The prometheus sink, with where it serves and a way to stop serving. */
export interface PrometheusSink extends Sink {
  readonly url: string;
  /** Stops the server of this sink's address (for every sink sharing it). */
  close(): Promise<void>;
}

/** One server per address for the whole process, so a monitor's sessions (a fresh sink each) keep one endpoint. */
interface Endpoint {
  key: string;
  url: string;
  server: Bun.Server<undefined>;
  /** The exposition of the sink now between start and end. */
  render: (() => string) | undefined;
  lastScrapeMs: number;
  scrapeGapMs: number;
  scraped: Array<() => void>;
}
const endpoints = new Map<string, Endpoint>();

function endpointFor(address: ListenAddress): Endpoint {
  const shared = address.port === 0 ? undefined : endpoints.get(`${address.hostname}:${address.port}`);
  if (shared) return shared;
  const endpoint: Endpoint = { key: "", url: "", server: undefined!, render: undefined, lastScrapeMs: NaN, scrapeGapMs: NaN, scraped: [] };
  endpoint.server = listenHttp(address, "prometheus sink", "--prometheus-listen", (request) => {
    if (new URL(request.url).pathname !== "/metrics") return new Response("cpost: metrics are at /metrics\n", { status: 404 });
    const now = performance.now();
    if (!Number.isNaN(endpoint.lastScrapeMs)) endpoint.scrapeGapMs = now - endpoint.lastScrapeMs;
    endpoint.lastScrapeMs = now;
    const body = endpoint.render?.() ?? "";
    for (const wake of endpoint.scraped.splice(0)) wake();
    return new Response(body, { headers: { "Content-Type": CONTENT_TYPE } });
  });
  // Serving must not keep cpost alive: it serves while the run (or monitor) does.
  endpoint.server.unref();
  const port = endpoint.server.port ?? address.port;
  endpoint.key = `${address.hostname}:${port}`;
  endpoint.url = `${urlOf(address.hostname, port)}/metrics`;
  endpoints.set(endpoint.key, endpoint);
  return endpoint;
}

export default defineSink({
  name: "prometheus",
  description: "serves the latest reading of every series at /metrics for Prometheus to scrape",
  options: {
    listen: { description: "address of the /metrics server", default: "127.0.0.1:9686" },
    timestamps: { description: "give each sample its own timestamp", default: "true" },
  },
  create: ({ options }) => createPrometheusSink(options.listen, options.timestamps),
});

/** Creates the sink; serves /metrics from now on (or shares this process's server on that address). */
function createPrometheusSink(listen: string, stamping: string): PrometheusSink {
  const address = parseListen(listen, "--prometheus-listen");
  if (stamping !== "true" && stamping !== "false") {
    throw new CpostError("usage", `--prometheus-timestamps ${stamping}: expected true or false`, {
      hint: "false exposes readings without timestamps (Prometheus then stamps them at scrape time)",
    });
  }
  const timestamps = stamping === "true";
  const endpoint = endpointFor(address);
  const families = new Map<string, Family>();
  // Per container series: the columns object is shared by all its batches, so one lookup per batch.
  const prepared = new Map<string, { columns: readonly MetricColumn[]; series: Array<Series | undefined> }>();
  let runLabels = "";
  let lastWriteMs = NaN;
  // cpost_run_info is stamped with the run's newest reading, so it too never lies outside the run.
  let newestMs = 0;

  function seriesFor(batch: SampleBatch, column: MetricColumn): Series {
    const shape = prometheusFamily(column, batch.containerId === "");
    let family = families.get(shape.name);
    if (!family) families.set(shape.name, (family = { ...shape, series: new Map() }));
    const labels = [
      batch.containerId && `container="${escapeValue(batch.containerId)}"`,
      batch.operator && `operator="${escapeValue(batch.operator)}"`,
      shape.name.startsWith("cpost_gpu_") && `gpu="${column.device}"`,
      runLabels,
    ].filter(Boolean).join(",");
    let series = family.series.get(labels);
    if (!series) family.series.set(labels, (series = { labels, scale: shape.scale, value: NaN, timestampMs: 0 }));
    return series;
  }

  function render(): string {
    const lines = ["# HELP cpost_run_info The run (or monitor session) cpost is recording now.", "# TYPE cpost_run_info gauge", `cpost_run_info{${runLabels}} 1${timestamps ? ` ${Math.round(newestMs)}` : ""}`];
    for (const family of [...families.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      lines.push(`# HELP ${family.name} ${family.help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`, `# TYPE ${family.name} ${family.type}`);
      for (const s of family.series.values()) {
        const value = Number.isNaN(s.value) ? "NaN" : s.value === Infinity ? "+Inf" : s.value === -Infinity ? "-Inf" : String(s.value);
        lines.push(`${family.name}${s.labels ? `{${s.labels}}` : ""} ${value}${timestamps ? ` ${Math.round(s.timestampMs)}` : ""}`);
      }
    }
    return `${lines.join("\n")}\n`;
  }

  return {
    name: "prometheus",
    url: endpoint.url,

    start(run: RunInfo) {
      if (endpoint.render) {
        throw new CpostError("usage", `prometheus: ${endpoint.url} already exposes another run of this process`, { hint: "give each prometheus sink its own --prometheus-listen" });
      }
      const labels: Record<string, string> = { run_id: run.id, pipeline: run.pipeline.name };
      for (const [key, value] of Object.entries(run.labels ?? {})) {
        const name = key.replace(/[^A-Za-z0-9_]/g, "_").replace(/^(?=[0-9])|^__/, "label_");
        labels[OWN_LABELS.has(name) ? `label_${name}` : name] = value;
      }
      runLabels = Object.entries(labels).map(([k, v]) => `${k}="${escapeValue(v)}"`).join(",");
      newestMs = run.startedAtMs;
      endpoint.render = render;
    },

    write(batch: SampleBatch) {
      const key = `${batch.containerId}\0${batch.operator}`;
      let entry = prepared.get(key);
      if (entry?.columns !== batch.columns) prepared.set(key, (entry = { columns: batch.columns, series: [] }));
      const width = batch.columns.length;
      let wrote = false;
      for (let c = 0; c < width; c++) {
        for (let r = batch.rows - 1; r >= 0; r--) {
          const v = batch.values[r * width + c]!;
          if (Number.isNaN(v)) continue;
          const series = (entry.series[c] ??= seriesFor(batch, batch.columns[c]!));
          // Dividing by a whole number keeps exact decimals exact (7.75e9 ns -> 7.75 s).
          series.value = series.scale >= 1 ? v * series.scale : v / Math.round(1 / series.scale);
          series.timestampMs = batch.timestampMs[r]!;
          if (series.timestampMs > newestMs) newestMs = series.timestampMs;
          wrote = true;
          break;
        }
      }
      if (wrote) lastWriteMs = performance.now();
    },

    operatorDone() {},

    async end() {
      // Flushing a pull endpoint is being scraped: if someone scrapes, wait (bounded) for the last readings to be taken.
      if (lastWriteMs > endpoint.lastScrapeMs) {
        const gap = Number.isNaN(endpoint.scrapeGapMs) ? 5000 : endpoint.scrapeGapMs;
        let timer: Timer | undefined;
        await new Promise<void>((resolve) => {
          endpoint.scraped.push(resolve);
          timer = setTimeout(resolve, Math.min(30_000, Math.max(1000, 2 * gap + 1000)));
        });
        clearTimeout(timer);
      }
      if (endpoint.render === render) endpoint.render = undefined;
      families.clear();
      prepared.clear();
    },

    async close() {
      if (endpoints.get(endpoint.key) === endpoint) endpoints.delete(endpoint.key);
      for (const wake of endpoint.scraped.splice(0)) wake();
      await endpoint.server.stop(true);
    },
  };
}

function escapeValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}
