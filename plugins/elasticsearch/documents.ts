/**
 * Sample rows -> `_bulk` items (`{"create":…}\n{source}\n`): one document per
 * sample per container, plus one per GPU per sample. Field names are those the
 * templates of plugins/elasticsearch/templates.ts map. JSON text is built
 * from a per-series plan made once, so a row costs string joins, not objects.
 */
import type { MetricColumn, RunInfo, SampleBatch } from "../../core/contracts/types.ts";
import { dataStreamName, LEGACY_INDICES } from "./templates.ts";

/** Turns batches into bulk items; keeps per-container state (disk deltas) between batches. */
export interface DocumentEncoder {
  /** Appends one bulk item per document of `batch` to `out`; returns the number appended. */
  encode(batch: SampleBatch, out: string[]): number;
}

/** A tree of columns by dotted name: `cpu.percent` -> "cpu" -> "percent". */
interface FieldNode {
  key: string; // `"name":`, JSON-escaped once
  column?: number;
  /** The value is divided by it (bytes -> MB for the legacy fields). */
  divisor?: number;
  children?: FieldNode[];
}

/** A FieldNode tree compiled for the common row where every value is measured: text pieces between values. */
interface Fields {
  nodes: FieldNode[];
  pieces: string[];
  columns: number[];
  divisors: number[];
  tail: string;
}

interface SeriesPlan {
  columns: readonly MetricColumn[];
  idPrefix: string;
  head: string; // `"host":…,"cpost":{…` up to monotonic_ms
  containerTail: string; // `"container":{"id":"…"`
  metrics: Fields;
  gpus: Array<{ device: number; fields: Fields }>;
  legacyGpuFields: Fields[];
  ecs: { cpu: number; usage: number; limit: number; read: number; write: number };
  lastDisk: { read: number; write: number };
}

const num = (v: number): string => (Number.isFinite(v) ? String(v) : "");

/** Renders `{…}` members of `nodes` for row values at `base`, skipping unmeasured (NaN) ones; "" when all are. */
function members(nodes: FieldNode[], values: Float64Array, base: number): string {
  let out = "";
  for (const node of nodes) {
    const text = node.children ? members(node.children, values, base) : num(values[base + node.column!]! / (node.divisor ?? 1));
    if (text === "") continue;
    out += (out ? "," : "") + node.key + (node.children ? `{${text}}` : text);
  }
  return out;
}

// One document's text is gathered here and joined once: a flat string, cheap to join again into a request body.
const parts: Array<string | number> = [];

/** Appends a row's members to `parts`: pieces and numbers when all are measured (the hot case), else the tree walk. False: none. */
function render(fields: Fields, values: Float64Array, base: number): boolean {
  const { pieces, columns, divisors } = fields;
  const start = parts.length;
  for (let i = 0; i < pieces.length; i++) {
    const v = values[base + columns[i]!]! / divisors[i]!;
    if (!Number.isFinite(v)) {
      parts.length = start;
      const text = members(fields.nodes, values, base);
      if (text) parts.push(text);
      return text !== "";
    }
    parts.push(pieces[i]!, v);
  }
  parts.push(fields.tail);
  return pieces.length > 0;
}

function compile(nodes: FieldNode[]): Fields {
  const fields: Fields = { nodes, pieces: [], columns: [], divisors: [], tail: "" };
  let text = "";
  const walk = (level: FieldNode[]) => level.forEach((node, i) => {
    text += (i > 0 ? "," : "") + node.key;
    if (node.children) {
      text += "{";
      walk(node.children);
      text += "}";
    } else {
      fields.pieces.push(text);
      fields.columns.push(node.column!);
      fields.divisors.push(node.divisor ?? 1);
      text = "";
    }
  });
  walk(nodes);
  fields.tail = text;
  return fields;
}

function tree(entries: Array<{ path: string; column: number; divisor?: number }>): Fields {
  const root: FieldNode[] = [];
  for (const { path, column, divisor } of entries) {
    let level = root;
    const names = path.split(".");
    names.forEach((name, i) => {
      const key = `${JSON.stringify(name)}:`;
      let node = level.find((n) => n.key === key);
      if (i === names.length - 1) {
        if (!node) level.push({ key, column, divisor });
        else node.children?.push({ key: '"_":', column, divisor });
        return;
      }
      if (!node) level.push((node = { key, children: [] }));
      // A name that is both a leaf and a prefix (plugin metrics) keeps the leaf; its children go under `_`.
      level = node.children ?? (node.children = [{ key: '"_":', column: node.column }]);
    });
  }
  return compile(root);
}

const LEGACY_CPU: Array<[string, string, number]> = [
  ["cpu_utilization__pct", "cpu.percent", 1], ["memory_usage__MB", "memory.usage_bytes", 1e6],
  ["memory_working_set__MB", "memory.working_set_bytes", 1e6], ["memory_rss__MB", "memory.rss_bytes", 1e6],
  ["disk_read__B", "io.read_bytes", 1], ["disk_write__B", "io.write_bytes", 1], ["pids__count", "pids.current", 1],
  ["gpu_process_memory__MB", "gpu.process_memory_bytes", 1e6],
];
const LEGACY_GPU: Array<[string, string, number]> = [
  ["gpu_utilization__pct", "gpu.utilization_pct", 1], ["memory_utilization__pct", "gpu.memory_utilization_pct", 1],
  ["memory_used__MB", "gpu.memory_used_bytes", 1e6], ["memory_total__MB", "gpu.memory_total_bytes", 1e6],
  ["power_draw__W", "gpu.power_w", 1], ["gpu_temperature__C", "gpu.temperature_c", 1], ["gpu_clock__MHz", "gpu.sm_clock_mhz", 1],
];

/** Makes the encoder for one run; `namespace` picks the data streams, `legacy` the original's indices. */
export function defineEncoder(run: RunInfo, options: { namespace: string; legacy: boolean }): DocumentEncoder {
  // By container (two series may share a columns array); rebuilt if a container's columns change.
  const plans = new Map<string, SeriesPlan>();
  const action = (index: string) => `{"create":{"_index":${JSON.stringify(index)},"_id":"`;
  const containerAction = action(options.legacy ? LEGACY_INDICES.container : dataStreamName("container", options.namespace));
  const gpuAction = action(options.legacy ? LEGACY_INDICES.gpu : dataStreamName("gpu", options.namespace));
  const cpus = Math.max(1, run.host.cpus);

  function plan(batch: SampleBatch, before?: SeriesPlan): SeriesPlan {
    const columns = batch.columns;
    const devices = [...new Set(columns.filter((c) => c.device !== undefined).map((c) => c.device!))].sort((a, b) => a - b);
    const index = (name: string, device?: number) => columns.findIndex((c) => c.name === name && c.device === device);
    const strip = (name: string) => (name.startsWith("gpu.") ? name.slice(4) : name);
    const seed = `${run.id}\0${batch.containerId}\0${batch.operator}`;
    const labels = run.labels && Object.keys(run.labels).length > 0 ? `"labels":${JSON.stringify(run.labels)},` : "";
    const made: SeriesPlan = {
      columns,
      idPrefix: Bun.hash.wyhash(seed).toString(36),
      head: options.legacy
        ? `${labels}"host":${JSON.stringify(run.host.hostname)},"run_id":${JSON.stringify(run.id)},"pipeline":${JSON.stringify(run.pipeline.name)},"operator":${JSON.stringify(batch.operator)},"container_id":${JSON.stringify(batch.containerId)}`
        : `${labels}"host":{"name":${JSON.stringify(run.host.hostname)}},"cpost":{"run_id":${JSON.stringify(run.id)},"pipeline":${JSON.stringify(run.pipeline.name)},"operator":${JSON.stringify(batch.operator)},"monotonic_ms":`,
      containerTail: `"container":{"id":${JSON.stringify(batch.containerId)}`,
      metrics: options.legacy
        ? tree(LEGACY_CPU.map(([field, name, divisor]) => ({ path: field, column: index(name), divisor })).filter((e) => e.column >= 0))
        : tree(columns.flatMap((c, i) => (c.device === undefined ? [{ path: c.name, column: i }] : []))),
      gpus: devices.map((device) => ({
        device,
        fields: tree(columns.flatMap((c, i) => (c.device === device ? [{ path: strip(c.name), column: i }] : []))),
      })),
      legacyGpuFields: devices.map((device) =>
        tree(LEGACY_GPU.map(([field, name, divisor]) => ({ path: field, column: index(name, device), divisor })).filter((e) => e.column >= 0)),
      ),
      ecs: {
        cpu: index("cpu.percent"), usage: index("memory.usage_bytes"), limit: index("memory.limit_bytes"),
        read: index("io.read_bytes"), write: index("io.write_bytes"),
      },
      lastDisk: before?.lastDisk ?? { read: 0, write: 0 },
    };
    plans.set(`${batch.operator}\0${batch.containerId}`, made);
    return made;
  }

  function ecs(p: SeriesPlan, values: Float64Array, base: number): string {
    const at = (i: number) => (i < 0 ? NaN : values[base + i]!);
    let out = "";
    const cpu = at(p.ecs.cpu) / 100 / cpus;
    if (Number.isFinite(cpu)) out += `,"cpu":{"usage":${cpu}}`;
    const limit = at(p.ecs.limit);
    const usage = at(p.ecs.usage) / (limit > 0 && limit < run.host.memoryBytes ? limit : run.host.memoryBytes);
    if (Number.isFinite(usage)) out += `,"memory":{"usage":${usage}}`;
    const read = at(p.ecs.read);
    const write = at(p.ecs.write);
    if (Number.isFinite(read) && Number.isFinite(write)) {
      // ECS: bytes since the last collection, from cpost's cumulative counters.
      out += `,"disk":{"read":{"bytes":${Math.max(0, read - p.lastDisk.read)}},"write":{"bytes":${Math.max(0, write - p.lastDisk.write)}}}`;
      p.lastDisk = { read, write };
    }
    return out;
  }

  return {
    encode(batch, out) {
      const known = plans.get(`${batch.operator}\0${batch.containerId}`);
      const p = known?.columns === batch.columns ? known : plan(batch, known);
      const { values } = batch;
      const width = batch.columns.length;
      let appended = 0;
      /** Ends the document begun in `parts` with `opener`, the members of `fields` and `close`; without members, `empty` or no document. */
      const finish = (opener: string, fields: Fields, base: number, close: string, empty?: string) => {
        const mark = parts.length;
        parts.push(opener);
        if (render(fields, values, base)) parts.push(close);
        else if (empty === undefined) return void (parts.length = 0);
        else (parts.length = mark), parts.push(empty);
        out.push(parts.join(""));
        parts.length = 0;
        appended++;
      };
      for (let row = 0; row < batch.rows; row++) {
        const base = row * width;
        const id = `${p.idPrefix}-${Math.round(batch.timestampMs[row]! * 1000).toString(36)}`;
        const time = new Date(batch.timestampMs[row]!).toISOString();
        if (options.legacy) {
          parts.push(containerAction, id, '"}}\n{"timestamp":"', time, '",', p.head);
          finish(",", p.metrics, base, "}\n", "}\n");
          p.legacyGpuFields.forEach((fields, i) => {
            parts.push(gpuAction, id, "-g", p.gpus[i]!.device, '"}}\n{"timestamp":"', time, '",', p.head, ',"index":', p.gpus[i]!.device);
            finish(",", fields, base, "}\n");
          });
        } else {
          parts.push(containerAction, id, '"}}\n{"@timestamp":"', time, '",', p.head, batch.monotonicMs[row]!, "},", p.containerTail, ecs(p, values, base), "}");
          finish(',"metrics":{', p.metrics, base, "}}\n", "}\n");
          for (const gpu of p.gpus) {
            parts.push(gpuAction, id, "-g", gpu.device, '"}}\n{"@timestamp":"', time, '",', p.head, batch.monotonicMs[row]!, "},", p.containerTail, '},"gpu":{"index":', gpu.device);
            finish(",", gpu.fields, base, "}}\n");
          }
        }
      }
      return appended;
    },
  };
}
