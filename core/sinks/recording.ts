/**
 * Run recordings: the format the msgpack sink writes, its reader, and replay
 * into any sinks.
 *
 * A recording is a plain concatenation of msgpack values, one per record, so
 * it can be appended to while the run goes and read back after a crash up to
 * the last complete record:
 *
 *   {t:"run", v, run}                         RunInfo, once, first
 *   {t:"op", operator}                        operatorStart
 *   {t:"cols", id, operator, containerId, columns}   a series' columns, once per series
 *   {t:"batch", c, n, ts, mono, v}            n rows of series c; ts/mono/v are
 *                                             Float64 arrays as little-endian bytes
 *   {t:"done", result, summary}               operatorDone
 *   {t:"end", result}                         RunResult, last
 */
import { decodeMulti } from "@msgpack/msgpack";
import { readFileSync } from "node:fs";
import { CpostError, pathError } from "../contracts/errors.ts";
import { defineSinkSession } from "./session.ts";
import { SummaryBuilder } from "../sizing/summary.ts";
import type { SizingPolicy } from "../sizing/sizing.ts";
import type { MetricColumn, Operator, OperatorResult, OperatorSummary, RunInfo, RunResult, SampleBatch, Sink } from "../contracts/types.ts";

/** Format version written in the run record; the reader refuses newer ones. */
export const RECORDING_VERSION = 1;

/** The records of a recording, as written. */
export type RecordingRecord =
  | { t: "run"; v: number; run: RunInfo }
  | { t: "op"; operator: Operator }
  | { t: "cols"; id: number; operator: string; containerId: string; columns: MetricColumn[] }
  | { t: "batch"; c: number; n: number; ts: Uint8Array; mono: Uint8Array; v: Uint8Array }
  | { t: "done"; result: OperatorResult; summary: OperatorSummary }
  | { t: "end"; result: RunResult };

/** One operator of a recording; fields are undefined where the run ended before writing them. */
export interface RecordedOperator {
  operator: Operator | undefined;
  result: OperatorResult | undefined;
  summary: OperatorSummary | undefined;
  batches: SampleBatch[];
}

/** A whole recorded run. `complete` is false when the file ends early (a crash). */
export interface Recording {
  run: RunInfo;
  operators: RecordedOperator[];
  result: RunResult | undefined;
  complete: boolean;
}

/** The bytes of a Float64Array as stored (little-endian, as on every host cpost runs on). */
export function float64Bytes(array: Float64Array, length: number): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, length * 8);
}

function float64s(bytes: Uint8Array): Float64Array {
  // A copy: the decoded view may sit at an unaligned offset of the file buffer (and Buffer#slice does not copy).
  return new Float64Array(new Uint8Array(bytes).buffer);
}

/** Reads a recording; a truncated file gives everything up to its last complete record and complete: false. */
export function readRecording(path: string): Recording {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (cause) {
    throw pathError(path, "recording", cause, "file", "give the .msgpack file a run wrote with --sinks msgpack or --record");
  }
  const notRecording = (why: string) =>
    new CpostError("input", `not a cpost recording: ${why}`, { file: path, hint: "give the .msgpack file a run wrote with --sinks msgpack" });
  let run: RunInfo | undefined;
  let result: RunResult | undefined;
  let broken = false;
  const operators: RecordedOperator[] = [];
  const series = new Map<number, { operator: string; containerId: string; columns: readonly MetricColumn[] }>();
  const names = new Map<RecordedOperator, string>();
  // The open (not yet done) operator of that name, or a new one when the run had no operatorStart for it.
  const openOperator = (name: string): RecordedOperator => {
    for (let i = operators.length - 1; i >= 0; i--) {
      const op = operators[i]!;
      if (names.get(op) === name && !op.result) return op;
    }
    const created: RecordedOperator = { operator: undefined, result: undefined, summary: undefined, batches: [] };
    operators.push(created);
    names.set(created, name);
    return created;
  };
  const take = (record: RecordingRecord) => {
    if (run === undefined) {
      if (record?.t !== "run") throw notRecording("it does not start with a run record");
      if (record.v > RECORDING_VERSION) throw new CpostError("input", `recording format ${record.v} is newer than this cpost reads (${RECORDING_VERSION})`, { file: path, hint: "replay it with a newer cpost" });
      run = record.run;
      return;
    }
    switch (record.t) {
      case "op": {
        const op: RecordedOperator = { operator: record.operator, result: undefined, summary: undefined, batches: [] };
        operators.push(op);
        names.set(op, record.operator.name);
        break;
      }
      case "cols":
        series.set(record.id, { operator: record.operator, containerId: record.containerId, columns: record.columns });
        break;
      case "batch": {
        const s = series.get(record.c);
        if (!s) throw notRecording(`batch of unknown series ${record.c}`);
        if (record.ts.length !== record.n * 8 || record.v.length !== record.n * s.columns.length * 8) throw notRecording(`batch of series ${record.c} has the wrong size`);
        const batch: SampleBatch = { operator: s.operator, containerId: s.containerId, columns: s.columns, rows: record.n, timestampMs: float64s(record.ts), monotonicMs: float64s(record.mono), values: float64s(record.v) };
        openOperator(s.operator).batches.push(batch);
        break;
      }
      case "done": {
        const op = openOperator(record.result.operator);
        op.result = record.result;
        op.summary = record.summary;
        break;
      }
      case "end":
        result = record.result;
        break;
    }
  };
  const records = decodeMulti(bytes);
  for (;;) {
    let next: IteratorResult<unknown>;
    try {
      next = records.next();
    } catch {
      // msgpack throws on the incomplete last record of a crashed run: everything before it stands.
      broken = true;
      break;
    }
    if (next.done) break;
    try {
      take(next.value as RecordingRecord);
    } catch (thrown) {
      if (thrown instanceof CpostError) throw thrown;
      throw notRecording(`a malformed record (${(thrown as Error).message})`);
    }
  }
  if (run === undefined) throw notRecording(bytes.length === 0 ? "the file is empty" : "no complete run record");
  return { run, operators, result, complete: result !== undefined && !broken };
}

/** Options of replayInto. */
export interface ReplayOptions {
  /** Sizing policy for the rebuilt summaries (default: CPOST's). */
  policy?: SizingPolicy;
  /** Called once per failing sink (then left out but for `end`); without it, replayInto throws after the others finished. */
  onError?(error: CpostError): void;
}

/**
 * Drives sinks with a recording, in the hook order of a live run. Summaries
 * are rebuilt from the batches, as the runner builds them; an operator the
 * crash cut short ends "interrupted".
 */
export async function replayInto(recording: Recording, sinks: Sink[], options: ReplayOptions = {}): Promise<void> {
  // The runner's session and error rule: a sink that threw is reported once and left out, but `end` still reaches it.
  const session = defineSinkSession(sinks, { mode: "replay", onError: (error) => options.onError?.(error) });
  const each = (hook: string, call: (sink: Sink) => unknown) => session.call(hook, call);
  await each("start", (s) => s.start(recording.run));
  const results: OperatorResult[] = [];
  const summaries: OperatorSummary[] = [];
  for (const recorded of recording.operators) {
    const name = recorded.operator?.name ?? recorded.result?.operator ?? recorded.batches[0]?.operator ?? "";
    if (recorded.operator) await each("operatorStart", (s) => s.operatorStart?.(recorded.operator!));
    const builder = new SummaryBuilder(name, { policy: options.policy, host: { cpus: recording.run.host?.cpus } });
    for (const batch of recorded.batches) {
      builder.add(batch);
      await each("write", (s) => s.write(batch));
    }
    const result = recorded.result ?? cutShort(name, recorded.batches);
    const summary = builder.build(result);
    results.push(result);
    summaries.push(summary);
    await each("operatorDone", (s) => s.operatorDone(result, summary));
  }
  const recorded = recording.result;
  const lastMs = Math.max(recording.run.startedAtMs, ...results.map((r) => r.endedAtMs));
  const end: RunResult = recorded
    ? { ...recorded, summaries }
    : { results, summaries, endedAtMs: lastMs, interval: { target: recording.run.intervalMs, p50: 0, p99: 0, samples: 0 }, interrupted: true };
  await each("end", (s) => s.end(end));
  if (session.failures.size > 0 && !options.onError) {
    const errors = [...session.failures.values()];
    throw new CpostError("plugin", `${errors.length} sink(s) failed during replay`, { related: errors });
  }
}

/** The result of an operator whose "done" record the crash cut off. */
function cutShort(operator: string, batches: SampleBatch[]): OperatorResult {
  const first = batches[0];
  const last = batches.at(-1);
  return {
    operator,
    containerId: first?.containerId ?? "",
    status: "interrupted",
    exitCode: null,
    reason: "the recording ends before this operator finished",
    startedAtMs: first && first.rows > 0 ? first.timestampMs[0]! : 0,
    endedAtMs: last && last.rows > 0 ? last.timestampMs[last.rows - 1]! : 0,
  };
}
