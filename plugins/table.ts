/**
 * `--sinks table`: CPOST's console output. After each operator its summary
 * (Metric | Average | Maximum | Resource, centred as Python's tabulate
 * "pretty" drew it), and at the end the grid of all operators (tabulate
 * "grid", left-aligned) with failed ones marked under their name. Disk and
 * GPU rows join CPU and Memory when those metrics were collected. On a
 * terminal too narrow for a table, each operator is listed line by line;
 * colour only on a terminal, and never with NO_COLOR.
 */
import type { MetricColumn, OperatorResult, OperatorSummary, SampleBatch, Sink, SinkFactory, SinkOptions } from "../core/types.ts";

type Row = [metric: string, average: string, maximum: string, resource: string];
const HEADERS: Row = ["Metric", "Average", "Maximum", "Resource"];
const f3 = (x: number) => x.toFixed(3);

/** A disk counter's first, last and peak whole-second rate. */
interface DiskFigure {
  key: string;
  label: string;
  seen: boolean;
  first: number;
  firstMs: number;
  last: number;
  lastMs: number;
  anchor: number;
  anchorMs: number;
  peakMbPerS: number;
}

/** Disk and GPU figures of one operator, gathered from its batches (CPOST's summary has neither). */
function defineExtras() {
  const disk: DiskFigure[] = [["io.read_bytes", "Disk read"], ["io.write_bytes", "Disk write"]].map(([key, label]) => ({
    key: key!, label: label!, seen: false, first: 0, firstMs: 0, last: 0, lastMs: 0, anchor: 0, anchorMs: 0, peakMbPerS: -1,
  }));
  const gpu = { rows: 0, busySum: 0, busyMax: 0, memorySum: 0, memoryMax: 0 };
  let columns: readonly MetricColumn[] | undefined;
  let diskSlots: number[] = [];
  let busySlots: number[] = [];
  let memorySlots: number[] = [];
  const slotsOf = (name: string) => columns!.flatMap((c, i) => (c.name === name ? [i] : []));
  const total = (values: Float64Array, base: number, slots: number[]) => {
    let sum = 0;
    for (const i of slots) if (values[base + i]! === values[base + i]!) sum += values[base + i]!;
    return sum;
  };
  return {
    add(batch: SampleBatch) {
      if (batch.columns !== columns) {
        columns = batch.columns;
        diskSlots = disk.map((d) => columns!.findIndex((c) => c.key === d.key));
        busySlots = slotsOf("gpu.utilization_pct");
        const processMemory = slotsOf("gpu.process_memory_bytes");
        memorySlots = processMemory.length > 0 ? processMemory : slotsOf("gpu.memory_used_bytes");
      }
      const width = columns.length;
      for (let r = 0; r < batch.rows; r++) {
        const ms = batch.timestampMs[r]!;
        for (let k = 0; k < disk.length; k++) {
          const d = disk[k]!;
          const x = diskSlots[k]! < 0 ? NaN : batch.values[r * width + diskSlots[k]!]!;
          if (x !== x) continue;
          if (!d.seen) Object.assign(d, { seen: true, first: x, firstMs: ms, anchor: x, anchorMs: ms });
          d.last = x;
          d.lastMs = ms;
          // Peak over whole seconds: per-sample rates at 1 kHz are mostly page-cache bursts.
          if (ms - d.anchorMs >= 1000) {
            d.peakMbPerS = Math.max(d.peakMbPerS, (x - d.anchor) / 1e3 / (ms - d.anchorMs));
            d.anchor = x;
            d.anchorMs = ms;
          }
        }
        if (busySlots.length + memorySlots.length === 0) continue;
        const busy = total(batch.values, r * width, busySlots);
        const memoryMb = total(batch.values, r * width, memorySlots) / 1e6;
        gpu.rows++;
        gpu.busySum += busy;
        gpu.busyMax = Math.max(gpu.busyMax, busy);
        gpu.memorySum += memoryMb;
        gpu.memoryMax = Math.max(gpu.memoryMax, memoryMb);
      }
    },
    rows(summary: OperatorSummary): Row[] {
      const rows: Row[] = [];
      for (const d of disk.filter((d) => d.seen)) {
        const seconds = (d.lastMs - d.firstMs) / 1000;
        const average = seconds > 0 ? (d.last - d.first) / 1e6 / seconds : 0;
        // The whole span is a window too, so the peak is never below the average.
        const peak = Math.max(d.peakMbPerS, average);
        rows.push([d.label, `${f3(average)} MB/s`, `${f3(peak)} MB/s`, `total: ${f3((d.last - d.first) / 1e6)} MB`]);
      }
      if (gpu.rows > 0) {
        rows.push(["GPU", `${f3(gpu.busySum / gpu.rows)} %`, `${f3(gpu.busyMax)} %`, `gpu: ${summary.recommendation.gpu ?? 0}`]);
        rows.push(["GPU memory", `${f3(gpu.memorySum / gpu.rows)} MB`, `${f3(gpu.memoryMax)} MB`, ""]);
      }
      return rows;
    },
  };
}

/** Python's `"{:<fill>^w}".format(s)`: the odd space goes right. */
const centre = (s: string, w: number, fill = " ") => {
  const room = Math.max(0, w - s.length);
  return fill.repeat(Math.floor(room / 2)) + s + fill.repeat(Math.ceil(room / 2));
};
/** Splits `s` into lines of at most `size`, breaking after a hyphen where it can. */
function chunks(s: string, size: number): string[] {
  const lines: string[] = [];
  for (const part of s.split(/(?<=-)/)) {
    const last = lines.length - 1;
    if (last >= 0 && lines[last]!.length + part.length <= size) lines[last] += part;
    else lines.push(...(part.match(new RegExp(`.{1,${Math.max(1, size)}}`, "g")) ?? []));
  }
  return lines.length > 0 ? lines : [""];
}
const rule = (widths: number[], fill: string) => `+${widths.map((w) => fill.repeat(w + 2)).join("+")}+`;

/** tabulate's "pretty": every cell centred, no minimum padding. */
function pretty(rows: Row[], paint: Paint): string[] {
  const widths = HEADERS.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  const line = (cells: string[], color: boolean) => `| ${cells.map((s, c) => (color ? paint(centre(s, widths[c]!), c, s) : centre(s, widths[c]!))).join(" | ")} |`;
  return [rule(widths, "-"), line(HEADERS, false), rule(widths, "-"), ...rows.map((r) => line(r, true)), rule(widths, "-")];
}

/** tabulate's "grid": left-aligned multi-line cells, headers padded by two, `=` under the header. */
function grid(headers: string[], rows: string[][][], paint: Paint): string[] {
  const widths = headers.map((h, c) => Math.max(h.length + 2, ...rows.flatMap((r) => r[c]!.map((l) => l.length))));
  const line = (cells: string[], color: boolean) => `| ${cells.map((s, c) => (color ? paint(s.padEnd(widths[c]!), c - 1, s) : s.padEnd(widths[c]!))).join(" | ")} |`;
  const out = [rule(widths, "-"), line(headers, false), rule(widths, "=")];
  rows.forEach((row, i) => {
    const height = Math.max(...row.map((cell) => cell.length));
    for (let l = 0; l < height; l++) out.push(line(row.map((cell) => cell[l] ?? ""), true));
    out.push(rule(widths, "-"));
  });
  if (rows.length === 0) out.push(rule(widths, "-"));
  return out;
}

/** Colours a padded cell; `column` is the Row index (-1: the operator column). */
type Paint = (padded: string, column: number, text: string) => string;

/** The marker CPOST put under a failed operator's name (and cpost's for the other ends). */
function marker(result: OperatorResult): string | undefined {
  if (result.status === "interrupted") return "(Interrupted)";
  if (result.status !== "failed") return undefined;
  return result.exitCode === null ? "(Failed to start)" : "(Non-zero exitcode)";
}

/** One block per operator, for terminals too narrow for a table. */
function stacked(name: string, rows: Row[], width: number): string[] {
  return [...chunks(name, Math.max(8, width)), ...rows.flatMap((r) => [`  ${r[0]}`, ...HEADERS.slice(1).flatMap((h, i) => (r[i + 1] ? [`    ${h.padEnd(9)}${r[i + 1]}`] : []))])];
}

const table = (options: SinkOptions): Sink => {
  const out = options.out ?? process.stdout;
  const color = out.isTTY === true && !process.env.NO_COLOR;
  const width = out.isTTY ? out.columns : undefined;
  const paint: Paint = (padded, column, text) => {
    if (!color || text === "") return padded;
    const code = column === -1 && text.startsWith("(") ? "31" : column === 3 ? "1" : "";
    return code ? padded.replace(text, `\x1b[${code}m${text}\x1b[0m`) : padded;
  };
  const fits = (lines: string[]) => width === undefined || lines.every((l) => l.length <= width);
  const done: Array<{ name: string; marker?: string; rows: Row[] }> = [];
  let extras = defineExtras();

  return {
    name: "table",
    start() {},
    operatorStart() {
      extras = defineExtras();
    },
    write(batch) {
      extras.add(batch);
    },
    operatorDone(result, summary) {
      const rec = summary.recommendation;
      const rows: Row[] = [
        ["CPU", `${f3(summary.cpuPercent.mean)} %`, `${f3(summary.cpuPercent.max)} %`, `cpu: ${rec.cpu}`],
        ["Memory", `${f3(summary.memoryMb.mean)} MB`, `${f3(summary.memoryMb.max)} MB`, `memory: ${rec.memory}`],
        ...extras.rows(summary),
      ];
      extras = defineExtras();
      if (result.status === "skipped") return;
      done.push({ name: result.operator, marker: marker(result), rows });
      const title = `Operator ${result.operator} Summary`;
      const body = pretty(rows, paint);
      const lines = fits(body) ? [centre(title, 60, "_"), ...body] : stacked(title, rows, width ?? 80);
      out.write(`${lines.join("\n")}\n`);
    },
    end() {
      const build = (split: (s: string) => string[]) =>
        grid(["Operator", ...HEADERS], done.map((op) => [[...split(op.name), ...(op.marker ? split(op.marker) : [])], ...HEADERS.map((_, c) => op.rows.map((r) => r[c]!))]), paint);
      let lines = build((s) => [s]);
      if (!fits(lines) && width !== undefined) {
        // Wrap long operator names into the room the other columns leave, else list operators one by one.
        const nameWidth = Math.max("Operator".length + 2, ...done.map((op) => Math.max(op.name.length, op.marker?.length ?? 0)));
        const room = width - (lines[0]!.length - nameWidth);
        const wrapped = room >= 10 ? build((s) => chunks(s, room)) : [];
        lines = wrapped.length > 0 && fits(wrapped) ? wrapped : done.flatMap((op) => stacked(`${op.name}${op.marker ? ` ${op.marker}` : ""}`, op.rows, width));
      }
      out.write(`${lines.join("\n")}\n`);
    },
  };
};

export default table satisfies SinkFactory;
