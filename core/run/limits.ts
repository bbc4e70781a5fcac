/**
 * Container limits for sizing runs. By default an operator runs unlimited,
 * as the original ran it; `--enforce-requests` turns its `requests` into
 * limits (cpu -> NanoCpus, memory MB -> Memory bytes, swap held to the same)
 * so that running out of them happens here, where it is seen, and not in
 * production. `--retry-oom` re-runs an OOM-killed operator with double the
 * memory, up to a cap, so the sizing ends with a peak it survived.
 */
import { totalmem } from "node:os";
import { CpostError } from "../contracts/errors.ts";
import { POLICY_ARGS, policyFlagsOf, policyFromFlags, type SizingPolicy } from "../sizing/sizing.ts";
import type { ContainerLimits, Operator, OperatorAttempt, OperatorResult } from "../contracts/types.ts";

/** How sizing shapes a run (RunOptions.sizing). */
export interface RunSizing {
  /** Sizing policy of the summaries (default: CPOST's rule). */
  policy?: SizingPolicy;
  /** Apply each operator's requests as its container's limits. */
  enforceRequests?: boolean;
  /** Re-run an OOM-killed operator under a memory limit with double the limit, up to this many MB. */
  retryOomCapMb?: number;
}

/** The limits an operator's first container gets. */
function limitsFor(op: Operator, sizing: RunSizing | undefined): ContainerLimits {
  if (!sizing?.enforceRequests) return {};
  const { cpu, memory } = op.requests;
  return { ...(cpu !== undefined && cpu > 0 ? { cpu } : {}), ...(memory !== undefined && memory > 0 ? { memoryMb: memory } : {}) };
}

/** The engine's fields for these limits (MB are 1e6 bytes, as every cpost figure). */
export function limitSpec(limits: ContainerLimits | undefined): { memoryBytes?: number; nanoCpus?: number } {
  return {
    ...(limits?.memoryMb === undefined ? {} : { memoryBytes: Math.round(limits.memoryMb * 1e6) }),
    ...(limits?.cpu === undefined ? {} : { nanoCpus: Math.round(limits.cpu * 1e9) }),
  };
}

/** `--retry-oom [--retry-oom-cap MB]`: the cap, by default this host's memory. */
function retryOomCap(text: string | undefined): number {
  if (text === undefined) return Math.floor(totalmem() / 1e6);
  const value = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(value >= 8)) throw new CpostError("usage", `--retry-oom-cap ${text}: not a number of MB (8 or more)`, { hint: "give the largest memory limit to retry with, in MB, e.g. 8192" });
  return value;
}

/**
 * Runs one operator through `attempt`, again with double the memory limit
 * while it is OOM-killed under a limit below the cap. The result is the last
 * attempt's, carrying its limits and the earlier attempts.
 */
export async function runWithOomRetry(
  op: Operator,
  sizing: RunSizing | undefined,
  say: (line: string) => void,
  attempt: (limits: ContainerLimits) => Promise<OperatorResult>,
): Promise<OperatorResult> {
  let limits = limitsFor(op, sizing);
  const earlier: OperatorAttempt[] = [];
  for (;;) {
    const result = await attempt(limits);
    const done: OperatorResult = { ...result, ...(Object.keys(limits).length > 0 ? { limits } : {}), ...(earlier.length > 0 ? { attempts: earlier } : {}) };
    const cap = sizing?.retryOomCapMb;
    const limit = limits.memoryMb;
    if (result.status !== "failed" || !result.oomKilled || cap === undefined || limit === undefined || limit >= cap) {
      if (result.oomKilled && cap !== undefined && limit !== undefined && limit >= cap) say(`Operator ${op.name} was OOM-killed at the --retry-oom cap of ${cap} MB: not retrying`);
      return done;
    }
    const next = Math.min(limit * 2, cap);
    earlier.push({ containerId: result.containerId, exitCode: result.exitCode, oomKilled: true, limits, startedAtMs: result.startedAtMs, endedAtMs: result.endedAtMs });
    say(`Operator ${op.name} was killed for lack of memory under its ${limit} MB limit: running it again with ${next} MB (--retry-oom)`);
    limits = { ...limits, memoryMb: next };
  }
}

// ---------------------------------------------------------------- command-line flags

/** What the sizing flags of `cpost run` and `cpost size` ask for. */
export interface SizingRequest extends RunSizing {
  /** Runs of the whole pipeline (`--repeat N`), 1 or more. */
  repeat: number;
}

/** Help of the sizing flags shared by `cpost run` and `cpost size`. */
export const SIZING_ARGS = {
  repeat: { type: "string", description: "run the pipeline N times (fresh outputs each time) and size on all runs' samples; prints the spread of the peaks", valueHint: "N" },
  ...POLICY_ARGS,
  "enforce-requests": { type: "boolean", description: "apply each operator's requests as container limits (cpu -> CPU quota, memory MB -> memory limit without swap), so OOM kills and throttling show here" },
  "retry-oom": { type: "boolean", description: "re-run an operator OOM-killed under a memory limit with double the limit, up to --retry-oom-cap" },
  "retry-oom-cap": { type: "string", description: "largest memory limit --retry-oom tries, MB (default: this host's memory)", valueHint: "MB" },
} as const;

/** Most runs `--repeat` takes. */
const MAX_REPEAT = 1000;

/** The sizing request from parsed flags (keys with `-`). */
export function sizingRequestOf(flags: Record<string, string | true | undefined>): SizingRequest {
  const repeatText = typeof flags.repeat === "string" ? flags.repeat : undefined;
  const repeat = repeatText === undefined ? 1 : /^\d+$/.test(repeatText) ? Number(repeatText) : NaN;
  if (!(repeat >= 1 && repeat <= MAX_REPEAT)) throw new CpostError("usage", `--repeat ${repeatText}: not a whole number from 1 to ${MAX_REPEAT}`, { hint: "e.g. --repeat 3" });
  const cap = typeof flags["retry-oom-cap"] === "string" ? flags["retry-oom-cap"] : undefined;
  return {
    repeat,
    policy: policyFromFlags(policyFlagsOf(flags)),
    ...(flags["enforce-requests"] === true ? { enforceRequests: true } : {}),
    ...(flags["retry-oom"] === true || cap !== undefined ? { retryOomCapMb: retryOomCap(cap) } : {}),
  };
}
