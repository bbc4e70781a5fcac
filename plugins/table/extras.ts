/**
 * The table sink's Disk and GPU rows: figures of one operator gathered from
 * its batches (CPOST's summary has neither). Disk: average rate over the
 * operator, peak rate over whole seconds, total; GPU: utilisation summed
 * over devices (100 = one GPU) and the operator's GPU memory. Also the
 * operator's rows as the original printed them, for `--table-samples all`.
 */
import { CPU_KEY, definePairing, MEMORY_KEY, pythonFloat, type Pairing, type RowEmitter } from "../../core/sizing/summary.ts";
import type { MetricColumn, OperatorSummary, SampleBatch } from "../../core/contracts/types.ts";

/** A table row: Metric, Average, Maximum, Resource. */
export type Row = [metric: string, average: string, maximum: string, resource: string];

import { f3 } from "../../core/contracts/units.ts";

export { f3 };

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
export function defineExtras() {
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

/** One operator's CPOST rows (the CSV's timestamp, cpu_percent, memory) as text, kept until taken. */
export function defineSampleRows() {
  let rows: string[][] = [];
  let pairing: Pairing | undefined;
  let emit: RowEmitter = () => {};
  return {
    add(batch: SampleBatch) {
      if (pairing?.columns !== batch.columns) {
        pairing?.finish(emit);
        const cpu = batch.columns.findIndex((c) => c.key === CPU_KEY);
        const memory = batch.columns.findIndex((c) => c.key === MEMORY_KEY);
        pairing = definePairing(batch.columns);
        emit = (ms, row) => rows.push([pythonFloat(ms / 1000), cpu < 0 ? "" : pythonFloat(row[cpu]!), memory < 0 ? "" : pythonFloat(row[memory]! / 1e6)]);
      }
      pairing.add(batch, emit);
    },
    /** The rows so far, ending the operator's series. */
    take(): string[][] {
      pairing?.finish(emit);
      pairing = undefined;
      const taken = rows;
      rows = [];
      return taken;
    },
  };
}
