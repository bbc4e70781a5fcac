/**
 * `--sinks csv`: `<metrics_dir>/<operator>_final_result.csv`, as the original
 * CPOST wrote it: header `timestamp,cpu_percent,memory`, CRLF line ends, one
 * row per pair of consecutive readings (see core/sizing/summary.ts), timestamp in
 * Unix epoch seconds (true UTC; the original's was off by the UTC offset),
 * cpu_percent with 100 per core, memory in MB (bytes / 1e6). Every other
 * metric of the first series follows as a column named by its key (e.g.
 * `io.read_bytes`, `gpu.utilization_pct[0]`); empty = not measured.
 *
 * Rows are written as batches arrive and flushed at least every second, so
 * a crash keeps all but the last second. Numbers print as the shortest text
 * that reads back the same double, so a replay writes the same bytes.
 */
import { closeSync, mkdirSync, openSync } from "node:fs";
import { join } from "node:path";
import { CpostError } from "../core/contracts/errors.ts";
import { defineAppendFile, type AppendFile } from "../core/sinks/append-file.ts";
import { CPU_KEY, definePairing, MEMORY_KEY, pythonFloat, type Pairing, type RowEmitter } from "../core/sizing/summary.ts";
import { defineSink } from "../core/contracts/plugin-sdk.ts";
import type { MetricColumn } from "../core/contracts/types.ts";

const FLUSH_MS = 1000;
const FIRST_COLUMNS = ["timestamp", "cpu_percent", "memory"];

/** One operator's open CSV file. */
interface CsvFile {
  /** The file on disk: whole lines only. */
  out: AppendFile;
  /** Keys of the columns after the first three, fixed by the first series. */
  extraKeys: string[] | undefined;
  pairing: Pairing | undefined;
  emit: RowEmitter;
  pending: string;
}

const CSV_WORDS = { kept: "whole rows written before", hint: "free space there, or give --metrics_dir on another file system" };

const quote = (name: string) => (/[",\r\n]/.test(name) ? `"${name.replace(/"/g, '""')}"` : name);

export default defineSink({
  name: "csv",
  description: "<metrics_dir>/<operator>_final_result.csv as the original CPOST wrote them, with every further metric as a column",
  create({ metricsDir: dir, out }) {
    if (!dir) throw new CpostError("usage", "the csv sink needs --metrics_dir", { hint: "add --metrics_dir DIR, or leave csv out of --sinks" });
    const files = new Map<string, CsvFile>();
    let lastFlush = performance.now();
    let timer: ReturnType<typeof setInterval> | undefined;

    const flush = (file: CsvFile) => {
      if (file.out.failed) throw file.out.failed;
      if (file.pending.length === 0) return;
      const bytes = Buffer.from(file.pending);
      file.pending = "";
      file.out.append(bytes);
    };
    // A failure in the background flush is thrown by the next hook, so the runner reports it.
    const flushAll = () => files.forEach((f) => {
      try {
        flush(f);
      } catch {
        // kept in f.out.failed
      }
    });
    const open = (operator: string): CsvFile => {
      let file = files.get(operator);
      if (file) return file;
      if (!/^[A-Za-z0-9_.-]+$/.test(operator) || operator.startsWith(".")) {
        throw new CpostError("input", `operator name "${operator}" cannot name a CSV file`, { hint: "operator names are 1-255 of [A-Za-z0-9_-]" });
      }
      const path = join(dir, `${operator}_final_result.csv`);
      try {
        mkdirSync(dir, { recursive: true });
        file = { out: defineAppendFile(path, openSync(path, "w"), CSV_WORDS), extraKeys: undefined, pairing: undefined, emit: () => {}, pending: "" };
      } catch (cause) {
        throw new CpostError("io", `cannot write CSV: ${(cause as Error).message}`, { file: path, cause, hint: "choose a writable --metrics_dir" });
      }
      files.set(operator, file);
      timer ??= setInterval(flushAll, FLUSH_MS);
      timer.unref?.();
      return file;
    };
    const startSeries = (file: CsvFile, columns: readonly MetricColumn[]) => {
      file.pairing?.finish(file.emit);
      if (!file.extraKeys) {
        file.extraKeys = columns.map((c) => c.key).filter((k) => k !== CPU_KEY && k !== MEMORY_KEY);
        file.pending += `${[...FIRST_COLUMNS, ...file.extraKeys].map(quote).join(",")}\r\n`;
      }
      const index = (key: string) => columns.findIndex((c) => c.key === key);
      const cpu = index(CPU_KEY);
      const memory = index(MEMORY_KEY);
      const extras = Int32Array.from(file.extraKeys, index);
      // Limits, counts and idle counters repeat row after row: their text is reused, not re-made.
      const lastValue = new Float64Array(extras.length).fill(NaN);
      const lastText = Array.from(extras, () => ",");
      file.pairing = definePairing(columns);
      file.emit = (timestampMs, row) => {
        let line = `${pythonFloat(timestampMs / 1000)},${cpu < 0 ? "" : pythonFloat(row[cpu]!)},${memory < 0 ? "" : pythonFloat(row[memory]! / 1e6)}`;
        for (let i = 0; i < extras.length; i++) {
          const x = extras[i]! < 0 ? NaN : row[extras[i]!]!;
          if (x !== lastValue[i]) {
            lastValue[i] = x;
            lastText[i] = x !== x ? "," : `,${x}`;
          }
          line += lastText[i];
        }
        file.pending += `${line}\r\n`;
      };
    };
    const close = (file: CsvFile, operator: string) => {
      file.pairing?.finish(file.emit);
      if (!file.extraKeys) file.pending += `${FIRST_COLUMNS.join(",")}\r\n`;
      files.delete(operator);
      try {
        flush(file);
      } finally {
        closeSync(file.out.fd);
      }
    };

    return {
      start() {},
      write(batch) {
        const file = open(batch.operator);
        if (file.out.failed) throw file.out.failed;
        if (batch.columns !== file.pairing?.columns) startSeries(file, batch.columns);
        file.pairing!.add(batch, file.emit);
        if (file.pending.length > 1 << 20 || performance.now() - lastFlush >= FLUSH_MS) {
          lastFlush = performance.now();
          files.forEach(flush);
        }
      },
      operatorDone(result) {
        if (result.status === "skipped" && !files.has(result.operator)) return;
        const file = open(result.operator);
        close(file, result.operator);
        out.write(`Results are stored in ${file.out.path}\n`);
      },
      end() {
        clearInterval(timer);
        timer = undefined;
        let failure: CpostError | undefined;
        for (const [operator, file] of [...files]) {
          try {
            close(file, operator);
          } catch (error) {
            failure ??= error as CpostError;
          }
        }
        if (failure) throw failure;
      },
    };
  },
});
