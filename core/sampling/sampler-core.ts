/**
 * The sampling loop shared by the sampler's worker thread and its
 * main-thread fallback: the watched series, one drift-free schedule for all
 * of them, batches, and the achieved-interval histogram. It never waits or
 * sleeps itself; its driver calls `tick()` at `nextDue()`, or hands the
 * ticks until the next one that needs JavaScript to the native loop with
 * `capture()`, which decodes what the loop read, in order, when it returns.
 */
import { existsSync } from "node:fs";
import { capturedReadsOf, DUE_EARLY_MS, type CapturedReads, type StatFile } from "../../collectors/cgroup/files.ts";
import { LOOP, SCHED, type CaptureArgs, type SamplingLoop } from "../../native/sampling-loop.ts";
import { pluginError } from "../contracts/errors.ts";
import { columnKey, isUnavailable, type Collector, type MetricBuffer, type MetricColumn, type Probe, type Target } from "../contracts/types.ts";

/** What the core reports to its driver, in order. */
export type CoreEvent =
  | { type: "batch"; id: number; rows: number; timestampMs: Float64Array; monotonicMs: Float64Array; values: Float64Array }
  | { type: "opened"; id: number; columns: MetricColumn[]; sources: string[] }
  | { type: "finished"; id: number; sources: string[]; samples: number }
  | { type: "warning"; message: string };

/** The fixed shape of a new series, known as soon as its probes are open. */
export interface SeriesShape {
  columns: MetricColumn[];
  sources: string[];
}

/** Achieved intervals between consecutive sampling ticks, ms. */
export interface IntervalReport {
  target: number;
  p50: number;
  p99: number;
  samples: number;
  /** Of those ticks, how many the native loop took (the rest ran in JS). */
  nativeTicks?: number;
}

/** The core's collectors, schedule, batching, clock origin, and where its events go. */
export interface CoreOptions {
  collectors: readonly Collector[];
  intervalMs: number;
  batchMs: number;
  /** Epoch ms (performance.timeOrigin + performance.now()) of the run's start; monotonic times are relative to it. */
  epochOriginMs: number;
  emit(event: CoreEvent): void;
}

/** The one clock of cpost's samples, equal across threads: epoch milliseconds with fraction, monotonic within a run. */
export function epochNow(): number {
  return performance.timeOrigin + performance.now();
}

/** How often a pending watch looks for its container's cgroup, ms. */
const PENDING_POLL_MS = 1;
const BIN_US = 5;
const BINS = 20_000; // 5 µs bins up to 100 ms; longer intervals land in the last bin

/** A histogram of intervals: recording allocates nothing. */
function defineIntervalHistogram(targetMs: number) {
  const bins = new Uint32Array(BINS);
  let count = 0;
  const quantile = (q: number): number => {
    if (count === 0) return NaN;
    const rank = Math.ceil(q * count);
    let seen = 0;
    for (let i = 0; i < BINS; i++) {
      seen += bins[i]!;
      if (seen >= rank) return ((i + 0.5) * BIN_US) / 1000;
    }
    return NaN;
  };
  return {
    add(ms: number): void {
      bins[Math.min(BINS - 1, Math.max(0, Math.floor((ms * 1000) / BIN_US)))]!++;
      count++;
    },
    report(): IntervalReport {
      return { target: targetMs, p50: quantile(0.5), p99: quantile(0.99), samples: count };
    },

  };
}

interface OpenProbe {
  collector: string;
  probe: Probe;
  /** The reads it lets the native loop do; without them every tick of its series runs in JS. */
  captured: CapturedReads | undefined;
  offset: number;
  width: number;
  live: boolean;
}

/** What the native loop reads for the series being sampled, rebuilt whenever series or probes change. */
interface CapturePlan {
  structure: number;
  /** One group of files per series, in this order. */
  series: Series[];
  files: StatFile[];
  args: CaptureArgs;
  /** Per file: the probe's CapturedFile.dueMs (files read every tick have none). */
  dueOf: Array<(() => number) | null>;
  /** The data ring as a Buffer, to copy a tick's bytes into each file's own buffer without allocating. */
  ring: Buffer;
}

/** With at most this many ticks to decode, the loop sleeps until the JS tick's slot itself (one JS wake instead of two). */
const SLEEP_TO_LIVE_TICKS = 16;

/** The longest stretch the native loop runs before the sampling thread looks again (rows reach batches at least this often). */
const CAPTURE_STRETCH_MS = 250;

interface Series {
  id: number;
  target: Target;
  probes: OpenProbe[];
  width: number;
  rows: number;
  total: number;
  capacity: number;
  values: Float64Array;
  timestampMs: Float64Array;
  monotonicMs: Float64Array;
  buffer: MetricBuffer;
  lastSampleMs: number;
  batchStartMs: number;
  state: "sampling" | "finishing" | "ended";
  deadlineMs: number;
  /** A pending watch whose probes are not open yet: every path here must exist before they are opened again. */
  waitFor: readonly string[] | null;
  /** Why the last attempt to open could not, for the note when the container never showed up. */
  waitReason: string;
}

/** Builds the sampling core over the given collectors. */
export function defineSamplingCore(options: CoreOptions) {
  const { collectors, intervalMs, batchMs, epochOriginMs, emit } = options;
  const series = new Map<number, Series>();
  /** The series still being sampled (not ended), in one array the hot loop walks without allocating. */
  const sampling: Series[] = [];
  const histogram = defineIntervalHistogram(intervalMs);
  const saidUnavailable = new Set<string>();
  let anchorMs = NaN;
  let lastTickMs = NaN;
  /** The schedule slot the next full tick belongs to; ticks before it only look for pending cgroups. */
  let slotMs = -Infinity;
  /** Bumped whenever the set of series or of live probes changes: the capture plan is rebuilt then. */
  let structure = 0;
  let plan: CapturePlan | null = null;
  let nativeTicks = 0;

  const warn = (message: string): void => emit({ type: "warning", message });

  const allocate = (s: Series, capacity: number): void => {
    const values = new Float64Array(capacity * s.width);
    const timestampMs = new Float64Array(capacity);
    const monotonicMs = new Float64Array(capacity);
    values.set(s.values.subarray(0, s.rows * s.width));
    timestampMs.set(s.timestampMs.subarray(0, s.rows));
    monotonicMs.set(s.monotonicMs.subarray(0, s.rows));
    Object.assign(s, { capacity, values, timestampMs, monotonicMs });
    s.buffer = { values, base: 0, monotonicMs: 0 };
  };

  const closeProbe = (p: OpenProbe): void => {
    p.live = false;
    structure++;
    try {
      p.probe.close();
    } catch {
      // close must not throw; a collector that does is ignored here
    }
  };

  /**
   * Takes one row; false when no probe of the series is live any more. With
   * `readMs`, the native loop read the probes' files at `now` (their bytes
   * are in the files' buffers) and the probes decode them instead of reading.
   * A row in which no probe measured anything is not kept: after a
   * container's cgroup has gone, a probe that notices only at its slower
   * tier (blkio, ~100 ms) would otherwise add rows of nothing.
   */
  const sample = (s: Series, now: number, readMs?: number): boolean => {
    if (s.rows === s.capacity) allocate(s, s.capacity * 2);
    const rowBase = s.rows * s.width;
    s.values.fill(NaN, rowBase, rowBase + s.width);
    const buffer = s.buffer;
    buffer.monotonicMs = now - epochOriginMs;
    let wrote = false;
    let live = false;
    for (const p of s.probes) {
      if (!p.live) continue;
      buffer.base = rowBase + p.offset;
      try {
        if (readMs === undefined ? p.probe.read(buffer) : p.captured!.decode(buffer, readMs)) {
          wrote = live = true;
          continue;
        }
      } catch (e) {
        warn(`${pluginError(p.collector, "read", e).message} (${s.target.operator || s.target.containerId.slice(0, 12)}); its metrics stop here`);
      }
      s.values.fill(NaN, buffer.base, buffer.base + p.width);
      closeProbe(p);
    }
    s.lastSampleMs = now;
    if (wrote) {
      wrote = false;
      for (let i = rowBase; i < rowBase + s.width; i++) {
        if (s.values[i] === s.values[i]) {
          wrote = true; // not NaN: something was measured
          break;
        }
      }
    }
    if (wrote) {
      if (s.rows === 0) s.batchStartMs = now;
      s.timestampMs[s.rows] = now;
      s.monotonicMs[s.rows] = now - epochOriginMs;
      s.rows++;
      s.total++;
    }
    return live;
  };

  const flush = (s: Series): void => {
    if (s.rows === 0) return;
    const rows = s.rows;
    s.rows = 0;
    emit({
      type: "batch",
      id: s.id,
      rows,
      timestampMs: s.timestampMs.slice(0, rows),
      monotonicMs: s.monotonicMs.slice(0, rows),
      values: s.values.slice(0, rows * s.width),
    });
  };

  const sourcesOf = (s: Series): string[] => s.probes.map((p) => `${p.collector}: ${p.probe.source}`);

  const end = (s: Series): void => {
    flush(s);
    for (const p of s.probes) if (p.live) closeProbe(p);
    s.state = "ended";
    structure++;
    const at = sampling.indexOf(s);
    if (at >= 0) sampling.splice(at, 1);
  };

  const finalize = (s: Series): void => {
    const sources = sourcesOf(s);
    end(s);
    series.delete(s.id);
    emit({ type: "finished", id: s.id, sources, samples: s.total });
  };

  /**
   * Opens every collector on the series' target, filling its probes and
   * buffers; returns the columns. With `pending`, a collector that says which
   * paths would make it available (`waitFor`) puts the whole series on hold
   * instead: what opened is closed again and nothing is said.
   */
  const open = (s: Series, pending: boolean): MetricColumn[] => {
    const probes: OpenProbe[] = [];
    const columns: MetricColumn[] = [];
    const keys = new Set<string>();
    const unavailable: Array<[string, string]> = [];
    let waitFor: string[] | null = null;
    for (const collector of collectors) {
      let opened: ReturnType<Collector["open"]>;
      try {
        opened = collector.open(s.target);
      } catch (e) {
        warn(pluginError(collector.name, "open", e).message);
        continue;
      }
      if (isUnavailable(opened)) {
        if (pending && opened.waitFor && opened.waitFor.length > 0) {
          (waitFor ??= []).push(...opened.waitFor);
          s.waitReason = `${collector.name}: ${opened.unavailable}`;
        } else unavailable.push([collector.name, opened.unavailable]);
        continue;
      }
      probes.push({ collector: collector.name, probe: opened, captured: capturedReadsOf(opened), offset: columns.length, width: opened.metrics.length, live: true });
      for (const spec of opened.metrics) {
        let key = columnKey(spec);
        if (keys.has(key)) key = `${key}@${collector.name}`;
        keys.add(key);
        columns.push({ ...spec, key, collector: collector.name });
      }
    }
    if (waitFor !== null) {
      for (const p of probes) closeProbe(p);
      s.waitFor = waitFor;
      return [];
    }
    for (const [name, why] of unavailable) {
      if (!saidUnavailable.has(name)) warn(`${name}: not available: ${why}`);
      saidUnavailable.add(name);
    }
    s.waitFor = null;
    s.probes = probes;
    structure++;
    s.width = columns.length;
    allocate(s, Math.ceil(batchMs / intervalMs) + 8);
    return columns;
  };

  /** A pending series' next try: opens its probes and takes the first row at once; false while it still waits. */
  const openNow = (s: Series, now: number): boolean => {
    const columns = open(s, true);
    if (s.waitFor !== null) return false;
    emit({ type: "opened", id: s.id, columns, sources: sourcesOf(s) });
    if (s.probes.length === 0 || !sample(s, now)) {
      if (s.state === "finishing") finalize(s);
      else end(s);
    }
    return true;
  };

  /** The plan for the series now sampled; null when one of them needs JS on every tick. */
  const capturePlan = (flag: Int32Array): CapturePlan | null => {
    if (plan && plan.structure === structure) return plan;
    plan = null;
    if (sampling.length === 0) return null;
    const files: StatFile[] = [];
    const dueOf: CapturePlan["dueOf"] = [];
    const every: number[] = [];
    const groupEnds: number[] = [];
    for (const s of sampling) {
      if (s.waitFor !== null || s.state === "ended") return null;
      for (const p of s.probes) {
        if (!p.live) continue;
        if (!p.captured) return null;
        for (const c of p.captured.files) {
          files.push(c.file);
          every.push(c.everyMs);
          dueOf.push(c.everyMs > 0 ? c.dueMs : null);
        }
      }
      groupEnds.push(files.length);
    }
    const offsets: number[] = [];
    let recordBytes = 0;
    for (const file of files) {
      offsets.push(recordBytes);
      recordBytes += (file.buf.length + 7) & ~7;
    }
    const capacity = Math.min(1024, Math.ceil(CAPTURE_STRETCH_MS / intervalMs) + 2);
    const ring = Buffer.alloc(Math.max(1, capacity * recordBytes));
    // bun:ffi passes no pointer for an empty array: a series whose probes need no files still gets one slot
    const array = <T extends Int32Array | Float64Array>(make: new (n: number) => T, values: ArrayLike<number>): T => {
      const out = new make(Math.max(1, values.length));
      out.set(values);
      return out;
    };
    plan = {
      structure,
      series: [...sampling],
      files,
      dueOf,
      ring,
      args: {
        flag,
        sched: new Float64Array(7),
        nfiles: files.length,
        fds: array(Int32Array, files.map((f) => f.fd)),
        caps: array(Int32Array, files.map((f) => f.buf.length)),
        offsets: array(Int32Array, offsets),
        every: array(Float64Array, every),
        due: array(Float64Array, every),
        ngroups: groupEnds.length,
        groupEnds: array(Int32Array, groupEnds),
        times: new Float64Array(capacity * (groupEnds.length + 1)),
        lengths: new Int32Array(Math.max(1, capacity * files.length)),
        data: ring,
        recordBytes,
        capacity,
      },
    };
    return plan;
  };

  /** Samples every series from the ticks the native loop recorded, in order, as tick() would have. */
  const decode = (current: CapturePlan, ticks: number, toEpoch: number, monotonicToNow: number): void => {
    const a = current.args;
    const groups = a.ngroups;
    for (let k = 0; k < ticks; k++) {
      const row = k * (groups + 1);
      const now = a.times[row]! + toEpoch;
      if (!Number.isNaN(lastTickMs)) histogram.add(now - lastTickMs);
      lastTickMs = now;
      nativeTicks++;
      let f = 0;
      for (let g = 0; g < groups; g++) {
        const s = current.series[g]!;
        const groupEnd = a.groupEnds[g]!;
        if (s.state === "ended") {
          f = groupEnd;
          continue;
        }
        for (; f < groupEnd; f++) {
          const file = current.files[f]!;
          const length = a.lengths[k * a.nfiles + f]!;
          file.length = length;
          if (length > 0) {
            const start = k * a.recordBytes + a.offsets[f]!;
            current.ring.copy(file.buf, 0, start, start + length);
          }
        }
        if (now - s.lastSampleMs < intervalMs / 2) continue;
        const live = sample(s, now, a.times[row + 1 + g]! + monotonicToNow);
        if (!live || (s.state === "finishing" && now >= s.deadlineMs)) {
          if (s.state === "finishing") finalize(s);
          else end(s);
        } else if (s.rows > 0 && now - s.batchStartMs >= batchMs) flush(s);
      }
    }
  };

  /** True when every path a pending series waits for exists (a stat each, nothing allocated). */
  const arrived = (paths: readonly string[]): boolean => {
    for (let i = 0; i < paths.length; i++) if (!existsSync(paths[i]!)) return false;
    return true;
  };


  return {
    /**
     * Opens every collector's probe on the target and takes the first sample
     * at once. A pending watch (the container is created, not yet started)
     * whose collectors wait for paths to appear opens nothing yet: each tick
     * looks for those paths, and the probes open, all together so the series
     * keeps one shape, the moment they are there ("opened" event).
     */
    watch(id: number, target: Target, pending = false): SeriesShape {
      const s: Series = {
        id, target, probes: [], width: 0, rows: 0, total: 0, capacity: 0,
        values: new Float64Array(0), timestampMs: new Float64Array(0), monotonicMs: new Float64Array(0),
        buffer: { values: new Float64Array(0), base: 0, monotonicMs: 0 },
        lastSampleMs: -Infinity, batchStartMs: 0, state: "sampling", deadlineMs: Infinity, waitFor: null, waitReason: "",
      };
      const now = epochNow();
      if (sampling.length === 0) {
        anchorMs = now;
        lastTickMs = NaN;
      }
      series.set(id, s);
      sampling.push(s);
      structure++;
      const columns = open(s, pending);
      if (s.waitFor === null && (s.probes.length === 0 || !sample(s, now))) end(s);
      return { columns, sources: sourcesOf(s) };
    },

    /** The container's pid, once known: probes that need it read it from the target; a pending series tries to open now. */
    setPid(id: number, pid: number): void {
      const s = series.get(id);
      if (!s) return;
      s.target.pid = pid;
      if (s.waitFor !== null && s.state !== "ended") openNow(s, epochNow());
    },

    /** Keeps sampling until every probe reports its target gone or `graceMs` passes, then flushes and reports "finished". */
    finish(id: number, graceMs: number): void {
      const s = series.get(id);
      if (!s) return;
      if (s.state === "ended") return finalize(s);
      if (s.waitFor !== null && !openNow(s, epochNow())) {
        // the container ended without its cgroup ever being seen: a failed start, or gone between two ticks
        warn(`${s.target.operator || s.target.containerId.slice(0, 12)}: never saw its cgroup, so it has no samples (${s.waitReason})`);
        return finalize(s);
      }
      if ((s.state as Series["state"]) === "ended") return finalize(s); // opened just now and already gone
      s.state = "finishing";
      s.deadlineMs = epochNow() + graceMs;
    },

    /** Flushes what was taken and closes the probes now. */
    stop(id: number): void {
      const s = series.get(id);
      if (s) finalize(s);
    },

    /** Epoch ms when the next tick is due; Infinity when nothing is being sampled. */
    nextDue(): number {
      if (sampling.length === 0) return Infinity;
      const now = epochNow();
      // drift-free: slots sit on anchor + k·interval; a late tick skips the slots it missed
      slotMs = now < anchorMs ? anchorMs : anchorMs + intervalMs * (Math.floor((now - anchorMs) / intervalMs) + 1);
      // a pending cgroup is looked for every millisecond: it may live only a few (runc create to delete)
      for (let i = 0; i < sampling.length; i++) if (sampling[i]!.waitFor !== null) return Math.min(slotMs, now + PENDING_POLL_MS);
      return slotMs;
    },

    /** One sample of every watched series (skipping one sampled in the last half interval), batching and finishing. */
    tick(): void {
      const now = epochNow();
      if (now < slotMs) {
        // between slots: only the pending series, outside the schedule and its interval figures
        for (let i = sampling.length - 1; i >= 0; i--) {
          const s = sampling[i]!;
          if (s.waitFor !== null && arrived(s.waitFor)) openNow(s, now);
        }
        return;
      }
      if (!Number.isNaN(lastTickMs)) histogram.add(now - lastTickMs);
      lastTickMs = now;
      for (let i = sampling.length - 1; i >= 0; i--) {
        const s = sampling[i]!; // backwards: ending a series removes it from the list
        if (s.waitFor !== null) {
          if (arrived(s.waitFor)) openNow(s, now);
          continue;
        }
        const live = now - s.lastSampleMs >= intervalMs / 2 ? sample(s, now) : true;
        if (!live || (s.state === "finishing" && now >= s.deadlineMs)) {
          if (s.state === "finishing") finalize(s);
          else end(s);
        } else if (s.rows > 0 && now - s.batchStartMs >= batchMs) flush(s);
      }
      if (sampling.length === 0) lastTickMs = NaN;
    },

    /**
     * Lets the native loop take the ticks until the next one that needs JS
     * (a probe's slower tier, a finishing series' deadline, at most every
     * 250 ms), then decodes what it read, tick by tick, as `tick()` would
     * have sampled it. Returns the LOOP reason it handed back for (on
     * LOOP.live the caller ticks at `liveSlotMs()`, now or soon), or 0 when the loop cannot take the
     * next tick: a series waits for its cgroup, a probe offers no captured
     * reads, or the next tick is the one JS is due for.
     */
    capture(loop: SamplingLoop, flag: Int32Array): number {
      const current = capturePlan(flag);
      if (!current) return 0;
      const now = epochNow();
      let liveMs = now + CAPTURE_STRETCH_MS;
      for (let i = 0; i < current.series.length; i++) {
        const s = current.series[i]!;
        if (s.state === "finishing" && s.deadlineMs < liveMs) liveMs = s.deadlineMs;
        for (let j = 0; j < s.probes.length; j++) {
          const p = s.probes[j]!;
          if (!p.live) continue;
          const due = p.captured!.liveDueMs() + epochOriginMs;
          if (due < liveMs) liveMs = due;
        }
      }
      // the live tick is the first slot at or after that time; the loop takes the slots before it
      const next = now < anchorMs ? anchorMs : anchorMs + intervalMs * (Math.floor((now - anchorMs) / intervalMs) + 1);
      const liveSlot = liveMs <= anchorMs ? anchorMs : anchorMs + intervalMs * Math.ceil((liveMs - anchorMs) / intervalMs - 1e-9);
      if (liveSlot <= next + intervalMs / 2) return 0;
      // CLOCK_MONOTONIC ms = epoch ms - toEpoch
      const toEpoch = performance.timeOrigin + loop.monotonicToNow;
      const a = current.args;
      a.sched[SCHED.anchor] = anchorMs - toEpoch;
      a.sched[SCHED.interval] = intervalMs;
      a.sched[SCHED.live] = liveSlot - toEpoch;
      a.sched[SCHED.ticks] = 0;
      a.sched[SCHED.origin] = epochOriginMs - toEpoch;
      a.sched[SCHED.early] = DUE_EARLY_MS;
      a.sched[SCHED.sleepToLive] = SLEEP_TO_LIVE_TICKS;
      for (let f = 0; f < a.nfiles; f++) {
        const due = current.dueOf[f];
        a.due[f] = due ? due() + epochOriginMs - toEpoch : -Infinity;
      }
      const reason = loop.capture(a);
      decode(current, a.sched[SCHED.ticks]!, toEpoch, loop.monotonicToNow);
      if (reason === LOOP.live) slotMs = liveSlot;
      return reason;
    },

    /** The slot of the JS tick the last capture() handed back for (epoch ms). */
    liveSlotMs(): number {
      return slotMs;
    },

    intervals(): IntervalReport {
      return { ...histogram.report(), nativeTicks };
    },

    /** Stops every series and releases the collectors' host-wide resources. */
    close(): void {
      for (const s of [...series.values()]) finalize(s);
      for (const collector of collectors) {
        try {
          collector.dispose?.();
        } catch (e) {
          warn(pluginError(collector.name, "dispose", e).message);
        }
      }
    },
  };
}

/** The sampling core as its drivers hold it. */
export type SamplingCore = ReturnType<typeof defineSamplingCore>;
