/**
 * The accuracy pipeline (test/vm/pipelines/accuracy.yaml) through `cpost run`
 * of the compiled binary, and the figures its outputs give: what cpost's CSV,
 * table, recording and -v lines say for each operator's known work, next to
 * what the work itself reports. test/accuracy.test.ts runs it on this host's
 * engine; test/vm.test.ts on this host (its v1 column) and inside the cgroup
 * v2 VM, where test/vm/guest/checks.sh runs it the same way.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readRecording, type Recording } from "../core/sinks/recording.ts";
import { REPO, runProcess } from "./support.ts";

export const ACCURACY = join(REPO, "test/vm/pipelines/accuracy.yaml");
const DIAMOND = join(REPO, "examples/diamond");
const MiB = 1024 * 1024;

/** The operators of the accuracy pipeline that write and read 200 MiB with O_DIRECT. */
export const IO_OPERATORS = ["io_init", "io_child"] as const;

/** What a `cpost run` left: exit code, console output, its sinks' files. */
export interface CpostRun {
  exit: number;
  stdout: string;
  stderr: string;
  csv: Map<string, string>;
  recording: Recording;
}

/** Reads a run from `dir`: files exit, stdout, stderr, and metrics/ with the CSVs and the msgpack recording. */
export function readRun(dir: string): CpostRun {
  const metrics = join(dir, "metrics");
  const files = readdirSync(metrics);
  const msgpack = files.find((f) => f.endsWith(".msgpack"));
  if (!msgpack) throw new Error(`no msgpack recording in ${metrics} (have ${files.join(", ")}); stderr: ${readFileSync(join(dir, "stderr"), "utf8")}`);
  return {
    exit: Number(readFileSync(join(dir, "exit"), "utf8")),
    stdout: readFileSync(join(dir, "stdout"), "utf8"),
    stderr: readFileSync(join(dir, "stderr"), "utf8"),
    csv: new Map(files.filter((f) => f.endsWith("_final_result.csv")).map((f) => [f.replace(/_final_result\.csv$/, ""), readFileSync(join(metrics, f), "utf8")])),
    recording: readRecording(join(metrics, msgpack)),
  };
}

/** The cpost run arguments the VM's checks.sh uses too: every sink whose figures the tests read. */
export const RUN_ARGS = ["--collectors", "cgroup,blkio", "--sinks", "table,csv,msgpack", "--force", "cont", "-v"];

/** Runs the accuracy pipeline with the compiled binary on this host's engine. */
export async function runAccuracy(binary: string): Promise<CpostRun> {
  const dir = mkdtempSync(join(tmpdir(), "cpost-accuracy-"));
  try {
    const res = await runProcess([binary, "run", ACCURACY, join(DIAMOND, "input"), ...RUN_ARGS, "--metrics_dir", join(dir, "metrics")], { timeoutMs: 150_000 });
    await Bun.write(join(dir, "exit"), String(res.code));
    await Bun.write(join(dir, "stdout"), res.stdout);
    await Bun.write(join(dir, "stderr"), res.stderr);
    return readRun(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** One operator's rows of a recording, by column key. */
export function series(rec: Recording, operator: string): { timestampMs: number[]; column(key: string): number[] } {
  const op = rec.operators.find((o) => o.operator?.name === operator);
  if (!op) throw new Error(`no operator ${operator} in the recording`);
  const columns = op.batches[0]?.columns ?? [];
  return {
    timestampMs: op.batches.flatMap((b) => [...b.timestampMs]),
    column(key) {
      const index = columns.findIndex((c) => c.key === key);
      if (index < 0) throw new Error(`${operator}: no column ${key}`);
      return op.batches.flatMap((b) => Array.from({ length: b.rows }, (_, r) => b.values[r * columns.length + index]!));
    },
  };
}

/** A counter at epoch time t, linearly between the rows around it. */
function counterAt(s: ReturnType<typeof series>, key: string, t: number): number {
  const times = s.timestampMs;
  const values = s.column(key);
  const rows = times.map((time, i) => [time, values[i]!] as const).filter(([, v]) => !Number.isNaN(v));
  const after = rows.findIndex(([time]) => time >= t);
  if (after < 0) throw new Error(`${key}: no rows at or after ${t}`);
  if (rows[after]![0] === t || after === 0) return rows[after]![1];
  const [t0, v0] = rows[after - 1]!;
  const [t1, v1] = rows[after]!;
  return v0 + ((v1 - v0) * (t - t0)) / (t1 - t0);
}

/** A CSV column as [timestamp (epoch s), value] per row; NaN where empty (not measured in that row). */
function csvColumn(csv: string, operator: string, key: string): Array<[number, number]> {
  const [header, ...rows] = csv.trim().split(/\r?\n/);
  const index = header!.split(",").indexOf(key);
  if (index < 0) throw new Error(`${operator}: the CSV has no column ${key}`);
  return rows.map((row) => row.split(",")).map((cells) => [Number(cells[0]), cells[index] === "" ? NaN : Number(cells[index])]);
}

/** The last value of a CSV column that has one. */
function lastInCsv(csv: string, operator: string, key: string): number {
  return csvColumn(csv, operator, key).map(([, v]) => v).filter((v) => !Number.isNaN(v)).at(-1) ?? NaN;
}

/** The total of a Disk row (`total: N MB`, decimal MB) in the operator's summary table on stdout. */
function tableTotalMb(stdout: string, operator: string, row: "Disk read" | "Disk write"): number {
  const start = stdout.search(new RegExp(`_Operator ${operator} Summary_`));
  if (start < 0) return NaN;
  const block = stdout.slice(start).split(/\n(?=_+Operator \w+ Summary_|Results are stored)/)[0]!;
  const match = new RegExp(`${row}\\b[^\\n]*?total: ([\\d.]+) MB`).exec(block);
  return match ? Number(match[1]) : NaN;
}

/** One O_DIRECT operator's figures: what the CSV's io.* columns and the table's Disk rows end at. */
export interface IoFigures {
  csvReadMiB: number;
  csvWriteMiB: number;
  tableReadMiB: number;
  tableWriteMiB: number;
  readOps: number;
  source: string;
}

/** The accuracy pipeline's figures: what cpost measured and what the work really got. */
export interface Figures {
  /** cpost: from the recording's cpu.usage_ns over the busy window; csvMean: the CSV's cpu_percent rows in it. */
  cpu: Record<"cpu1" | "cpu2", { cpost: number; csvMean: number; truth: number; coveredS: number; summaryMean: number }>;
  memRiseMiB: number;
  memRssMiB: number;
  io: Record<(typeof IO_OPERATORS)[number], IoFigures>;
  sources: string[];
  interval: { p50: number; p99: number; samples: number };
}

export function figuresOf(run: CpostRun): Figures {
  const rec = run.recording;
  const cpu = {} as Figures["cpu"];
  for (const op of ["cpu1", "cpu2"] as const) {
    // -v streams each operator's output between its banner and the next one, each line prefixed "| "
    const section = run.stdout.split("Executing Operator ").find((s) => s.startsWith(`${op}_`)) ?? "";
    const line = /^\| cpu_seconds=([\d.]+) wall_seconds=([\d.]+) start_epoch=([\d.]+) end_epoch=([\d.]+)/m.exec(section);
    if (!line) throw new Error(`${op}: the workload's report is not in cpost's -v output:\n${run.stdout}`);
    const [cpuSeconds, wallSeconds, start, end] = line.slice(1).map(Number) as [number, number, number, number];
    const s = series(rec, op);
    // the busy window as far as rows cover it: under emulation the first row comes a while into the work
    const from = Math.max(start * 1000, s.timestampMs[0]!);
    const to = Math.min(end * 1000, s.timestampMs.at(-1)!);
    const cpost = to > from ? ((counterAt(s, "cpu.usage_ns", to) - counterAt(s, "cpu.usage_ns", from)) / ((to - from) * 1e6)) * 100 : NaN;
    const summary = rec.operators.find((o) => o.operator?.name === op)?.summary;
    const csv = run.csv.get(op) ?? "";
    // a row stands for the span between two readings: the first whole one starts 20 ms in (two 10 ms intervals)
    const inWindow = csvColumn(csv, op, "cpu_percent").filter(([t, v]) => t * 1000 > from + 20 && t * 1000 < to && !Number.isNaN(v));
    const csvMean = inWindow.reduce((sum, [, v]) => sum + v, 0) / inWindow.length;
    cpu[op] = { cpost, csvMean, truth: (100 * cpuSeconds) / wallSeconds, coveredS: (to - from) / 1000, summaryMean: summary?.cpuPercent.mean ?? NaN };
  }
  const measured = (op: string, key: string) => series(rec, op).column(key).filter((v) => !Number.isNaN(v));
  const usage = measured("mem", "memory.usage_bytes");
  // -v names each collector's source per operator ("Sampled <op>: <collector>: <source>")
  const sources = [...run.stdout.matchAll(/^Sampl(?:ing|ed) (\w+): (.*)$/gm)].map((m) => `${m[1]}: ${m[2]}`);
  const io = {} as Figures["io"];
  for (const op of IO_OPERATORS) {
    const csv = run.csv.get(op);
    if (csv === undefined) throw new Error(`${op}: no CSV (have ${[...run.csv.keys()].join(", ")})`);
    io[op] = {
      csvReadMiB: lastInCsv(csv, op, "io.read_bytes") / MiB,
      csvWriteMiB: lastInCsv(csv, op, "io.write_bytes") / MiB,
      tableReadMiB: (tableTotalMb(run.stdout, op, "Disk read") * 1e6) / MiB,
      tableWriteMiB: (tableTotalMb(run.stdout, op, "Disk write") * 1e6) / MiB,
      readOps: lastInCsv(csv, op, "io.read_ops"),
      source: sources.find((s) => s.startsWith(`${op}: blkio: `))?.slice(`${op}: blkio: `.length) ?? "(none)",
    };
  }
  return {
    cpu,
    memRiseMiB: (Math.max(...usage) - Math.min(...usage)) / MiB,
    memRssMiB: Math.max(...measured("mem", "memory.rss_bytes")) / MiB,
    io,
    sources,
    interval: rec.result?.interval ?? { p50: NaN, p99: NaN, samples: 0 },
  };
}
