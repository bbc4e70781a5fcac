/**
 * Min/max downsampling for the HTML report. Each column of an operator's
 * series keeps at most `maxBuckets` time buckets, each with its minimum and
 * maximum and when they happened, so an hour at 1 kHz keeps every peak in a
 * few hundred kilobytes, and memory stays bounded however long the run is.
 */
import { CpostError } from "../../core/contracts/errors.ts";
import type { MetricColumn, SampleBatch } from "../../core/contracts/types.ts";

/** Buckets per column: about one per pixel column of a wide chart, times two. */
export const DEFAULT_BUCKETS = 2048;

/** What a series looks like once downsampled: what the report draws. */
export interface MinMaxDigest {
  /** Every column seen, in order of first appearance. */
  columns: MetricColumn[];
  /** Samples fed in. */
  rows: number;
  /** Wall-clock time of the first sample, Unix epoch ms (NaN when none). */
  startEpochMs: number;
  /** Time from the first to the last sample, ms. */
  spanMs: number;
  /** Width of one bucket, ms. */
  bucketMs: number;
  /** Start of each bucket that holds a sample, ms since the first sample, ascending. */
  bucketStartMs: Float64Array;
  /**
   * Per column (same order as `columns`), per bucket of `bucketStartMs`: the
   * extreme that came first and the one that came second (min then max, or
   * max then min); NaN where the column was not measured in that bucket.
   */
  first: Float64Array[];
  second: Float64Array[];
}

/** An incremental min/max downsampler fed one operator's batches in time order. */
export interface MinMaxSeries {
  add(batch: SampleBatch): void;
  digest(): MinMaxDigest;
}

interface ColumnBuckets {
  column: MetricColumn;
  min: Float64Array;
  minAt: Float64Array;
  max: Float64Array;
  maxAt: Float64Array;
}

/**
 * A downsampler with buckets aligned on the first sample: the bucket width
 * starts at 1 ms and doubles (merging neighbours) whenever the series
 * outgrows `maxBuckets`, so no sample is ever dropped from a min or max.
 */
export function defineMinMaxSeries(maxBuckets = DEFAULT_BUCKETS): MinMaxSeries {
  if (!Number.isInteger(maxBuckets) || maxBuckets < 2 || maxBuckets % 2 !== 0) {
    throw new CpostError("internal", `min/max buckets must be an even integer >= 2, not ${maxBuckets}`);
  }
  const byKey = new Map<string, ColumnBuckets>();
  const order: ColumnBuckets[] = [];
  let slotsOf: { columns: readonly MetricColumn[]; slots: ColumnBuckets[] } | undefined;
  let originMs = NaN;
  let startEpochMs = NaN;
  let lastMs = NaN;
  let bucketMs = 1;
  let used = 0; // buckets [0, used) may hold data
  let rows = 0;

  function emptyColumn(column: MetricColumn): ColumnBuckets {
    const make = () => new Float64Array(maxBuckets).fill(NaN);
    return { column, min: make(), minAt: make(), max: make(), maxAt: make() };
  }

  // Columns are the same array object for a whole container series: map them once.
  function slotsFor(columns: readonly MetricColumn[]): ColumnBuckets[] {
    if (slotsOf?.columns === columns) return slotsOf.slots;
    const slots = columns.map((column) => {
      let buckets = byKey.get(column.key);
      if (!buckets) {
        buckets = emptyColumn(column);
        byKey.set(column.key, buckets);
        order.push(buckets);
      }
      return buckets;
    });
    slotsOf = { columns, slots };
    return slots;
  }

  function mergePairs(): void {
    for (const b of order) {
      for (let i = 0; i < maxBuckets / 2; i++) {
        const l = 2 * i;
        const r = l + 1;
        const minRight = b.min[r]! < b.min[l]! || b.min[l]! !== b.min[l]!;
        b.min[i] = minRight ? b.min[r]! : b.min[l]!;
        b.minAt[i] = minRight ? b.minAt[r]! : b.minAt[l]!;
        const maxRight = b.max[r]! > b.max[l]! || b.max[l]! !== b.max[l]!;
        b.max[i] = maxRight ? b.max[r]! : b.max[l]!;
        b.maxAt[i] = maxRight ? b.maxAt[r]! : b.maxAt[l]!;
      }
      for (const a of [b.min, b.minAt, b.max, b.maxAt]) a.fill(NaN, maxBuckets / 2);
    }
    bucketMs *= 2;
    used = Math.ceil(used / 2);
  }

  function add(batch: SampleBatch): void {
    if (batch.rows === 0) return;
    const slots = slotsFor(batch.columns);
    const width = batch.columns.length;
    const { values, monotonicMs } = batch;
    if (Number.isNaN(originMs)) {
      originMs = monotonicMs[0]!;
      startEpochMs = batch.timestampMs[0]!;
    }
    for (let r = 0; r < batch.rows; r++) {
      const t = Math.max(0, monotonicMs[r]! - originMs);
      let index = Math.floor(t / bucketMs);
      while (index >= maxBuckets) {
        mergePairs();
        index = Math.floor(t / bucketMs);
      }
      if (index >= used) used = index + 1;
      const row = r * width;
      for (let c = 0; c < width; c++) {
        const v = values[row + c]!;
        if (v !== v) continue;
        const b = slots[c]!;
        if (!(v >= b.min[index]!)) {
          b.min[index] = v;
          b.minAt[index] = t;
        }
        if (!(v <= b.max[index]!)) {
          b.max[index] = v;
          b.maxAt[index] = t;
        }
      }
      lastMs = t;
    }
    rows += batch.rows;
  }

  function digest(): MinMaxDigest {
    const occupied: number[] = [];
    for (let i = 0; i < used; i++) if (order.some((b) => b.min[i] === b.min[i])) occupied.push(i);
    const first = order.map(() => new Float64Array(occupied.length));
    const second = order.map(() => new Float64Array(occupied.length));
    order.forEach((b, c) => {
      occupied.forEach((i, k) => {
        const minFirst = !(b.maxAt[i]! < b.minAt[i]!);
        first[c]![k] = minFirst ? b.min[i]! : b.max[i]!;
        second[c]![k] = minFirst ? b.max[i]! : b.min[i]!;
      });
    });
    return {
      columns: order.map((b) => b.column),
      rows,
      startEpochMs,
      spanMs: rows === 0 ? 0 : lastMs,
      bucketMs,
      bucketStartMs: Float64Array.from(occupied, (i) => i * bucketMs),
      first,
      second,
    };
  }

  return {
    add,
    digest,
  };
}
