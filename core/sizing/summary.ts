/**
 * Per-operator summaries, built from sample batches alone so that a live run
 * and a replay of its recording give the same summary.
 *
 * CPOST's figures come from "rows", each made of two consecutive readings
 * (the original sampled raw counters and reported every pair): the row's
 * time and gauges are the mean of the two readings, `cpu.percent` is the
 * later reading's (the collector already computed it over that interval) and
 * counters are the later reading's cumulative value. A series of a single
 * reading gives one row of that reading alone (the original crashed there).
 * The CSV sink writes exactly these rows, so the table's averages and maxima
 * can be recomputed from the CSV.
 */
import { defineSizingSeries, type SizingHost, type SizingPolicy, type SizingReading, type SizingSeries } from "./sizing.ts";
import type { MetricColumn, MetricStats, OperatorResult, OperatorSummary, SampleBatch } from "../contracts/types.ts";

/** Column keys of CPOST's two figures. */
export const CPU_KEY = "cpu.percent";
export const MEMORY_KEY = "memory.usage_bytes";
/** Columns sizing reads besides those two. */
const USAGE_KEY = "cpu.usage_ns";
const WORKING_SET_KEY = "memory.working_set_bytes";

/**
 * A row value as the original printed it (Python's repr of a float): "0.0"
 * for whole numbers, exponent form below 1e-4 and from 1e16 ("1e-05").
 * NaN (not measured) is "".
 */
export function pythonFloat(x: number): string {
  if (x !== x) return "";
  if (x === Infinity || x === -Infinity) return x > 0 ? "inf" : "-inf";
  const abs = Math.abs(x);
  if (abs !== 0 && (abs < 1e-4 || abs >= 1e16)) {
    const [mantissa, exponent] = x.toExponential().split("e") as [string, string];
    const e = Number(exponent);
    return `${mantissa}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  }
  return Number.isInteger(x) ? (Object.is(x, -0) ? "-0.0" : `${x}.0`) : String(x);
}

/** Receives one row: its time (epoch ms) and one value per column of the series (NaN: not measured); `row` is reused. */
export type RowEmitter = (timestampMs: number, row: Float64Array) => void;

/** Turns one series of readings into CPOST rows. */
export interface Pairing {
  readonly columns: readonly MetricColumn[];
  /** Feeds a batch of this series; emits a row for every reading but the series' first. */
  add(batch: SampleBatch, emit: RowEmitter): void;
  /** Ends the series; a series of exactly one reading emits that reading as its row. */
  finish(emit: RowEmitter): void;
}

/** A pairing for one series (one `columns` array). */
export function definePairing(columns: readonly MetricColumn[]): Pairing {
  const width = columns.length;
  const takeLater = columns.map((c) => c.kind === "counter" || c.key === CPU_KEY);
  const previous = new Float64Array(width);
  const row = new Float64Array(width);
  let previousMs = 0;
  let readings = 0;
  return {
    columns,
    add(batch, emit) {
      const { values, timestampMs } = batch;
      for (let r = 0; r < batch.rows; r++) {
        const base = r * width;
        if (readings > 0) {
          for (let c = 0; c < width; c++) {
            const later = values[base + c]!;
            const earlier = previous[c]!;
            if (takeLater[c] || earlier !== earlier) row[c] = later;
            else row[c] = later !== later ? earlier : (earlier + later) / 2;
          }
          emit((previousMs + timestampMs[r]!) / 2, row);
        }
        for (let c = 0; c < width; c++) previous[c] = values[base + c]!;
        previousMs = timestampMs[r]!;
        readings++;
      }
    },
    finish(emit) {
      if (readings === 1) {
        row.set(previous);
        emit(previousMs, row);
      }
      readings = 0;
    },
  };
}

/** Running count, sum, min, max and last of one column's readings. */
interface Accumulator {
  column: MetricColumn;
  count: number;
  sum: number;
  min: number;
  max: number;
  last: number;
}

/**
 * Builds one operator's summary. The runner feeds every batch of the
 * operator's containers in time order; replay feeds the recorded batches the
 * same way, so both give the same summary.
 */
export class SummaryBuilder {
  private readonly sizing: SizingSeries;
  private readonly stats = new Map<string, Accumulator>();
  private pairing: Pairing | undefined;
  private slots: Accumulator[] = [];
  private cpuSlot = -1;
  private memorySlot = -1;
  /** Slots sizing reads in the current series: usage_ns, cpu.percent, memory usage, working set (-1: absent). */
  private sizingSlots = [-1, -1, -1, -1];
  private readonly reading: SizingReading = { timestampMs: 0, usageNs: NaN, cpuPercent: NaN, memoryBytes: NaN, workingSetBytes: NaN };
  private samples = 0;
  private cpu = { count: 0, sum: 0, max: 0 };
  private memory = { count: 0, sum: 0, max: 0 };
  private readonly onRow: RowEmitter;

  constructor(readonly operator: string, options: { policy?: SizingPolicy; host?: SizingHost } = {}) {
    this.sizing = defineSizingSeries(options.policy, options.host);
    this.onRow = (ms, row) => {
      const cpu = this.cpuSlot < 0 ? NaN : row[this.cpuSlot]!;
      const memoryMb = this.memorySlot < 0 ? NaN : row[this.memorySlot]! / 1e6;
      if (cpu === cpu) {
        this.cpu.count++;
        this.cpu.sum += cpu;
        if (cpu > this.cpu.max) this.cpu.max = cpu;
      }
      if (memoryMb === memoryMb) {
        this.memory.count++;
        this.memory.sum += memoryMb;
        if (memoryMb > this.memory.max) this.memory.max = memoryMb;
      }
    };
  }

  /** Adds one batch (batches of one container in time order). */
  add(batch: SampleBatch): void {
    if (batch.columns !== this.pairing?.columns) this.startSeries(batch.columns);
    this.samples += batch.rows;
    const width = batch.columns.length;
    const slots = this.slots;
    const values = batch.values;
    const [usage, cpu, memory, workingSet] = this.sizingSlots as [number, number, number, number];
    const reading = this.reading;
    const at = (base: number, slot: number) => (slot < 0 ? NaN : values[base + slot]!);
    for (let r = 0; r < batch.rows; r++) {
      const base = r * width;
      reading.timestampMs = batch.timestampMs[r]!;
      reading.usageNs = at(base, usage);
      reading.cpuPercent = at(base, cpu);
      reading.memoryBytes = at(base, memory);
      reading.workingSetBytes = at(base, workingSet);
      this.sizing.reading(reading);
      for (let c = 0; c < width; c++) {
        const x = values[r * width + c]!;
        if (x !== x) continue;
        const acc = slots[c]!;
        if (acc.count === 0 || x < acc.min) acc.min = x;
        if (acc.count === 0 || x > acc.max) acc.max = x;
        acc.count++;
        acc.sum += x;
        acc.last = x;
      }
    }
    this.pairing!.add(batch, this.onRow);
  }

  /** The summary; works with zero samples (zeros, samples: 0). Call once, after the last batch. */
  build(result: OperatorResult): OperatorSummary {
    this.pairing?.finish(this.onRow);
    const stats: MetricStats[] = [...this.stats.values()].map(({ column, count, sum, min, max, last }) => ({
      key: column.key,
      name: column.name,
      unit: column.unit,
      ...(column.device === undefined ? {} : { device: column.device }),
      count,
      mean: count === 0 ? 0 : sum / count,
      max: count === 0 ? 0 : max,
      min: count === 0 ? 0 : min,
      last: count === 0 ? 0 : last,
    }));
    const cpuPercent = { mean: mean(this.cpu), max: this.cpu.max };
    const memoryMb = { mean: mean(this.memory), max: this.memory.max };
    // The policy, its evidence and the OOM / throttling findings live in sizing.ts.
    const recommendation = this.sizing.recommend({ samples: this.samples, gpu: gpusUsed(stats), result, stats });
    return { operator: this.operator, samples: this.samples, cpuPercent, memoryMb, stats, recommendation };
  }

  private startSeries(columns: readonly MetricColumn[]): void {
    this.pairing?.finish(this.onRow);
    this.pairing = definePairing(columns);
    this.slots = columns.map((column) => {
      let acc = this.stats.get(column.key);
      if (!acc) this.stats.set(column.key, (acc = { column, count: 0, sum: 0, min: 0, max: 0, last: 0 }));
      return acc;
    });
    this.cpuSlot = columns.findIndex((c) => c.key === CPU_KEY);
    this.memorySlot = columns.findIndex((c) => c.key === MEMORY_KEY);
    this.sizingSlots = [USAGE_KEY, CPU_KEY, MEMORY_KEY, WORKING_SET_KEY].map((key) => columns.findIndex((c) => c.key === key));
    this.sizing.startSeries();
  }
}

function mean(figure: { count: number; sum: number }): number {
  return figure.count === 0 ? 0 : figure.sum / figure.count;
}

/**
 * GPUs an operator used: devices where its own processes held memory, or
 * (without per-process figures) devices that were busy while it ran.
 * Undefined when no GPU metric was collected.
 */
function gpusUsed(stats: MetricStats[]): number | undefined {
  const gpu = stats.filter((s) => s.name.startsWith("gpu."));
  if (gpu.length === 0) return undefined;
  const processMemory = gpu.filter((s) => s.name === "gpu.process_memory_bytes");
  const evidence = processMemory.length > 0 ? processMemory : gpu.filter((s) => s.name === "gpu.utilization_pct");
  const devices = new Set(evidence.filter((s) => s.max > 0).map((s) => s.device ?? 0));
  return devices.size;
}
