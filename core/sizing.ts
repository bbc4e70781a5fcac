/**
 * What an operator should request, from what it used, and why.
 *
 * Two policies, same shape (see docs/sizing.md):
 *
 *   cpost (default, the original's rule)
 *     cpu    = max(1, ceil(max cpu% / 100))
 *     memory = ceil((max MB + 100) / 256) · 256
 *   percentile (Kubernetes VPA / KRR style; default p95 and 15 %)
 *     cpu    = max(1, ceil(pXX cpu% / 100))
 *     memory = max(256, ceil(max MB · (1 + headroom) / 256) · 256)
 *
 * cpu% is the `cpu.percent` column (100 = one core), MB is
 * `memory.usage_bytes` / 1e6, both over CPOST's rows (pairs of readings, as
 * the CSV has them) and as printed (three decimals). The minimum cpu, the
 * cpu step (1 core, or e.g. 0.1 for millicores), the memory step and the
 * minimum memory are the policy's too and can be changed.
 *
 * An operator killed by the OOM killer, or throttled under a CPU limit, used
 * less than it needed: its recommendation is marked a lower bound and says
 * what to retry with.
 */
import { CpostError } from "./errors.ts";
import type { MetricStats, OperatorResult, Recommendation, SizingEvidence } from "./types.ts";

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
}

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

/** Rounds to three decimals exactly as the table prints them: CPOST sized on the figure it showed. */
export function round3(x: number): number {
  return Number(x.toFixed(3));
}

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
  const grown = policy.memoryHeadroomPct === 0 ? "max MB" : `max MB * ${round3(1 + policy.memoryHeadroomPct / 100)}`;
  const memory = policy.memoryBufferMb === 0 ? grown : `(${grown} + ${policy.memoryBufferMb})`;
  const memoryRounded = `ceil(${memory} / ${policy.memoryStepMb}) * ${policy.memoryStepMb}`;
  return `cpu = max(${policy.minCpu}, ${step(`${stat} cpu% / 100`, policy.cpuStep)}); memory = max(${policy.minMemoryMb}, ${memoryRounded})`;
}

/** What a recommendation is computed from: the figures the policy picked (max or percentile). */
export interface SizingBasis {
  /** CPU percent to size on (100 = one core). */
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
  const grown = memoryMb * (1 + policy.memoryHeadroomPct / 100) + policy.memoryBufferMb;
  return {
    // The original gave "cpu: 0" for an idle operator, which no scheduler accepts.
    cpu: Math.max(policy.minCpu, ceilStep(cpuPercent / 100, policy.cpuStep)),
    memory: Math.max(policy.minMemoryMb, ceilStep(grown, policy.memoryStepMb)),
    ...(basis.gpu === undefined ? {} : { gpu: basis.gpu }),
    policy: policyName(policy),
    notes,
  };
}

// ---------------------------------------------------------------- evidence over an operator's rows

/** The p-th percentile (nearest rank) of `values[0..count)`; sorts that range in place. 0 when empty. */
export function percentile(values: Float64Array, count: number, p: number): number {
  if (count === 0) return 0;
  const sorted = values.subarray(0, count).sort();
  // p·count/100 in that order, and float noise forgiven: p95 of 20 rows is the 19th, not the 20th.
  const rank = Math.min(count, Math.max(1, Math.ceil(Number(((p * count) / 100).toFixed(9)))));
  return sorted[rank - 1]!;
}

/** Everything but the rows that sizing looks at. */
export interface SizingFacts {
  samples: number;
  gpu?: number;
  result: OperatorResult;
  stats: readonly MetricStats[];
}

/** Sizes one operator from its CPOST rows; fed by SummaryBuilder (live and replay alike). */
export interface SizingSeries {
  /** One row: its time (epoch ms), cpu percent and memory MB; NaN = not measured. */
  row(timestampMs: number, cpuPercent: number, memoryMb: number): void;
  /** The recommendation with its evidence. Call once, after the last row. */
  recommend(facts: SizingFacts): Recommendation;
}

/** A growable list of numbers (the cpu rows, kept only when a percentile below 100 needs them). */
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
    percentile: (p: number) => percentile(values, count, p),
  };
}

/** Sizing of one operator under `policy`. */
export function defineSizingSeries(policy: SizingPolicy = CPOST_POLICY): SizingSeries {
  const keepCpu = policy.cpuPercentile < 100;
  const cpuRows = defineValues();
  const cpu = { rows: 0, max: 0, atMs: NaN };
  const memory = { rows: 0, max: 0, atMs: NaN };
  return {
    row(timestampMs, cpuPercent, memoryMb) {
      if (cpuPercent === cpuPercent) {
        if (cpu.rows === 0 || cpuPercent > cpu.max) Object.assign(cpu, { max: cpuPercent, atMs: timestampMs });
        cpu.rows++;
        if (keepCpu) cpuRows.push(cpuPercent);
      }
      if (memoryMb === memoryMb) {
        if (memory.rows === 0 || memoryMb > memory.max) Object.assign(memory, { max: memoryMb, atMs: timestampMs });
        memory.rows++;
      }
    },
    recommend({ samples, gpu, result, stats }) {
      const cpuValue = round3(keepCpu ? cpuRows.percentile(policy.cpuPercentile) : Math.max(0, cpu.max));
      const memoryValue = round3(Math.max(0, memory.max));
      const recommendation = recommend({ cpuPercent: cpuValue, memoryMb: memoryValue, gpu, samples }, policy);
      const evidence: SizingEvidence = {
        rule: policyRule(policy),
        cpu: { metric: "cpu.percent", statistic: keepCpu ? `p${policy.cpuPercentile}` : "max", value: cpuValue, rows: cpu.rows, ...(cpu.rows > 0 ? { peakAtMs: cpu.atMs } : {}) },
        memory: { metric: "memory.usage_bytes", statistic: "max", valueMb: memoryValue, rows: memory.rows, ...(memory.rows > 0 ? { peakAtMs: memory.atMs } : {}), headroomPct: policy.memoryHeadroomPct, bufferMb: policy.memoryBufferMb },
      };
      const { notes, lowerBound } = limitFindings(result, stats, evidence, policy);
      recommendation.notes.unshift(...notes);
      if (lowerBound.memory || lowerBound.cpu) evidence.lowerBound = lowerBound;
      recommendation.evidence = evidence;
      return recommendation;
    },
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
  policy: { type: "string", description: "sizing policy: cpost (default: cpu = ceil(max cpu%/100), memory = ceil((max MB + 100)/256)*256), percentile (cpu = ceil(p95 cpu%/100), memory = ceil(max MB * 1.15/256)*256), or p<N>[+<H>%]", valueHint: "cpost" },
  "cpu-percentile": { type: "string", description: "percentile policy: the cpu.percent percentile sized on (default 95)", valueHint: "95" },
  "memory-headroom": { type: "string", description: "percentile policy: headroom on the memory peak (default 15%)", valueHint: "15%" },
  "min-cpu": { type: "string", description: "smallest cpu request (default 1)", valueHint: "1" },
  "cpu-step": { type: "string", description: "cpu requests are multiples of this: 1 (default), 0.1 or 100m for millicores", valueHint: "1" },
  "min-memory": { type: "string", description: "smallest memory request, MB (default 256)", valueHint: "256" },
  "memory-step": { type: "string", description: "memory requests are multiples of this, MB (default 256, as the original)", valueHint: "256" },
} as const;

/** Names of the value flags above, as parseFlags takes them. */
export const POLICY_FLAG_NAMES = Object.keys(POLICY_ARGS);

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
  };
}
