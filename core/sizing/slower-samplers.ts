/**
 * What a slower sampler would have seen of the same run: the fine recording
 * resampled on the schedule of the tools users compare cpost with, and the
 * request the same policy would have given from their figures.
 *
 *   docker stats / cAdvisor  every 1 s: CPU over the last second, memory (working set) at the reading
 *   CPOST                    every 200 ms (5 Hz): the same, over 200 ms
 *   below                    every 5 s
 *   Nextflow trace           its trace script's schedule: readings 1 s apart for the first 10,
 *                            5 s apart up to the 120th, then 30 s; %cpu is the task's whole-life
 *                            average; peak_rss sums the processes' VmHWM (their high-water mark),
 *                            so it keeps a peak of a process still alive at a reading
 *
 * A reading at time t sees the latest fine reading at or before t. Where the
 * first reading falls is chance, so each view is taken at `phases` evenly
 * spaced start offsets; its figure is the median over them, with the range.
 * Pure functions: the recording's readings in, figures out.
 */
import { round3 } from "../contracts/units.ts";
import type { SamplerView } from "../contracts/types.ts";

/** One container's readings: epoch ms, the cumulative CPU counter (ns) and the memory need (bytes); NaN = not read. */
export interface ResourceTrace {
  timesMs: ArrayLike<number>;
  usageNs: ArrayLike<number>;
  needBytes: ArrayLike<number>;
}

/** A slower sampler's schedule. */
export interface SamplerSchedule {
  name: string;
  /** What the figures mean, for the table's footnote and the docs. */
  describe: string;
  /** Reading times after the first, ms from the first; `until` the span of the run. */
  offsets(untilMs: number): number[];
  /** CPU over the whole life (Nextflow's %cpu) instead of between readings. */
  cpuWholeLife?: boolean;
  /** Memory is the high-water mark up to each reading (Nextflow's peak_rss, from VmHWM). */
  memoryHighWater?: boolean;
  /** Nominal interval, ms (the schedule's first). */
  intervalMs: number;
}

const every = (intervalMs: number) => (untilMs: number) => {
  const out: number[] = [];
  for (let t = 0; t <= untilMs; t += intervalMs) out.push(t);
  return out;
};

/** Nextflow's trace schedule (command-trace.txt, nxf_mem_watch): 1 s for the first 10 readings, 5 s to the 120th, then 30 s. */
function nextflowOffsets(untilMs: number): number[] {
  const out: number[] = [];
  let t = 0;
  for (let count = 0; t <= untilMs; count++) {
    out.push(t);
    t += count < 10 ? 1000 : count < 120 ? 5000 : 30000;
  }
  return out;
}

/** The peers' schedules, coarsest last. */
export const SLOWER_SAMPLERS: readonly SamplerSchedule[] = [
  { name: "CPOST 5 Hz", describe: "every 200 ms; CPU over 200 ms, memory at the reading", offsets: every(200), intervalMs: 200 },
  { name: "docker stats / cAdvisor 1 s", describe: "every 1 s; CPU over 1 s, working set at the reading", offsets: every(1000), intervalMs: 1000 },
  { name: "below 5 s", describe: "every 5 s; CPU over 5 s, memory at the reading", offsets: every(5000), intervalMs: 5000 },
  {
    name: "Nextflow trace",
    describe: "readings 1 s apart (10), then 5 s, then 30 s; %cpu the whole-life average, peak_rss the high-water mark at its readings",
    offsets: nextflowOffsets,
    cpuWholeLife: true,
    memoryHighWater: true,
    intervalMs: 1000,
  },
];

/** One sampler's figures at one start offset: its highest CPU %, its highest memory MB, and every CPU rate it saw. */
export interface SampledFigures {
  cpuPercent: number;
  memoryMb: number;
  rates: number[];
}

/** What `schedule` would have read from `trace` with its first reading `startMs` after the trace's first. */
export function resample(trace: ResourceTrace, schedule: SamplerSchedule, startMs: number): SampledFigures {
  const n = trace.timesMs.length;
  const rates: number[] = [];
  if (n === 0) return { cpuPercent: 0, memoryMb: 0, rates };
  const t0 = trace.timesMs[0]!;
  const tEnd = trace.timesMs[n - 1]!;
  // A sampler whose first reading comes after the container ended saw nothing of it.
  if (t0 + startMs > tEnd) return { cpuPercent: 0, memoryMb: 0, rates };
  const times = schedule.offsets(tEnd - t0 - startMs).map((o) => t0 + startMs + o);
  let i = 0;
  let usage = NaN;
  let need = NaN;
  let highWater = 0;
  let memory = 0;
  let lastUsage = NaN;
  let lastAt = NaN;
  const firstUsage = firstNumber(trace.usageNs);
  for (const at of times) {
    // Advance to the latest reading at or before `at`, keeping the newest value of each figure.
    while (i < n && trace.timesMs[i]! <= at) {
      const u = trace.usageNs[i]!;
      const m = trace.needBytes[i]!;
      if (u === u) usage = u;
      if (m === m) {
        need = m;
        if (m > highWater) highWater = m;
      }
      i++;
    }
    const seen = schedule.memoryHighWater ? highWater : need;
    if (seen === seen && seen > memory) memory = seen;
    if (!schedule.cpuWholeLife && usage === usage && lastUsage === lastUsage && at > lastAt) rates.push(((usage - lastUsage) / ((at - lastAt) * 1e6)) * 100);
    if (usage === usage) {
      lastUsage = usage;
      lastAt = at;
    }
  }
  const lastUsageOfRun = lastNumber(trace.usageNs);
  const lifeMs = tEnd - t0;
  // Too short for two readings (or a whole-life figure): CPU over the whole life, as docker stats' first figure would not even give.
  if ((schedule.cpuWholeLife || rates.length === 0) && lifeMs > 0 && firstUsage === firstUsage) rates.push(((lastUsageOfRun - firstUsage) / (lifeMs * 1e6)) * 100);
  return { cpuPercent: rates.length === 0 ? 0 : Math.max(...rates), memoryMb: memory / 1e6, rates };
}

function firstNumber(xs: ArrayLike<number>): number {
  for (let i = 0; i < xs.length; i++) if (xs[i]! === xs[i]!) return xs[i]!;
  return NaN;
}
function lastNumber(xs: ArrayLike<number>): number {
  for (let i = xs.length - 1; i >= 0; i--) if (xs[i]! === xs[i]!) return xs[i]!;
  return NaN;
}

/** Start offsets tried per sampler. */
export const VIEW_PHASES = 10;

export type { SamplerView };

/**
 * Every slower sampler's view of an operator's containers. `statistic` is
 * the policy's CPU statistic over a sampler's CPU figures (the maximum, or a
 * percentile); memory is the highest reading over the containers.
 */
export function slowerSamplerViews(traces: readonly ResourceTrace[], fineMemoryMb: number, statistic: (rates: number[]) => number = (r) => Math.max(0, ...r), phases = VIEW_PHASES): SamplerView[] {
  return SLOWER_SAMPLERS.map((schedule) => {
    const perPhase: SampledFigures[] = [];
    for (let p = 0; p < phases; p++) {
      const startMs = (p * schedule.intervalMs) / phases;
      const figures = traces.map((t) => resample(t, schedule, startMs));
      const rates = figures.flatMap((f) => f.rates);
      perPhase.push({ cpuPercent: rates.length === 0 ? 0 : Math.max(0, statistic(rates)), memoryMb: Math.max(0, ...figures.map((f) => f.memoryMb)), rates });
    }
    const cpu = perPhase.map((f) => f.cpuPercent);
    const memory = perPhase.map((f) => f.memoryMb);
    const saw = memory.filter((m) => m >= 0.9 * fineMemoryMb).length;
    return {
      sampler: schedule.name,
      intervalMs: schedule.intervalMs,
      cpuPercent: round3(median(cpu)),
      cpuPercentRange: [round3(Math.min(...cpu)), round3(Math.max(...cpu))],
      memoryMb: round3(median(memory)),
      memoryMbRange: [round3(Math.min(...memory)), round3(Math.max(...memory))],
      sawMemoryPeakPercent: round3((saw / phases) * 100),
    };
  });
}

/** The lower median (a figure one of the phases really saw). */
function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[(sorted.length - 1) >> 1] ?? 0;
}
