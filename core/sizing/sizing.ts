/**
 * What an operator should request, from what it used, and why.
 *
 * Two policies, same shape (see docs/sizing.md):
 *
 *   cpost (default, the original's rule)
 *     cpu    = max(1, ceil((max 1 s CPU% − error) / 100))
 *     memory = max(256, ceil((max working set MB + 100) / 256) · 256)
 *   percentile (Kubernetes VPA / KRR style; default p95 and 15 %)
 *     cpu    = max(1, ceil((p95 1 s CPU% − error) / 100))
 *     memory = max(256, ceil(max working set MB · (1 + headroom) / 256) · 256)
 *
 * CPU is sized on one-second windows of the cumulative usage counter
 * (cpu.usage_ns), the span docker stats and the original CPOST measured
 * over, not on the collector's 100 ms cpu.percent: the kernel advances the
 * counter in scheduler ticks, and over 100 ms one tick of one busy thread
 * reads as 104 %. The counter's step is measured from the readings, and the
 * error it allows is taken off before rounding up, so measurement error
 * never buys an extra core. Memory is sized on the working set (usage less
 * inactive page cache, as docker stats and the kubelet): page cache written
 * once is given back before any OOM kill.
 *
 * An operator killed by the OOM killer, or throttled under a CPU limit, used
 * less than it needed: its recommendation is marked a lower bound and says
 * what to retry with.
 */
import { f3, round3 } from "../contracts/units.ts";
import { CpostError } from "../contracts/errors.ts";
import type { MetricStats, OperatorResult, Recommendation, SizingEvidence } from "../contracts/types.ts";
import { CFS_PERIOD_MS, chooseCpuLimit, defineCfsModel, type UsageTrace } from "./cfs.ts";
import { fitGpuMemory } from "./gpu-partitions.ts";
import { slowerSamplerViews, type ResourceTrace } from "./slower-samplers.ts";

/** How recommendations are made. `cpuPercentile` 100 is the maximum. */
export interface SizingPolicy {
  kind: "cpost" | "percentile";
  /** Percentile of the cpu.percent rows sized on (100 = the maximum). */
  cpuPercentile: number;
  /** Added on top of the memory peak, percent of it. */
  memoryHeadroomPct: number;
  /** Added on top of the memory peak, MB (CPOST's 100). */
  memoryBufferMb: number;
  minCpu: number;
  /** Cores are requested in multiples of this (1, or 0.1 / 0.25 ... for fractional cores). */
  cpuStep: number;
  minMemoryMb: number;
  /** Memory is requested in multiples of this, MB. */
  memoryStepMb: number;
  /** CPU limits: the highest predicted share of throttled CFS periods, percent (absent: DEFAULT_THROTTLE_TARGET_PCT). */
  throttleTargetPct?: number;
}

/**
 * `--throttle-target` by default: at most 1 % of the 100 ms CFS periods
 * throttled, one period in ten seconds of run, far below the 25 % at which
 * the Kubernetes monitoring mixin's CPUThrottlingHigh alert fires.
 */
export const DEFAULT_THROTTLE_TARGET_PCT = 1;

/** The original CPOST rule. */
export const CPOST_POLICY: SizingPolicy = Object.freeze({
  kind: "cpost",
  cpuPercentile: 100,
  memoryHeadroomPct: 0,
  memoryBufferMb: 100,
  minCpu: 1,
  cpuStep: 1,
  minMemoryMb: 256,
  memoryStepMb: 256,
});

/** `--policy percentile` without further flags: KRR's simple strategy (p95 CPU, peak memory + 15 %). */
export const PERCENTILE_POLICY: SizingPolicy = Object.freeze({ ...CPOST_POLICY, kind: "percentile", cpuPercentile: 95, memoryHeadroomPct: 15, memoryBufferMb: 0 });

export { round3 };

/** The smallest multiple of `step` not below `x` (tolerant of float noise such as 256.00000000003). */
function ceilStep(x: number, step: number): number {
  return Number((Math.ceil(Number((x / step).toFixed(9))) * step).toFixed(3));
}

/** The policy as the user writes it: `cpost`, `p95+15%`. */
export function policyName(policy: SizingPolicy): string {
  if (policy.kind === "cpost") return "cpost";
  return policy.memoryHeadroomPct === 0 ? `p${policy.cpuPercentile}` : `p${policy.cpuPercentile}+${policy.memoryHeadroomPct}%`;
}

/** The policy's formulas with its numbers filled in, as docs/sizing.md and --help state them. */
export function policyRule(policy: SizingPolicy): string {
  const stat = policy.cpuPercentile >= 100 ? "max" : `p${policy.cpuPercentile}`;
  const step = (x: string, s: number) => (s === 1 ? `ceil(${x})` : `ceil(${x} / ${s}) * ${s}`);
  const grown = policy.memoryHeadroomPct === 0 ? "max working set MB" : `max working set MB * ${round3(1 + policy.memoryHeadroomPct / 100)}`;
  const memory = policy.memoryBufferMb === 0 ? grown : `(${grown} + ${policy.memoryBufferMb})`;
  const memoryRounded = `ceil(${memory} / ${policy.memoryStepMb}) * ${policy.memoryStepMb}`;
  return `cpu = max(${policy.minCpu}, ${step(`(${stat} 1 s cpu% - error) / 100`, policy.cpuStep)}); memory = max(${policy.minMemoryMb}, ${memoryRounded})`;
}

/** What a recommendation is computed from: the figures the policy picked (max or percentile). */
export interface SizingBasis {
  /** CPU percent the rule is applied to (100 = one core), measurement error already taken off. */
  cpuPercent: number;
  /** Memory peak to size on, MB (bytes / 1e6); headroom and buffer are added here. */
  memoryMb: number;
  /** GPUs the operator used, when GPU metrics were collected. */
  gpu?: number;
  samples: number;
  oomKilled?: boolean;
}

/** The policy's rule on already-chosen figures (no evidence, no lower-bound analysis). */
export function recommend(basis: SizingBasis, policy: SizingPolicy = CPOST_POLICY): Recommendation {
  const cpuPercent = Number.isFinite(basis.cpuPercent) ? Math.max(0, basis.cpuPercent) : 0;
  const memoryMb = Number.isFinite(basis.memoryMb) ? Math.max(0, basis.memoryMb) : 0;
  const notes: string[] = [];
  if (basis.samples === 0) notes.push("no samples: minimum request");
  if (basis.oomKilled) notes.push("lower bound: OOM killed, it needs more memory than it was allowed");
  if (policy.kind === "percentile") notes.push(`cpu from p${policy.cpuPercentile}, memory from the peak + ${policy.memoryHeadroomPct}% headroom`);
  return {
    // The original gave "cpu: 0" for an idle operator, which no scheduler accepts.
    cpu: Math.max(policy.minCpu, ceilStep(cpuPercent / 100, policy.cpuStep)),
    memory: memoryRequest(memoryMb, policy),
    ...(basis.gpu === undefined ? {} : { gpu: basis.gpu }),
    policy: policyName(policy),
    notes,
  };
}

function memoryRequest(memoryMb: number, policy: SizingPolicy): number {
  const grown = memoryMb * (1 + policy.memoryHeadroomPct / 100) + policy.memoryBufferMb;
  return Math.max(policy.minMemoryMb, ceilStep(grown, policy.memoryStepMb));
}

// ---------------------------------------------------------------- evidence over an operator's readings

/** The p-th percentile (nearest rank) of `values[0..count)`; sorts that range in place. 0 when empty. */
export function percentile(values: Float64Array, count: number, p: number): number {
  if (count === 0) return 0;
  const sorted = values.subarray(0, count).sort();
  // p·count/100 in that order, and float noise forgiven: p95 of 20 rows is the 19th, not the 20th.
  const rank = Math.min(count, Math.max(1, Math.ceil(Number(((p * count) / 100).toFixed(9)))));
  return sorted[rank - 1]!;
}

/** Everything but the readings that sizing looks at. */
export interface SizingFacts {
  samples: number;
  gpu?: number;
  result: OperatorResult;
  stats: readonly MetricStats[];
}

/** One reading of one container as sizing needs it; NaN = not measured in that reading. */
export interface SizingReading {
  /** Epoch ms. */
  timestampMs: number;
  /** Cumulative CPU time, ns (cpu.usage_ns). */
  usageNs: number;
  /** The collector's short-window CPU %, used only where cpu.usage_ns was not recorded. */
  cpuPercent: number;
  /** memory.usage_bytes: page cache included. */
  memoryBytes: number;
  /** memory.working_set_bytes: usage less inactive page cache (read every ~10 ms). */
  workingSetBytes: number;
}

/** Sizes one operator from the readings of its containers; fed by SummaryBuilder (live and replay alike). */
export interface SizingSeries {
  /** A new container's readings follow: no window spans two containers. */
  startSeries(): void;
  /** One reading, in time order within a series; `reading` may be reused by the caller. */
  reading(reading: SizingReading): void;
  /** The recommendation with its evidence. Call once, after the last reading. */
  recommend(facts: SizingFacts): Recommendation;
}

/** Where sizing runs: the host's CPUs, to say when an operator used all of them. */
export interface SizingHost {
  cpus?: number;
  /**
   * Readings closer than this (ms) are kept as one in the trace the CFS
   * simulation and the slower samplers' views read (the counter's latest
   * value, the largest need), so its memory stays bounded at fine
   * intervals; default TRACE_RESOLUTION_MS. A long monitor session asks
   * for a coarser one.
   */
  traceResolutionMs?: number;
}

/** The trace's default resolution: 5 ms keeps 100 ms spikes and CFS periods sharp at a fifth of 1 kHz's memory. */
export const TRACE_RESOLUTION_MS = 5;

/** CPU is sized over windows of this length: what docker stats and the original CPOST measured over. */
export const CPU_WINDOW_MS = 1000;
/** The usage counter's steps and the readings' intervals are kept to this resolution (ns) to find their percentiles without keeping each one. */
const STEP_RESOLUTION_NS = 1000;
/**
 * A thread's CPU time reaches the counter at scheduler ticks and at context
 * switches, so a busy core's time can be up to one tick behind. Where
 * readings come faster than ticks, the counter's larger changes are whole
 * ticks (measured here: 4.0 ms at 1 ms readings, HZ=250), while a thread
 * preempted often adds smaller amounts; so the step is the 90th percentile
 * of the positive changes, the tick or (at coarser readings) above it,
 * capped at the longest tick Linux has.
 */
const STEP_PERCENTILE = 0.9;
/** The longest tick Linux has (HZ=100): the counter never lags a busy core by more. */
const MAX_TICK_NS = 10e6;
/** An operator that used at least this share of the host's CPUs may have wanted more than the host had. */
const HOST_BOUND_SHARE = 0.9;

/**
 * The sampler stamps a reading just before it reads the files; a sampler
 * preempted in between (a loaded host, a VM) reads the counter later than
 * its stamp says. Such delays are as likely while it sleeps, so the spread
 * of the intervals between readings measures them: the 99th percentile of
 * how far an interval strays from the median one bounds how late a reading
 * was (measured: ~2 ms at 10 ms on this 2-core host, ~12 ms in the
 * emulated v2 VM, where a 1 s window of one thread read 101.2 %).
 */
const DELAY_PERCENTILE = 0.99;

/** Counts of whole numbers: percentiles without keeping every value. */
function defineHistogram(counts = new Map<number, number>()) {
  let total = 0;
  for (const n of counts.values()) total += n;
  return {
    add(value: number) {
      counts.set(value, (counts.get(value) ?? 0) + 1);
      total++;
    },
    /** Nearest rank; 0 when empty. */
    percentile(share: number): number {
      if (total === 0) return 0;
      const rank = Math.max(1, Math.ceil(total * share));
      let seen = 0;
      for (const [value, n] of [...counts].sort((a, b) => a[0] - b[0])) {
        seen += n;
        if (seen >= rank) return value;
      }
      return 0;
    },
    /** The values' distances from `centre`, as a histogram. */
    deviations(centre: number) {
      const spread = new Map<number, number>();
      for (const [value, n] of counts) spread.set(Math.abs(value - centre), (spread.get(Math.abs(value - centre)) ?? 0) + n);
      return defineHistogram(spread);
    },
  };
}

/** A growable list of numbers (the window rates, kept only when a percentile below 100 needs them). */
function defineValues() {
  let values = new Float64Array(1024);
  let count = 0;
  return {
    push(x: number) {
      if (count === values.length) {
        const grown = new Float64Array(values.length * 2);
        grown.set(values);
        values = grown;
      }
      values[count++] = x;
    },
    get count() {
      return count;
    },
    at: (i: number) => values[i]!,
    /** Replaces the last value (there must be one). */
    setLast(x: number) {
      values[count - 1] = x;
    },
    percentile: (p: number) => percentile(values.slice(0, count), count, p),
    slice: () => values.slice(0, count),
  };
}

/**
 * The readings a window may still reach back to: a list whose indices stay
 * absolute while what lies before `dropBefore` is forgotten, so it holds
 * about one window's readings however long the series.
 */
function defineWindowList() {
  let values = new Float64Array(1024);
  let base = 0; // absolute index of values[0]
  let start = 0; // first index still kept
  let end = 0;
  return {
    push(x: number) {
      if (end - base === values.length) {
        const live = values.subarray(start - base, end - base);
        if (live.length * 2 > values.length) {
          const grown = new Float64Array(values.length * 2);
          grown.set(live);
          values = grown;
        } else values.copyWithin(0, start - base, end - base);
        base = start;
      }
      values[end - base] = x;
      end++;
    },
    get count() {
      return end;
    },
    at: (index: number) => values[index - base]!,
    dropBefore(index: number) {
      start = Math.max(start, Math.min(index, end));
    },
  };
}

/**
 * CPU % over windows of CPU_WINDOW_MS of the usage counter: for each reading,
 * the window back to the newest reading at least CPU_WINDOW_MS older; a
 * series shorter than that is one window from its first reading to its last.
 * Also the counter's step: see STEP_PERCENTILE.
 */
function defineCpuWindows(keepRates: boolean) {
  const times = defineWindowList();
  const usages = defineWindowList();
  let seriesStart = 0;
  let tail = 0;
  let seriesHasWindow = false;
  const max = { rate: -1, spanMs: 0, atMs: NaN };
  const rates = keepRates ? defineValues() : undefined;
  const spans = keepRates ? defineValues() : undefined;
  let windows = 0;
  let readings = 0;
  const steps = defineHistogram(); // the counter's positive changes, STEP_RESOLUTION_NS units
  const intervals = defineHistogram(); // time between consecutive readings, STEP_RESOLUTION_NS units
  let lastUsage = NaN;
  let lastMs = NaN;

  const take = (rate: number, spanMs: number, atMs: number) => {
    windows++;
    if (rate > max.rate) Object.assign(max, { rate, spanMs, atMs });
    rates?.push(rate);
    spans?.push(spanMs);
  };
  /** Ends a series that never spanned a window: its whole span is its one window. */
  const closeSeries = () => {
    const last = times.count - 1;
    if (!seriesHasWindow && last > seriesStart) {
      const spanMs = times.at(last) - times.at(seriesStart);
      if (spanMs > 0) take(((usages.at(last) - usages.at(seriesStart)) / (spanMs * 1e6)) * 100, spanMs, times.at(last));
    }
  };

  return {
    startSeries() {
      closeSeries();
      seriesStart = tail = times.count;
      times.dropBefore(tail);
      usages.dropBefore(tail);
      seriesHasWindow = false;
      lastUsage = NaN;
      lastMs = NaN;
    },
    reading(timestampMs: number, usageNs: number) {
      if (usageNs !== usageNs) return;
      readings++;
      if (usageNs > lastUsage) steps.add(Math.round((usageNs - lastUsage) / STEP_RESOLUTION_NS));
      if (timestampMs > lastMs) intervals.add(Math.round(((timestampMs - lastMs) * 1e6) / STEP_RESOLUTION_NS));
      lastUsage = usageNs;
      lastMs = timestampMs;
      times.push(timestampMs);
      usages.push(usageNs);
      const now = times.count - 1;
      while (tail + 1 < now && timestampMs - times.at(tail + 1) >= CPU_WINDOW_MS) tail++;
      const spanMs = timestampMs - times.at(tail);
      if (tail < now && spanMs >= CPU_WINDOW_MS) {
        seriesHasWindow = true;
        take(((usageNs - usages.at(tail)) / (spanMs * 1e6)) * 100, spanMs, timestampMs);
      }
      // Only the current window is needed from here on: memory stays flat however long the run.
      times.dropBefore(tail);
      usages.dropBefore(tail);
    },
    finish() {
      closeSeries();
      seriesStart = tail = times.count;
      seriesHasWindow = true;
      const stepNs = Math.min(steps.percentile(STEP_PERCENTILE) * STEP_RESOLUTION_NS, MAX_TICK_NS);
      // How late a reading can be: how far an interval strays from the usual one (its median).
      const usual = intervals.percentile(0.5);
      const delayNs = intervals.deviations(usual).percentile(DELAY_PERCENTILE) * STEP_RESOLUTION_NS;
      return { max, rates, spans, windows, readings, stepNs, delayNs };
    },
  };
}

/** Sizing of one operator under `policy`. */
export function defineSizingSeries(policy: SizingPolicy = CPOST_POLICY, host: SizingHost = {}): SizingSeries {
  const keepCpu = policy.cpuPercentile < 100;
  const cpu = defineCpuWindows(keepCpu);
  // The short-window figure: sized on only where no usage counter was recorded (old recordings).
  const shortWindow = { readings: 0, max: 0, atMs: NaN, values: keepCpu ? defineValues() : undefined };
  const memory = { readings: 0, needMax: 0, needAtMs: NaN, usageMax: 0, workingSetSeen: false, reclaimable: 0 };
  // Every container's readings, for the CFS simulation and the slower samplers' views.
  const traces: Array<{ times: ReturnType<typeof defineValues>; usage: ReturnType<typeof defineValues>; need: ReturnType<typeof defineValues> }> = [];
  const resolutionMs = host.traceResolutionMs ?? TRACE_RESOLUTION_MS;
  let bucketStartMs = -Infinity;
  return {
    startSeries() {
      cpu.startSeries();
      memory.reclaimable = 0;
      traces.push({ times: defineValues(), usage: defineValues(), need: defineValues() });
      bucketStartMs = -Infinity;
    },
    reading({ timestampMs, usageNs, cpuPercent, memoryBytes, workingSetBytes }) {
      cpu.reading(timestampMs, usageNs);
      if (cpuPercent === cpuPercent) {
        if (shortWindow.readings === 0 || cpuPercent > shortWindow.max) Object.assign(shortWindow, { max: cpuPercent, atMs: timestampMs });
        shortWindow.readings++;
        shortWindow.values?.push(cpuPercent);
      }
      // The working set is read every ~10 ms, usage every sample: between two working-set
      // readings the page cache is taken as it last was.
      let need = NaN;
      if (workingSetBytes === workingSetBytes) {
        memory.workingSetSeen = true;
        need = workingSetBytes;
        if (memoryBytes === memoryBytes) memory.reclaimable = Math.max(0, memoryBytes - workingSetBytes);
      } else if (memoryBytes === memoryBytes) need = Math.max(0, memoryBytes - memory.reclaimable);
      if (memoryBytes === memoryBytes && memoryBytes > memory.usageMax) memory.usageMax = memoryBytes;
      if (need === need) {
        if (memory.readings === 0 || need > memory.needMax) Object.assign(memory, { needMax: need, needAtMs: timestampMs });
        memory.readings++;
      }
      const trace = traces.at(-1);
      if (trace && (usageNs === usageNs || need === need)) {
        if (timestampMs - bucketStartMs >= resolutionMs || trace.times.count === 0) {
          bucketStartMs = timestampMs;
          trace.times.push(timestampMs);
          trace.usage.push(usageNs);
          trace.need.push(need);
        } else {
          // the same bucket: the counter as it is now, the larger need
          const last = trace.times.count - 1;
          trace.times.setLast(timestampMs);
          if (usageNs === usageNs) trace.usage.setLast(usageNs);
          const kept = trace.need.at(last);
          if (need === need && !(kept >= need)) trace.need.setLast(need);
        }
      }
    },
    recommend({ samples, gpu, result, stats }) {
      const figure = cpuFigure(cpu.finish(), shortWindow, policy);
      const memoryValue = round3(memory.needMax / 1e6);
      const usagePeakMb = round3(memory.usageMax / 1e6);
      const recommendation = recommend({ cpuPercent: figure.sizedPercent, memoryMb: memoryValue, gpu, samples }, policy);
      const statistic = keepCpu ? `p${policy.cpuPercentile}` : "max";
      const evidence: SizingEvidence = {
        rule: policyRule(policy),
        cpu: {
          metric: figure.metric,
          statistic,
          value: figure.value,
          errorPercent: figure.errorPercent,
          sizedPercent: figure.sizedPercent,
          windowMs: figure.windowMs,
          ...(figure.stepMs === undefined ? {} : { stepMs: figure.stepMs, delayMs: figure.delayMs }),
          windows: figure.windows,
          rows: figure.readings,
          ...(figure.peakAtMs === figure.peakAtMs ? { peakAtMs: figure.peakAtMs } : {}),
          ...(figure.metric === "cpu.usage_ns" && shortWindow.readings > 0 ? { shortWindowMaxPercent: round3(shortWindow.max) } : {}),
        },
        memory: {
          metric: memory.workingSetSeen ? "memory.working_set_bytes" : "memory.usage_bytes",
          statistic: "max",
          valueMb: memoryValue,
          rows: memory.readings,
          ...(memory.readings > 0 ? { peakAtMs: memory.needAtMs } : {}),
          headroomPct: policy.memoryHeadroomPct,
          bufferMb: policy.memoryBufferMb,
          ...(memory.workingSetSeen ? { usagePeakMb } : {}),
        },
      };
      const notes: string[] = [];
      const cpus = host.cpus;
      if (cpus !== undefined && cpus > 0 && figure.metric === "cpu.usage_ns" && figure.value + figure.errorPercent >= HOST_BOUND_SHARE * cpus * 100) {
        notes.push(`used all ${cpus} CPU${cpus === 1 ? "" : "s"} of this host (${f3(figure.value)} % over ${f3(figure.windowMs / 1000)} s): it may use more where there are more; size on a larger host to know`);
      }
      // Say so where page cache would have bought more memory than the operator needs.
      const pageCacheMb = round3(usagePeakMb - memoryValue);
      if (memory.workingSetSeen && memoryRequest(usagePeakMb, policy) > recommendation.memory) {
        evidence.memory.pageCacheMb = pageCacheMb;
        notes.push(`page cache ${f3(pageCacheMb)} MB not counted as need: usage peaked at ${f3(usagePeakMb)} MB, the working set at ${f3(memoryValue)} MB (the kernel reclaims such cache before an OOM kill)`);
      }
      const { notes: limitNotes, lowerBound } = limitFindings(result, stats, evidence, policy);
      recommendation.notes.unshift(...limitNotes, ...notes);
      if (lowerBound.memory || lowerBound.cpu) evidence.lowerBound = lowerBound;
      if (figure.metric === "cpu.usage_ns") {
        const recorded = traces.map((t) => ({ timesMs: t.times.slice(), usageNs: t.usage.slice(), needBytes: t.need.slice() }));
        throttleAwareLimit(recommendation, evidence, recorded, figure, policy, lowerBound.cpu);
        samplerViews(evidence, recorded, memoryValue, policy, samples);
      }
      gpuMemory(recommendation, evidence, stats);
      recommendation.evidence = evidence;
      return recommendation;
    },
  };
}


/**
 * The CPU figure and its error bound. The usage counter lags the CPU really
 * used by less than one of its steps per busy core, and a reading may come
 * later than its stamp (DELAY_PERCENTILE), at each end of a window,
 * so a window of S ms is off by at most cores × step / S (the step: see
 * STEP_PERCENTILE; cores: the figure rounded to whole cores).
 */
function cpuFigure(
  windows: ReturnType<ReturnType<typeof defineCpuWindows>["finish"]>,
  shortWindow: { readings: number; max: number; atMs: number; values: ReturnType<typeof defineValues> | undefined },
  policy: SizingPolicy,
) {
  if (windows.windows === 0) {
    // No usage counter (or one reading): the collector's own short-window figure, with no error known.
    const value = round3(Math.max(0, shortWindow.values ? shortWindow.values.percentile(policy.cpuPercentile) : shortWindow.max));
    return { metric: "cpu.percent", value, errorPercent: 0, sizedPercent: value, windowMs: 0, stepMs: undefined, delayMs: undefined, windows: shortWindow.readings, readings: shortWindow.readings, peakAtMs: shortWindow.atMs };
  }
  let value = windows.max.rate;
  let spanMs = windows.max.spanMs;
  if (windows.rates && windows.spans) {
    value = windows.rates.percentile(policy.cpuPercentile);
    for (let i = 0; i < windows.spans.count; i++) {
      if (windows.rates.at(i) === value) {
        spanMs = windows.spans.at(i);
        break;
      }
    }
  }
  value = Math.max(0, value);
  const cores = Math.max(1, Math.round(value / 100));
  const errorPercent = round3(((cores * (windows.stepNs + windows.delayNs)) / (spanMs * 1e6)) * 100);
  const shown = round3(value);
  return {
    metric: "cpu.usage_ns",
    value: shown,
    errorPercent,
    sizedPercent: round3(Math.max(0, shown - errorPercent)),
    windowMs: round3(spanMs),
    stepMs: round3(windows.stepNs / 1e6),
    delayMs: round3(windows.delayNs / 1e6),
    windows: windows.windows,
    readings: windows.readings,
    peakAtMs: windows.max.atMs,
  };
}

const statMax = (stats: readonly MetricStats[], name: string) => stats.find((s) => s.name === name && s.count > 0)?.max ?? 0;
const mb = (x: number) => `${round3(x)} MB`;

/**
 * OOM kills and CPU throttling: the evidence that the operator was held
 * below what it would have used, and what to retry with.
 */
function limitFindings(result: OperatorResult, stats: readonly MetricStats[], evidence: SizingEvidence, policy: SizingPolicy) {
  const notes: string[] = [];
  const lowerBound = { memory: false, cpu: false };
  const limits = result.limits;
  if (limits && (limits.cpu !== undefined || limits.memoryMb !== undefined)) evidence.limits = limits;
  const attempts = result.attempts ?? [];
  if (attempts.length > 0) {
    evidence.attempts = attempts;
    const counts = new Map<string, number>();
    for (const a of attempts.filter((a) => a.oomKilled)) {
      const where = a.limits.memoryMb === undefined ? "without a limit" : `at ${mb(a.limits.memoryMb)}`;
      counts.set(where, (counts.get(where) ?? 0) + 1);
    }
    const killed = [...counts].map(([where, n]) => (n === 1 ? where : `${where} (${n} times)`));
    const now = limits?.memoryMb === undefined ? "without a memory limit" : `with ${mb(limits.memoryMb)}`;
    if (killed.length > 0) notes.push(`OOM killed ${killed.join(", then ")}; ${result.status === "succeeded" ? "succeeded" : `last try ${result.status}`} ${now}`);
  }
  // The cgroup's own count stands in when the engine's flag is missing; across retries only the last container counts.
  const oomKills = Math.max(result.oomKilled ? 1 : 0, attempts.length === 0 ? statMax(stats, "memory.oom_kills") : 0);
  if (oomKills > 0) {
    evidence.oomKills = oomKills;
    lowerBound.memory = true;
    const limit = limits?.memoryMb;
    notes.push(
      limit === undefined
        ? "lower bound: OOM killed without a container memory limit (the host ran out of memory); size on a host with more memory"
        : `lower bound: OOM killed under a memory limit of ${mb(limit)}; retry with more (--retry-oom doubles it: next ${mb(limit * 2)})`,
    );
  }
  const nrPeriods = statMax(stats, "cpu.nr_periods");
  if (nrPeriods > 0) {
    const nrThrottled = statMax(stats, "cpu.nr_throttled");
    evidence.measuredThrottling = { periods: nrPeriods, throttledPeriods: nrThrottled, throttledPercent: round3((nrThrottled / nrPeriods) * 100) };
  }
  const periods = statMax(stats, "cpu.nr_throttled");
  if (periods > 0) {
    const seconds = round3(statMax(stats, "cpu.throttled_ns") / 1e9);
    evidence.throttled = { periods, seconds };
    lowerBound.cpu = true;
    const limit = limits?.cpu === undefined ? "a CPU limit" : `a CPU limit of ${limits.cpu} core${limits.cpu === 1 ? "" : "s"}`;
    notes.push(`lower bound: CPU throttled ${periods} time${periods === 1 ? "" : "s"} (${seconds} s) under ${limit}; retry with a higher cpu request, or without --enforce-requests`);
  }
  return { notes, lowerBound };
}

// ---------------------------------------------------------------- beyond the requests

/** The longest tick taken as the CFS simulation's tolerance, per busy core, ms. */
const TOLERANCE_TICK_MS = 4;

/**
 * The CPU limit: the smallest multiple of the cpu step, not below the
 * request, whose predicted share of throttled CFS periods (cfs.ts, on the
 * recorded usage) is at most the policy's throttle target. The counter's
 * granularity (its step, at most TOLERANCE_TICK_MS, per busy core) is the tolerance.
 */
function throttleAwareLimit(rec: Recommendation, evidence: SizingEvidence, traces: ResourceTrace[], figure: { stepMs?: number }, policy: SizingPolicy, capped: boolean) {
  const usage: UsageTrace[] = traces.map(withoutGaps("usageNs")).filter((t) => t.timesMs.length >= 2);
  if (usage.length === 0) return;
  // The counter lags a busy core by less than one tick; at coarse readings the step found is only an upper
  // bound of the tick, so at most a 4 ms tick (HZ=250, the common distribution kernels') is taken per core.
  const grainMs = Math.min(figure.stepMs ?? 0, TOLERANCE_TICK_MS);
  const probe = defineCfsModel(usage);
  const toleranceMs = round3(Math.max(1, Math.round(probe.peakCores)) * grainMs);
  const model = defineCfsModel(usage, { toleranceMs });
  const targetPercent = policy.throttleTargetPct ?? DEFAULT_THROTTLE_TARGET_PCT;
  const choice = chooseCpuLimit(model, { request: rec.cpu, step: policy.cpuStep, targetPercent });
  rec.cpuLimit = choice.limit;
  evidence.cpuLimit = {
    rule: `limit = smallest multiple of ${policy.cpuStep} (not below the request) whose simulated CFS throttled share (${CFS_PERIOD_MS} ms periods, mean over ${model.phases} alignments) <= ${targetPercent} %`,
    periodMs: model.periodMs,
    phases: model.phases,
    targetPercent,
    toleranceMs,
    peakPeriodCores: round3(model.peakCores),
    limit: choice.limit,
    atLimit: choice.atLimit,
    atRequest: choice.atRequest,
    curve: choice.curve,
    ...(capped ? { lowerBound: true } : {}),
  };
}

/** The slower samplers' views of the same readings, and what the policy would have asked from each. */
function samplerViews(evidence: SizingEvidence, traces: ResourceTrace[], fineMemoryMb: number, policy: SizingPolicy, samples: number) {
  const statistic = (rates: number[]) => (policy.cpuPercentile >= 100 ? Math.max(...rates) : percentile(Float64Array.from(rates), rates.length, policy.cpuPercentile));
  const views = slowerSamplerViews(traces, fineMemoryMb, statistic);
  evidence.samplerViews = views.map((view) => {
    const asked = recommend({ cpuPercent: view.cpuPercent, memoryMb: view.memoryMb, samples }, policy);
    return { ...view, requests: { cpu: asked.cpu, memory: asked.memory } };
  });
}

/** GPU memory from the per-process NVML figure (the device's used memory where that is missing), with the partitions it fits. */
function gpuMemory(rec: Recommendation, evidence: SizingEvidence, stats: readonly MetricStats[]) {
  const peakOf = (name: string) => {
    const found = stats.filter((s) => s.name === name && s.count > 0);
    return found.length === 0 ? undefined : Math.max(...found.map((s) => s.max));
  };
  const process = peakOf("gpu.process_memory_bytes");
  const metric = process !== undefined ? "gpu.process_memory_bytes" : "gpu.memory_used_bytes";
  const fit = fitGpuMemory(process ?? peakOf("gpu.memory_used_bytes"), metric);
  if (!fit) return;
  rec.gpuMemoryGb = fit.memoryGb;
  evidence.gpu = fit;
}

/** A trace with only the readings that hold `key`. */
const withoutGaps = (key: "usageNs" | "needBytes") => (t: ResourceTrace): UsageTrace => {
  const timesMs: number[] = [];
  const usageNs: number[] = [];
  for (let i = 0; i < t.timesMs.length; i++) {
    const v = t[key][i]!;
    if (v === v) {
      timesMs.push(t.timesMs[i]!);
      usageNs.push(v);
    }
  }
  return { timesMs, usageNs };
};

// ---------------------------------------------------------------- command-line policy

/** Parses `--policy`: `cpost` (default), `percentile` (p95, 15 % headroom) or `p<percentile>[+<headroom>%]` such as `p95+20%`. */
export function parseSizingPolicy(text: string): SizingPolicy {
  if (text === "cpost" || text === "max") return CPOST_POLICY;
  if (text === "percentile") return PERCENTILE_POLICY;
  const match = /^p(\d{1,2}(?:\.\d+)?|100)(?:\+(\d+(?:\.\d+)?)%?)?$/.exec(text);
  if (!match || Number(match[1]) <= 0) {
    throw new CpostError("usage", `unknown sizing policy "${text}"`, {
      hint: "use `cpost` (CPOST's max rule), `percentile` (p95 CPU, peak memory + 15%) or a percentile with memory headroom such as `p95` or `p99+20%`",
    });
  }
  return { ...PERCENTILE_POLICY, cpuPercentile: Number(match[1]), memoryHeadroomPct: Number(match[2] ?? 0) };
}

/** The sizing flags as typed (`--policy`, `--cpu-percentile`, ...); absent ones are undefined. */
export interface PolicyFlags {
  policy?: string;
  cpuPercentile?: string;
  memoryHeadroom?: string;
  minCpu?: string;
  cpuStep?: string;
  minMemory?: string;
  memoryStep?: string;
  throttleTarget?: string;
}

/** Builds the policy from the sizing flags; `--cpu-percentile` or `--memory-headroom` alone choose the percentile policy. */
export function policyFromFlags(flags: PolicyFlags): SizingPolicy {
  const tuned = flags.cpuPercentile !== undefined || flags.memoryHeadroom !== undefined;
  if (tuned && (flags.policy === "cpost" || flags.policy === "max")) {
    throw new CpostError("usage", "--cpu-percentile and --memory-headroom belong to the percentile policy, not --policy cpost", { hint: "use --policy percentile, or drop them" });
  }
  const policy: SizingPolicy = { ...(flags.policy !== undefined ? parseSizingPolicy(flags.policy) : tuned ? PERCENTILE_POLICY : CPOST_POLICY) };
  if (flags.cpuPercentile !== undefined) policy.cpuPercentile = number("--cpu-percentile", flags.cpuPercentile, { min: 0, max: 100, above: true, hint: "a percentile such as 95 or 99.9" });
  if (flags.memoryHeadroom !== undefined) policy.memoryHeadroomPct = number("--memory-headroom", flags.memoryHeadroom.replace(/%$/, ""), { min: 0, max: 1000, hint: "a percentage such as 15%" });
  if (flags.minCpu !== undefined) policy.minCpu = number("--min-cpu", flags.minCpu, { min: 0, max: 1e6, hint: "cores, such as 1 or 0.5" });
  if (flags.cpuStep !== undefined) policy.cpuStep = cpuStep(flags.cpuStep);
  if (flags.minMemory !== undefined) policy.minMemoryMb = number("--min-memory", flags.minMemory, { min: 0, max: 1e9, hint: "MB, such as 256" });
  if (flags.memoryStep !== undefined) policy.memoryStepMb = number("--memory-step", flags.memoryStep, { min: 0, max: 1e9, above: true, hint: "MB, such as 256 or 64" });
  if (flags.throttleTarget !== undefined) policy.throttleTargetPct = number("--throttle-target", flags.throttleTarget.replace(/%$/, ""), { min: 0, max: 100, hint: "a percentage of CFS periods such as 1% or 5%" });
  return policy;
}

/** `--cpu-step`: cores (1, 0.5) or millicores (100m). */
function cpuStep(text: string): number {
  const milli = /^(\d+)m$/.exec(text);
  const step = milli ? Number(milli[1]) / 1000 : number("--cpu-step", text, { min: 0, max: 1e6, above: true, hint: "cores such as 1 or 0.1, or millicores such as 100m" });
  if (!(step >= 0.001)) throw new CpostError("usage", `--cpu-step ${text}: below one millicore`, { hint: "cores such as 1 or 0.1, or millicores such as 100m" });
  return step;
}

function number(flag: string, text: string, range: { min: number; max: number; above?: boolean; hint: string }): number {
  const value = /^\d+(\.\d+)?$/.test(text.trim()) ? Number(text) : NaN;
  const ok = value <= range.max && (range.above ? value > range.min : value >= range.min);
  if (!ok) throw new CpostError("usage", `${flag} ${text}: not a number ${range.above ? "above" : "from"} ${range.min}${range.above ? "" : ` to ${range.max}`}`, { hint: `give ${range.hint}` });
  return value;
}

/** The sizing flags' help, shared by `cpost run`, `cpost size` and `cpost replay`. */
export const POLICY_ARGS = {
  policy: {
    type: "string",
    description:
      "sizing policy: cpost (default: cpu = ceil((max cpu% - error)/100), memory = ceil((max MB + 100)/256)*256), percentile (cpu = ceil((p95 cpu% - error)/100), memory = ceil(max MB * 1.15/256)*256), or p<N>[+<H>%]; cpu% over 1 s windows of the usage counter less its measured error, MB the working set's peak (docs/sizing.md)",
    valueHint: "cpost",
  },
  "cpu-percentile": { type: "string", description: "percentile policy: the percentile of the 1 s CPU windows sized on (default 95)", valueHint: "95" },
  "memory-headroom": { type: "string", description: "percentile policy: headroom on the memory peak (default 15%)", valueHint: "15%" },
  "min-cpu": { type: "string", description: "smallest cpu request (default 1)", valueHint: "1" },
  "cpu-step": { type: "string", description: "cpu requests are multiples of this: 1 (default), 0.1 or 100m for millicores", valueHint: "1" },
  "min-memory": { type: "string", description: "smallest memory request, MB (default 256)", valueHint: "256" },
  "memory-step": { type: "string", description: "memory requests are multiples of this, MB (default 256, as the original)", valueHint: "256" },
  "throttle-target": { type: "string", description: `cpu limits: the highest share of 100 ms CFS periods a limit may throttle, simulated on the recorded usage (default ${DEFAULT_THROTTLE_TARGET_PCT}%)`, valueHint: `${DEFAULT_THROTTLE_TARGET_PCT}%` },
} as const;


/** The PolicyFlags among parsed `--flag value` pairs (keys with `-`). */
export function policyFlagsOf(flags: Record<string, string | true | undefined>): PolicyFlags {
  const str = (name: string) => (typeof flags[name] === "string" ? (flags[name] as string) : undefined);
  return {
    policy: str("policy"),
    cpuPercentile: str("cpu-percentile"),
    memoryHeadroom: str("memory-headroom"),
    minCpu: str("min-cpu"),
    cpuStep: str("cpu-step"),
    minMemory: str("min-memory"),
    memoryStep: str("memory-step"),
    throttleTarget: str("throttle-target"),
  };
}
