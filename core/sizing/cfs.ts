/**
 * CPU limits that do not throttle: the kernel's CFS bandwidth control
 * replayed on a recorded CPU usage trace.
 *
 * Under a CPU limit of L cores the kernel gives a cgroup L × 100 ms of CPU
 * time per 100 ms period (cpu.cfs_quota_us / cpu.cfs_period_us); once that
 * runtime is spent its threads wait for the next period (a throttled period,
 * counted in cpu.stat nr_throttled), and the work they wanted to do then is
 * done later. The simulator takes the work the operator did per period when
 * it ran without a limit, gives each period the quota, carries what did not
 * fit into the next periods, and counts:
 *
 *   periods    as the kernel's nr_periods: every period with work (or carried
 *              work), plus the one idle period after each busy stretch (the
 *              kernel's period timer runs once more before it stops), but
 *              none after the trace ends (the container is gone by then)
 *   throttled  periods whose work (new + carried) exceeded the quota by more
 *              than the usage counter's granularity (`toleranceMs`)
 *   stretch    how much later the last work would finish: the work still
 *              carried when the trace ends, done at the quota per period,
 *              as a share of the run time
 *
 * Where the kernel's periods fall against the trace is not known, so every
 * figure is taken at `phases` evenly spaced alignments; the prediction is the
 * mean over them, with the least and the most.
 * Pure functions, no I/O: docs/sizing.md states the model and its limits.
 */
import { round3 } from "../contracts/units.ts";
import type { ThrottlePrediction } from "../contracts/types.ts";

/** One container's CPU usage: epoch ms of each reading and the cumulative counter, ns. */
export interface UsageTrace {
  timesMs: ArrayLike<number>;
  usageNs: ArrayLike<number>;
}

/** The kernel's default CFS period (cpu.cfs_period_us 100000). */
export const CFS_PERIOD_MS = 100;
/** Alignments of the kernel's periods against the trace that are simulated. */
export const CFS_PHASES = 10;

export interface CfsOptions {
  periodMs?: number;
  phases?: number;
  /** Work beyond the quota by up to this much is not throttling: the counter's own granularity, ms of CPU per period. */
  toleranceMs?: number;
  /** Most CPU the operator can use in a period, ms (its parallelism): carried work runs no faster. Default: the most it used in any period. */
  capacityMs?: number;
}

/** What a limit would do to the traced work. */
/** A prediction at one limit: the shape the evidence records (core/contracts/types.ts). */
export type CfsPrediction = ThrottlePrediction;

/**
 * CPU time done in each period, ms: the counter interpolated at the period
 * boundaries, which lie at `phaseMs` + k × period from the trace's first
 * reading (the first period begins at or before it).
 */
export function periodDemands(trace: UsageTrace, periodMs: number, phaseMs: number): Float64Array {
  const n = trace.timesMs.length;
  if (n < 2) return new Float64Array(0);
  const t0 = trace.timesMs[0]!;
  const tEnd = trace.timesMs[n - 1]!;
  const first = t0 + phaseMs - periodMs;
  const count = Math.max(1, Math.ceil((tEnd - first) / periodMs));
  const demands = new Float64Array(count);
  let i = 0;
  const usageAt = (t: number): number => {
    if (t <= t0) return trace.usageNs[0]!;
    if (t >= tEnd) return trace.usageNs[n - 1]!;
    while (i + 1 < n && trace.timesMs[i + 1]! < t) i++;
    const ta = trace.timesMs[i]!;
    const tb = trace.timesMs[i + 1]!;
    const ua = trace.usageNs[i]!;
    const ub = trace.usageNs[i + 1]!;
    return tb > ta ? ua + ((ub - ua) * (t - ta)) / (tb - ta) : ub;
  };
  let previous = usageAt(first);
  for (let k = 0; k < count; k++) {
    const next = usageAt(first + (k + 1) * periodMs);
    demands[k] = Math.max(0, next - previous) / 1e6;
    previous = next;
  }
  return demands;
}

/** The kernel's accounting of one alignment: periods, throttled periods, and the extra time, ms. */
export function simulateCfs(demandsMs: ArrayLike<number>, quotaMs: number, options: { periodMs?: number; toleranceMs?: number; capacityMs?: number } = {}) {
  const periodMs = options.periodMs ?? CFS_PERIOD_MS;
  const tolerance = options.toleranceMs ?? 0;
  const rate = Math.min(quotaMs, options.capacityMs ?? Infinity);
  let backlog = 0;
  let periods = 0;
  let throttled = 0;
  let wasBusy = false;
  const period = (work: number) => {
    const available = backlog + work;
    if (available <= 0) {
      if (wasBusy) periods++; // the timer's last run before it stops
      wasBusy = false;
      backlog = 0;
      return;
    }
    periods++;
    wasBusy = true;
    if (available > quotaMs + tolerance) throttled++;
    backlog = available - Math.min(available, rate);
  };
  for (let k = 0; k < demandsMs.length; k++) period(demandsMs[k]!);
  // Work still carried when the trace ends is done in later periods: that is the stretch.
  let extraMs = 0;
  if (backlog > tolerance && rate > 0) {
    extraMs = (backlog / rate) * periodMs;
    while (backlog > tolerance) period(0);
  }
  // No idle period after the end: the container, and its cpu.stat, are gone before the kernel's timer would count it.
  return { periods, throttled, extraMs };
}

/** Per-period work of each trace at each alignment, computed once for every limit tried. */
export function defineCfsModel(traces: readonly UsageTrace[], options: CfsOptions = {}) {
  const periodMs = options.periodMs ?? CFS_PERIOD_MS;
  const phases = Math.max(1, options.phases ?? CFS_PHASES);
  const usable = traces.filter((t) => t.timesMs.length >= 2);
  const demands = usable.map((trace) => Array.from({ length: phases }, (_, p) => periodDemands(trace, periodMs, (p * periodMs) / phases)));
  const runMs = usable.reduce((sum, t) => sum + (t.timesMs[t.timesMs.length - 1]! - t.timesMs[0]!), 0);
  let most = 0;
  for (const perPhase of demands) for (const d of perPhase) for (const x of d) most = Math.max(most, x);
  const capacityMs = options.capacityMs ?? most;
  const toleranceMs = options.toleranceMs ?? 0;
  return {
    periodMs,
    phases,
    toleranceMs,
    /** The most CPU used in one period, cores: no limit at or above it (plus the tolerance) can throttle. */
    peakCores: most / periodMs,
    /** What a limit of `cpu` cores would do. */
    predict(cpu: number): CfsPrediction {
      const quotaMs = cpu * periodMs;
      const shares: number[] = [];
      let periods = 0;
      let throttled = 0;
      let extraMs = 0;
      for (let p = 0; p < phases; p++) {
        let phasePeriods = 0;
        let phaseThrottled = 0;
        for (const perPhase of demands) {
          const run = simulateCfs(perPhase[p]!, quotaMs, { periodMs, toleranceMs, capacityMs });
          phasePeriods += run.periods;
          phaseThrottled += run.throttled;
          extraMs += run.extraMs;
        }
        periods += phasePeriods;
        throttled += phaseThrottled;
        shares.push(phasePeriods === 0 ? 0 : (phaseThrottled / phasePeriods) * 100);
      }
      const mean = shares.reduce((a, b) => a + b, 0) / phases;
      return {
        cpu,
        periods: round3(periods / phases),
        throttledPeriods: round3(throttled / phases),
        throttledPercent: round3(mean),
        minPercent: round3(Math.min(...shares)),
        maxPercent: round3(Math.max(...shares)),
        stretchPercent: runMs > 0 ? round3((extraMs / phases / runMs) * 100) : 0,
      };
    },
  };
}

/** The throttle-aware limit and the predictions behind it. */
export interface CpuLimitChoice {
  /** The smallest multiple of `step`, not below the request, whose predicted throttled share is at most the target. */
  limit: number;
  atLimit: CfsPrediction;
  atRequest: CfsPrediction;
  /** Predictions at multiples of `step` up to the first that never throttles (at most `curvePoints`, default 40, evenly spread). */
  curve: CfsPrediction[];
}

/**
 * The smallest limit, in `step` units and not below `request`, whose
 * predicted throttled share (mean over alignments) is at most `targetPercent`.
 * More quota never throttles more, so the search is a bisection.
 */
export function chooseCpuLimit(model: ReturnType<typeof defineCfsModel>, options: { request: number; step: number; targetPercent: number; curvePoints?: number }): CpuLimitChoice {
  const { request, step, targetPercent } = options;
  const units = (x: number) => Math.max(1, Math.ceil(Number((x / step).toFixed(9))));
  const at = (n: number) => Number((n * step).toFixed(3));
  // A limit at the busiest period's work plus the tolerance cannot throttle.
  const never = units(model.peakCores + model.toleranceMs / model.periodMs);
  let lo = units(request);
  let hi = Math.max(lo, never);
  const meets = (n: number) => model.predict(at(n)).throttledPercent <= targetPercent;
  // Float noise at the edge: make sure the upper end really meets the target.
  while (!meets(hi) && hi < never + 1000) hi++;
  if (meets(lo)) hi = lo;
  else {
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (meets(mid)) hi = mid;
      else lo = mid;
    }
  }
  const limit = at(hi);
  const points = Math.max(2, options.curvePoints ?? 40);
  const stride = Math.max(1, Math.ceil(never / points));
  const curve: CfsPrediction[] = [];
  for (let n = stride; n <= never; n += stride) curve.push(model.predict(at(n)));
  if (curve.at(-1)?.cpu !== at(never)) curve.push(model.predict(at(never)));
  return { limit, atLimit: model.predict(limit), atRequest: model.predict(request), curve };
}
