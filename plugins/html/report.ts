/**
 * The HTML report: a pure function from a run (its facts, operators,
 * downsampled series and summaries) to one self-contained page. uPlot, its
 * CSS, the page script and the data are all inline: it works offline.
 */
import uplotJs from "uplot/dist/uPlot.iife.min.js" with { type: "text" };
import uplotCss from "uplot/dist/uPlot.min.css" with { type: "text" };
import pageJs from "./report-page.js" with { type: "text" };
import type { MinMaxDigest } from "./downsample.ts";
import type { Operator, OperatorResult, OperatorSummary, RunInfo, RunResult } from "../../core/contracts/types.ts";

/** One operator as the report shows it. */
export interface ReportOperator {
  name: string;
  operator?: Operator;
  result?: OperatorResult;
  summary?: OperatorSummary;
  series: MinMaxDigest;
}

/** Everything the report needs; a live run (html sink) and a recording (`cpost report`) both give this. */
export interface ReportInput {
  run: RunInfo;
  operators: ReportOperator[];
  result?: RunResult;
  /** False for a recording that stopped mid-run (truncated file). */
  complete: boolean;
}

/** A chart group: which metrics it draws, in what unit. */
interface ChartGroup {
  group: string;
  title: string;
  unit: string;
  scale: number;
  metrics: Record<string, string>; // metric name -> legend label
}

/** The charts of an operator, in page order; a group is drawn when any of its metrics was measured. */
const CHART_GROUPS: readonly ChartGroup[] = [
  { group: "cpu", title: "CPU", unit: "%", scale: 1, metrics: { "cpu.percent": "cpu" } },
  {
    group: "memory",
    title: "Memory",
    unit: "MB",
    scale: 1e-6,
    metrics: {
      "memory.usage_bytes": "usage",
      "memory.working_set_bytes": "working set",
      "memory.rss_bytes": "rss",
      "memory.cache_bytes": "cache",
    },
  },
  { group: "disk", title: "Disk I/O, cumulative", unit: "MB", scale: 1e-6, metrics: { "io.read_bytes": "read", "io.write_bytes": "written" } },
  {
    group: "gpu",
    title: "GPU utilization",
    unit: "%",
    scale: 1,
    metrics: { "gpu.utilization_pct": "gpu", "gpu.memory_utilization_pct": "memory bus", "gpu.process_sm_pct": "container sm" },
  },
  {
    group: "gpu-memory",
    title: "GPU memory",
    unit: "MB",
    scale: 1e-6,
    metrics: { "gpu.memory_used_bytes": "device used", "gpu.process_memory_bytes": "container" },
  },
];

const DATA_COLORS = ["#1f77b4", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#393b79"];
const LINE_COLORS = { requested: "#ff7f0e", recommended: "#2ca02c", limit: "#d62728" } as const;
type LineRole = keyof typeof LINE_COLORS;

interface ChartSeries {
  label: string;
  role: "data" | LineRole;
  color: string;
  values?: Array<number | null>;
  value?: number;
}
interface ChartData {
  id: string;
  operator: string;
  group: string;
  title: string;
  unit: string;
  x: number[];
  series: ChartSeries[];
}

/** Renders the whole report page. */
export function renderReport(input: ReportInput): string {
  const charts: ChartData[] = [];
  const sections = input.operators.map((op, index) => operatorSection(op, index, input.run, charts));
  const title = `cpost report: ${input.run.pipeline.name}`;
  // `<` escaped so no "</script>" in a label can end the data block early.
  const json = JSON.stringify({ charts }).replace(/</g, "\\u003c");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="cpost ${esc(input.run.cpostVersion)}">
<title>${esc(title)}</title>
<style>${uplotCss}
${PAGE_CSS}</style></head>
<body>
<header><h1>${esc(title)}</h1>${banner(input)}</header>
${factsSection(input)}
${summaryTable(input)}
${sections.join("\n")}
<script type="application/json" id="cpost-data">${json}</script>
<script>${uplotJs}</script>
<script>${pageJs}</script>
</body></html>
`;
}

function banner(input: ReportInput): string {
  const out: string[] = [];
  if (!input.complete) out.push(`<p class="warn">This recording is incomplete: the run did not end cleanly, so the last operator may be cut short.</p>`);
  if (input.result?.interrupted) out.push(`<p class="warn">The run was interrupted.</p>`);
  const failed = input.operators.filter((o) => isBad(o.result));
  if (failed.length > 0) {
    const names = failed.map((o) => `<a href="#op-${slug(o.name)}">${esc(o.name)}</a>`).join(", ");
    out.push(`<p class="bad">${failed.length} operator${failed.length > 1 ? "s" : ""} did not succeed: ${names}</p>`);
  }
  return out.join("");
}

function factsSection({ run, result }: ReportInput): string {
  const h = run.host;
  const facts: Array<[string, string]> = [
    ["Pipeline", `${run.pipeline.name} (${run.pipeline.file})`],
    ["Host", `${h.hostname}: ${h.cpus} CPUs, ${(h.memoryBytes / 1e9).toFixed(1)} GB, ${h.arch}, kernel ${h.kernel}`],
    ["Engine", `${h.engine} ${h.engineVersion}`],
    ["cgroup", h.cgroupVersion === 0 ? "unknown" : `v${h.cgroupVersion}`],
    ["Interval", intervalText(run, result)],
    ["Started", isoTime(run.startedAtMs)],
    ["Ended", result ? `${isoTime(result.endedAtMs)} (${duration(result.endedAtMs - run.startedAtMs)})` : "did not end"],
    ["Collectors", run.collectors.join(", ") || "-"],
    ["Sinks", run.sinks.join(", ") || "-"],
    ["Run", `${run.id}, cpost ${run.cpostVersion}`],
  ];
  const rows = facts.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("");
  return `<section id="facts"><h2>Run</h2><dl class="facts">${rows}</dl></section>`;
}

function intervalText(run: RunInfo, result: RunResult | undefined): string {
  const target = `target ${run.intervalMs} ms`;
  if (!result || result.interval.samples === 0) return target;
  const i = result.interval;
  return `${target}; achieved p50 ${i.p50.toFixed(2)} ms, p99 ${i.p99.toFixed(2)} ms over ${i.samples.toLocaleString("en")} samples`;
}

function summaryTable({ operators }: ReportInput): string {
  const rows = operators.map((op) => {
    const s = op.summary;
    const r = op.result;
    const req = op.operator?.requests;
    const rec = s?.recommendation;
    const cells = [
      `<a href="#op-${slug(op.name)}">${esc(op.name)}</a>`,
      statusText(r),
      r?.exitCode === null || r === undefined ? "-" : String(r.exitCode),
      r ? duration(r.endedAtMs - r.startedAtMs) : "-",
      String(s?.samples ?? op.series.rows),
      num(s?.cpuPercent.mean),
      num(s?.cpuPercent.max),
      num(s?.memoryMb.mean),
      num(s?.memoryMb.max),
      req && (req.cpu !== undefined || req.memory !== undefined) ? `cpu: ${req.cpu ?? "-"}, memory: ${req.memory ?? "-"}` : "-",
      rec ? `cpu: ${rec.cpu}, memory: ${rec.memory}${rec.gpu ? `, gpu: ${rec.gpu}` : ""}` : "-",
    ];
    return `<tr class="${isBad(r) ? "bad" : ""}">${cells.map((c) => `<td>${c}</td>`).join("")}</tr>`;
  });
  const head = ["Operator", "Status", "Exit", "Duration", "Samples", "CPU avg %", "CPU max %", "Memory avg MB", "Memory max MB", "Requested", "Recommended"];
  return `<section id="summary"><h2>Summary</h2><table class="summary"><thead><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr></thead><tbody>${rows.join("")}</tbody></table></section>`;
}

function operatorSection(op: ReportOperator, index: number, run: RunInfo, charts: ChartData[]): string {
  const r = op.result;
  const parts: string[] = [];
  const badge = `<span class="badge ${r?.status ?? "unknown"}">${esc(statusText(r))}</span>`;
  parts.push(`<h2>${index + 1}. ${esc(op.name)} ${badge}</h2>`);
  if (isBad(r)) parts.push(`<p class="bad failure">${esc(failureText(r!))}</p>`);
  const image = op.operator ? `${op.operator.image}:${op.operator.tag}` : "";
  const span = op.series.rows > 0 ? `${duration(op.series.spanMs)} sampled` : "";
  const bucket = op.series.rows > 0 ? `charts: min/max per ${op.series.bucketMs} ms` : "";
  const meta = [image, r ? `started ${isoTime(r.startedAtMs)}` : "", `${op.series.rows.toLocaleString("en")} samples`, span, bucket];
  parts.push(`<p class="meta">${esc(meta.filter(Boolean).join(" · "))}</p>`);
  if (r?.status === "skipped" && r.reason) parts.push(`<p class="meta">skipped: ${esc(r.reason)}</p>`);
  if (op.series.rows === 0) {
    parts.push(`<p class="nodata">No samples for this operator.</p>`);
  } else {
    const figures = chartsOf(op, run, charts.length).map((chart) => {
      charts.push(chart);
      return `<figure class="chart" data-group="${chart.group}"><figcaption>${esc(chart.title)} (${esc(chart.unit)})</figcaption><div class="plot" id="${chart.id}"></div></figure>`;
    });
    parts.push(`<div class="charts">${figures.join("")}</div>`);
  }
  if (op.summary) parts.push(statsTable(op.summary));
  if (op.summary) parts.push(beyondRequests(op.summary));
  const notes = op.summary?.recommendation.notes ?? [];
  if (notes.length > 0) parts.push(`<ul class="notes">${notes.map((n) => `<li>${esc(n)}</li>`).join("")}</ul>`);
  return `<section class="operator${isBad(r) ? " failed" : ""}" id="op-${slug(op.name)}">${parts.join("\n")}</section>`;
}

function chartsOf(op: ReportOperator, run: RunInfo, firstId: number): ChartData[] {
  const d = op.series;
  const out: ChartData[] = [];
  for (const g of CHART_GROUPS) {
    const picked = d.columns.flatMap((c, i) => (c.name in g.metrics ? [i] : []));
    if (picked.length === 0) continue;
    // Only buckets where this chart has data: each gives two points, its first and second extreme.
    const buckets: number[] = [];
    for (let b = 0; b < d.bucketStartMs.length; b++) if (picked.some((i) => d.first[i]![b] === d.first[i]![b])) buckets.push(b);
    if (buckets.length === 0) continue;
    const x: number[] = [];
    for (const b of buckets) x.push(round4(d.bucketStartMs[b]! / 1000), round4((d.bucketStartMs[b]! + d.bucketMs / 2) / 1000));
    const series: ChartSeries[] = picked.map((i, k) => {
      const c = d.columns[i]!;
      const values: Array<number | null> = [];
      for (const b of buckets) values.push(scaled(d.first[i]![b]!, g.scale), scaled(d.second[i]![b]!, g.scale));
      const label = g.metrics[c.name]! + (c.device === undefined ? "" : ` [${c.device}]`);
      return { label, role: "data", color: DATA_COLORS[k % DATA_COLORS.length]!, values };
    });
    for (const [role, label, value] of referenceLines(g.group, op, run)) {
      if (Number.isFinite(value) && value > 0) series.push({ label, role, color: LINE_COLORS[role], value });
    }
    out.push({ id: `chart-${firstId + out.length}`, operator: op.name, group: g.group, title: g.title, unit: g.unit, x, series });
  }
  return out;
}

/** The limits and recommendations drawn as dashed lines, in the chart's unit. */
function referenceLines(group: string, op: ReportOperator, run: RunInfo): Array<[LineRole, string, number]> {
  const req = op.operator?.requests;
  const rec = op.summary?.recommendation;
  if (group === "cpu") {
    return [
      ["requested", "requested", (req?.cpu ?? NaN) * 100],
      ["recommended", "recommended", (rec?.cpu ?? NaN) * 100],
    ];
  }
  if (group === "memory") {
    const limit = maxOf(op.series, "memory.limit_bytes");
    // cgroup v1 reports "no limit" as a huge number; only a real limit is worth a line.
    const real = limit < run.host.memoryBytes ? limit / 1e6 : NaN;
    return [
      ["requested", "requested", req?.memory ?? NaN],
      ["recommended", "recommended", rec?.memory ?? NaN],
      ["limit", "cgroup limit", real],
    ];
  }
  if (group === "gpu-memory") return [["limit", "device total", maxOf(op.series, "gpu.memory_total_bytes") / 1e6]];
  return [];
}

/** The throttle-aware CPU limit, the GPU partitions and what slower samplers would have seen (docs/sizing.md). */
function beyondRequests(summary: OperatorSummary): string {
  const rec = summary.recommendation;
  const ev = rec.evidence;
  if (!ev) return "";
  const parts: string[] = [];
  const limit = ev.cpuLimit;
  if (limit) {
    const at = (p: { cpu: number; throttledPercent: number; stretchPercent: number }) => `${num(p.throttledPercent)} % of periods throttled at ${p.cpu}${p.stretchPercent > 0 ? `, ${num(p.stretchPercent)} % longer` : ""}`;
    parts.push(`<p class="limit">CPU limit <b>${limit.limit}</b>${limit.lowerBound ? " (lower bound: the trace was throttled)" : ""}: simulated CFS throttling ${esc(at(limit.atLimit))}; at the request: ${esc(at(limit.atRequest))} (target ${limit.targetPercent} %)</p>`);
  }
  if (ev.gpu) {
    const fits = ev.gpu.partitions.map((p) => `${p.gpu} ${p.profile}`).join(", ");
    parts.push(`<p class="gpu">GPU memory <b>${ev.gpu.memoryGb} GB</b> (peak ${num(ev.gpu.peakMb)} MB): ${esc(fits ? `fits MIG ${fits}` : "no MIG partition")}${ev.gpu.wholeGpu.length > 0 ? esc(`; a whole ${ev.gpu.wholeGpu.join(", ")}`) : ""}</p>`);
  }
  const views = ev.samplerViews ?? [];
  if (views.length > 0) {
    const range = (r: [number, number]) => (r[0] === r[1] ? "" : ` (${num(r[0])}–${num(r[1])})`);
    const rows = [
      `<tr><td>cpost (fine)</td><td>${num(ev.cpu.value)}</td><td>${num(ev.memory.valueMb)}</td><td>-</td><td>cpu: ${rec.cpu}, memory: ${rec.memory}</td></tr>`,
      ...views.map((v) => `<tr><td>${esc(v.sampler)}</td><td>${num(v.cpuPercent)}${range(v.cpuPercentRange)}</td><td>${num(v.memoryMb)}${range(v.memoryMbRange)}</td><td>${num(v.sawMemoryPeakPercent)} %</td><td>cpu: ${v.requests.cpu}, memory: ${v.requests.memory}</td></tr>`),
    ];
    parts.push(`<table class="samplers"><caption>What slower samplers would have seen (median over 10 start offsets, range in brackets)</caption><thead><tr><th>Sampler</th><th>Peak CPU %</th><th>Peak memory MB</th><th>Saw the memory peak</th><th>Requests</th></tr></thead><tbody>${rows.join("")}</tbody></table>`);
  }
  return parts.length > 0 ? `<div class="beyond">${parts.join("")}</div>` : "";
}

function statsTable(summary: OperatorSummary): string {
  if (summary.stats.length === 0) return "";
  const rows = summary.stats.map(
    (s) => `<tr><td>${esc(s.key)}</td><td>${esc(s.unit)}</td><td>${s.count}</td><td>${num(s.mean)}</td><td>${num(s.min)}</td><td>${num(s.max)}</td><td>${num(s.last)}</td></tr>`,
  );
  return `<details class="stats"><summary>All metrics (${summary.stats.length})</summary><table><thead><tr><th>Metric</th><th>Unit</th><th>Samples</th><th>Mean</th><th>Min</th><th>Max</th><th>Last</th></tr></thead><tbody>${rows.join("")}</tbody></table></details>`;
}

function maxOf(d: MinMaxDigest, name: string): number {
  let max = NaN;
  d.columns.forEach((c, i) => {
    if (c.name !== name) return;
    for (const arr of [d.first[i]!, d.second[i]!]) for (const v of arr) if (!(v <= max)) max = v;
  });
  return max;
}

function isBad(r: OperatorResult | undefined): boolean {
  return r !== undefined && (r.status === "failed" || r.status === "interrupted");
}
function statusText(r: OperatorResult | undefined): string {
  return r?.status ?? "unknown";
}
function failureText(r: OperatorResult): string {
  const code = r.exitCode === null ? "" : `exit code ${r.exitCode}`;
  return [r.status, code, r.oomKilled ? "OOM killed" : "", r.reason ?? ""].filter(Boolean).join(": ");
}
function scaled(v: number, scale: number): number | null {
  return v === v ? Number((v * scale).toPrecision(6)) : null;
}
function round4(v: number): number {
  return Math.round(v * 1e4) / 1e4;
}
function num(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? "-" : Math.abs(v) >= 1e6 ? v.toExponential(3) : v.toFixed(Math.abs(v) >= 100 ? 1 : 3);
}
function duration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "-";
  if (ms < 1000) return `${ms.toFixed(0)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)} s`;
  const s = Math.round(ms / 1000);
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${s % 60} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}
function isoTime(ms: number): string {
  return Number.isFinite(ms) ? new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC") : "-";
}
function slug(name: string): string {
  return name.replace(/[^A-Za-z0-9_-]/g, "_");
}
function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const PAGE_CSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1400px;padding:16px 24px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
td:first-child,th:first-child,td:nth-child(2){text-align:left}th{background:#f4f4f6}
tr.bad td{background:#fde8e8;color:#8a1111;font-weight:600}
.bad{color:#b00020}.warn{color:#8a5a00;background:#fff6e0;padding:6px 10px;border-radius:4px}
p.bad{background:#fde8e8;padding:6px 10px;border-radius:4px}
section.operator.failed{border-left:4px solid #d62728;padding-left:12px}
.badge{font-size:12px;padding:1px 8px;border-radius:10px;vertical-align:middle;background:#eee;color:#333}
.badge.succeeded{background:#e3f5e6;color:#1b6e2a}.badge.failed,.badge.interrupted{background:#d62728;color:#fff}.badge.skipped{background:#eee;color:#666}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}dt{font-weight:600;color:#555}dd{margin:0}
.meta{color:#666;margin:2px 0 8px}.nodata{color:#666;font-style:italic}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(600px,1fr));gap:12px 20px}figure.chart{margin:0}figcaption{font-weight:600;margin:4px 0}
details.stats{margin:8px 0}ul.notes{color:#555}
`;
