/**
 * `--sinks table`: CPOST's console output. After each operator its summary
 * (Metric | Average | Maximum | Resource, centred as Python's tabulate
 * "pretty" drew it), and at the end the grid of all operators (tabulate
 * "grid", left-aligned) with failed ones marked under their name. Disk and
 * GPU rows join CPU and Memory when those metrics were collected. On a
 * terminal too narrow for a table, each operator is listed line by line;
 * colour only on a terminal, and never with NO_COLOR.
 *
 * Options: `--table-samples all` also prints every row (the CSV's first three
 * columns) before each summary, as the original did without --metrics_dir;
 * `--table-rows cpost` keeps to CPU and Memory, the original's two rows.
 * Otherwise "CPU sizing" and "Memory sizing" rows show the figures the
 * Resource column rests on, where they differ from the raw maxima.
 */
import { CPU_WINDOW_MS } from "../../core/sizing/sizing.ts";
import { defineSink } from "../../core/contracts/plugin-sdk.ts";
import type { OperatorResult, OperatorSummary } from "../../core/contracts/types.ts";
import { defineExtras, defineSampleRows, f3, type Row } from "./extras.ts";

const HEADERS: Row = ["Metric", "Average", "Maximum", "Resource"];

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
function pretty(headers: string[], rows: string[][], paint: Paint): string[] {
  const widths = headers.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  const line = (cells: string[], color: boolean) => `| ${cells.map((s, c) => (color ? paint(centre(s, widths[c]!), c, s) : centre(s, widths[c]!))).join(" | ")} |`;
  return [rule(widths, "-"), line(headers, false), rule(widths, "-"), ...rows.map((r) => line(r, true)), rule(widths, "-")];
}

/** tabulate's "grid": left-aligned multi-line cells, headers padded by two, `=` under the header (also `cpost size`'s spread). */
export function grid(headers: string[], rows: string[][][], paint: Paint = (padded) => padded): string[] {
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

/**
 * The figures the Resource column was sized on, beside the raw CPU and
 * Memory rows where they differ: CPU over one-second windows with its error
 * bound, memory as the working set (docs/sizing.md).
 */
function sizingRows(summary: OperatorSummary): { cpu: Row[]; memory: Row[] } {
  const ev = summary.recommendation.evidence;
  if (!ev || summary.samples === 0) return { cpu: [], memory: [] };
  const window = ev.cpu.windowMs >= CPU_WINDOW_MS ? "1 s" : "whole run";
  const cpu: Row[] = ev.cpu.metric === "cpu.usage_ns" ? [["CPU sizing", "", `${f3(ev.cpu.value)} % ± ${f3(ev.cpu.errorPercent)}`, `${ev.cpu.statistic} over ${window}`]] : [];
  const memory: Row[] = ev.memory.metric === "memory.working_set_bytes" ? [["Memory sizing", "", `${f3(ev.memory.valueMb)} MB`, "working set"]] : [];
  return { cpu, memory };
}

export default defineSink({
  name: "table",
  description: "CPOST's console tables: each operator's summary and the final grid",
  options: {
    samples: { description: "`all`: also print every row before each summary, as the original without --metrics_dir" },
    rows: { description: "`cpost`: only the CPU and Memory rows, as the original" },
  },
  create({ options, out }) {
    const color = out.isTTY === true && !process.env.NO_COLOR;
    const width = out.isTTY ? out.columns : undefined;
    const paint: Paint = (padded, column, text) => {
      if (!color || text === "") return padded;
      // Bold the requests and totals; the sizing rows' notes on what they rest on stay plain.
      const code = column === -1 && text.startsWith("(") ? "31" : column === 3 && /^\w+: /.test(text) ? "1" : "";
      return code ? padded.replace(text, `\x1b[${code}m${text}\x1b[0m`) : padded;
    };
    const fits = (lines: string[]) => width === undefined || lines.every((l) => l.length <= width);
    const done: Array<{ name: string; marker?: string; rows: Row[] }> = [];
    let extras = defineExtras();
    // `--table-samples all`: every row before the summary, as the original printed without --metrics_dir.
    const sampleRows = options.samples === "all" ? defineSampleRows() : undefined;
    const cpostRows = options.rows === "cpost";

    return {
      operatorStart() {
        extras = defineExtras();
      },
      write(batch) {
        if (!cpostRows) extras.add(batch);
        sampleRows?.add(batch);
      },
      operatorDone(result, summary) {
        const rec = summary.recommendation;
        const sized = cpostRows ? { cpu: [], memory: [] } : sizingRows(summary);
        const rows: Row[] = [
          ["CPU", `${f3(summary.cpuPercent.mean)} %`, `${f3(summary.cpuPercent.max)} %`, `cpu: ${rec.cpu}`],
          ...sized.cpu,
          ["Memory", `${f3(summary.memoryMb.mean)} MB`, `${f3(summary.memoryMb.max)} MB`, `memory: ${rec.memory}`],
          ...sized.memory,
          ...(cpostRows ? [] : extras.rows(summary)),
        ];
        extras = defineExtras();
        if (result.status === "skipped") return;
        if (sampleRows) {
          const data = pretty(["timestamp", "cpu_percent", "memory"], sampleRows.take(), paint);
          out.write(`${[centre(`Operator ${result.operator} Metrics Data`, 60, "_"), ...data].join("\n")}\n`);
        }
        done.push({ name: result.operator, marker: marker(result), rows });
        const title = `Operator ${result.operator} Summary`;
        const body = pretty(HEADERS, rows, paint);
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
  },
});
