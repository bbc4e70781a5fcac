/**
 * What an operator should request, from what it used. The default is the
 * original CPOST rule: cpu = ceil(max cpu% / 100) cores, memory =
 * ceil((max MB + 100) / 256) · 256 MB. A percentile policy sizes on the p-th
 * percentile plus headroom instead of the single worst reading.
 */
import { CpostError } from "./errors.ts";
import type { Recommendation } from "./types.ts";

/** How recommendations are made: CPOST's max rule, or a percentile with headroom. */
export type SizingPolicy = { kind: "cpost" } | { kind: "percentile"; percentile: number; headroomPct: number };

/** The policy used when none is given. */
export const CPOST_POLICY: SizingPolicy = { kind: "cpost" };

/** Memory CPOST adds on top of the sized figure before rounding, MB. */
const MEMORY_BUFFER_MB = 100;
/** Memory requests are multiples of this, MB. */
const MEMORY_STEP_MB = 256;

/** What a recommendation is computed from: the figures the policy picked (max or percentile). */
export interface SizingBasis {
  /** CPU percent to size on (100 = one core). */
  cpuPercent: number;
  /** Memory to size on, MB (bytes / 1e6). */
  memoryMb: number;
  /** GPUs the operator used, when GPU metrics were collected. */
  gpu?: number;
  samples: number;
  oomKilled?: boolean;
}

/** Rounds to three decimals exactly as the table prints them: CPOST sized on the figure it showed. */
export function round3(x: number): number {
  return Number(x.toFixed(3));
}

/**
 * CPOST's rule on already-chosen figures. The original gave "cpu: 0" for an
 * idle operator, which no scheduler accepts, so cpu is at least 1.
 */
export function recommend(basis: SizingBasis, policy: SizingPolicy = CPOST_POLICY): Recommendation {
  const cpuPercent = Number.isFinite(basis.cpuPercent) ? Math.max(0, basis.cpuPercent) : 0;
  const memoryMb = Number.isFinite(basis.memoryMb) ? Math.max(0, basis.memoryMb) : 0;
  const notes: string[] = [];
  if (basis.samples === 0) notes.push("no samples: minimum request");
  if (basis.oomKilled) notes.push("lower bound: OOM killed, it needs more memory than it was allowed");
  if (policy.kind === "percentile") notes.push(`p${policy.percentile} + ${policy.headroomPct}% headroom`);
  return {
    cpu: Math.max(1, Math.ceil(cpuPercent / 100)),
    memory: Math.ceil((memoryMb + MEMORY_BUFFER_MB) / MEMORY_STEP_MB) * MEMORY_STEP_MB,
    ...(basis.gpu === undefined ? {} : { gpu: basis.gpu }),
    policy: policyName(policy),
    notes,
  };
}

/** The policy as the user writes it: `cpost`, `p95`, `p99+20%`. */
export function policyName(policy: SizingPolicy): string {
  if (policy.kind === "cpost") return "cpost";
  return policy.headroomPct === 0 ? `p${policy.percentile}` : `p${policy.percentile}+${policy.headroomPct}%`;
}

/** Parses `--policy`: `cpost` (default), or `p<percentile>[+<headroom>%]` such as `p95+20%`. */
export function parseSizingPolicy(text: string): SizingPolicy {
  if (text === "cpost" || text === "max") return CPOST_POLICY;
  const match = /^p(\d{1,2}(?:\.\d+)?|100)(?:\+(\d+(?:\.\d+)?)%?)?$/.exec(text);
  if (!match) {
    throw new CpostError("usage", `unknown sizing policy "${text}"`, {
      hint: "use `cpost` (CPOST's max rule) or a percentile with optional headroom such as `p95` or `p99+20%`",
    });
  }
  return { kind: "percentile", percentile: Number(match[1]), headroomPct: Number(match[2] ?? 0) };
}

/** The p-th percentile (nearest rank) of `values[0..count)`; sorts that range in place. 0 when empty. */
export function percentile(values: Float64Array, count: number, p: number): number {
  if (count === 0) return 0;
  const sorted = values.subarray(0, count).sort();
  const rank = Math.min(count, Math.max(1, Math.ceil((p / 100) * count)));
  return sorted[rank - 1]!;
}
