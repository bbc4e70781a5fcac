/**
 * `--sinks html`: one self-contained HTML report with charts, written at the
 * end of the run to `--html-out` or <metrics_dir>/report.html. As batches
 * arrive it keeps only a min/max digest per operator (plugins/html/downsample.ts),
 * so memory stays bounded however long and fast the run samples.
 */
import { mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { CpostError } from "../../core/contracts/errors.ts";
import { defineSink, type SinkContext } from "../../core/contracts/plugin-sdk.ts";
import type { Operator, OperatorResult, OperatorSummary, RunInfo, RunResult, SampleBatch, Sink } from "../../core/contracts/types.ts";
import { defineMinMaxSeries, type MinMaxSeries } from "./downsample.ts";
import { renderReport, type ReportOperator } from "./report.ts";

/** Options of the html sink. */
export interface HtmlSinkOptions {
  /** The report file to write. */
  path: string;
  /** Where to say where the report went (a run's stdout); silent when absent. */
  out?: SinkContext["out"];
}

interface Entry {
  name: string;
  operator?: Operator;
  result?: OperatorResult;
  summary?: OperatorSummary;
  series: MinMaxSeries;
}

/** Where the report goes: `--html-out`, else <metrics_dir>/report.html. */
export function htmlOutputPath(context: { metricsDir?: string; options: { out?: string } }): string {
  const out = context.options.out;
  if (out) return resolve(out);
  if (context.metricsDir) return resolve(context.metricsDir, "report.html");
  throw new CpostError("usage", "the html sink needs a place to write the report", {
    hint: "give --metrics_dir DIR (writes DIR/report.html) or --html-out FILE",
  });
}

/** The html sink writing to `options.path`; `complete` is false when fed a truncated recording. */
export function defineHtmlSink(options: HtmlSinkOptions, complete = true): Sink {
  const entries = new Map<string, Entry>();
  let run: RunInfo | undefined;
  let current: Entry | undefined;

  function entry(name: string): Entry {
    if (current?.name === name) return current;
    let found = entries.get(name);
    if (!found) {
      found = { name, series: defineMinMaxSeries() };
      entries.set(name, found);
    }
    current = found;
    return found;
  }

  return {
    name: "html",
    start(info: RunInfo) {
      run = info;
      // Fail at the start, not after an hour of sampling, when the directory cannot be made.
      mkdirSync(dirname(options.path), { recursive: true });
    },
    operatorStart(operator: Operator) {
      entry(operator.name).operator = operator;
    },
    write(batch: SampleBatch) {
      entry(batch.operator).series.add(batch);
    },
    operatorDone(result: OperatorResult, summary: OperatorSummary) {
      const e = entry(result.operator);
      e.result = result;
      e.summary = summary;
    },
    end(result: RunResult) {
      if (!run) return;
      const operators: ReportOperator[] = [...entries.values()].map((e) => ({
        name: e.name,
        operator: e.operator,
        result: e.result,
        summary: e.summary,
        series: e.series.digest(),
      }));
      const html = renderReport({ run, operators, result, complete });
      // Written beside the target and renamed: a reader never sees half a report.
      const tmp = join(dirname(options.path), `.${Date.now()}-${process.pid}.report.tmp`);
      try {
        writeFileSync(tmp, html);
        renameSync(tmp, options.path);
      } catch (e) {
        rmSync(tmp, { force: true });
        throw new CpostError("io", `cannot write the HTML report ${options.path}: ${(e as Error).message}`, {
          file: options.path,
          hint: "check that the directory exists and is writable",
          cause: e,
        });
      }
      options.out?.write(`HTML report in ${options.path}\n`);
    },
  };
}

export default defineSink({
  name: "html",
  description: "one self-contained HTML report with charts, written at the end of the run",
  options: { out: { description: "the report file (default <metrics_dir>/report.html)" } },
  create: (context) => defineHtmlSink({ path: htmlOutputPath(context), out: context.out }),
});
