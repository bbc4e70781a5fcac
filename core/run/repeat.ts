/**
 * Sizing over several runs. The original told users to "run multiple times
 * to see what are the best numbers to fill"; `--repeat N` does it: the
 * pipeline runs N times (fresh outputs each time, each run's files kept in
 * `run-<i>/` of --metrics_dir), and every run's samples feed one summary per
 * operator, so the recommendation comes from all of them (the maximum, or a
 * percentile over the union). The spread (min / median / max of the per-run
 * peaks) shows how much runs differ. Recordings (`cpost size --from`) feed
 * the same bookkeeping through replay.
 */
import { basename, dirname, extname, join } from "node:path";
import { grid } from "../../plugins/table/index.ts";
import { f3 } from "../../plugins/table/extras.ts";
import { EXIT } from "../contracts/errors.ts";
import { CPOST_POLICY, CPU_WINDOW_MS, policyName, policyRule, type SizingPolicy } from "../sizing/sizing.ts";
import { SummaryBuilder } from "../sizing/summary.ts";
import { describeGpuFit } from "../sizing/gpu-partitions.ts";
import type { OperatorAttempt, OperatorResult, OperatorStatus, OperatorSummary, SizingEvidence, Sink } from "../contracts/types.ts";
import { executeRun, type RunRequest } from "./execute.ts";

/** One run's figures of one operator. */
export interface RunPeak {
  run: number;
  status: OperatorStatus;
  samples: number;
  cpuMaxPercent: number;
  memoryMaxMb: number;
}

/** An operator sized over every run it ran in. */
export interface OperatorSizing {
  operator: string;
  /** Runs where it produced samples, in run order. */
  peaks: RunPeak[];
  /** The runs' results folded into one: failed if any run failed, OOM-killed if any last attempt was. */
  result: OperatorResult;
  /** Built from all runs' samples under the policy. */
  summary: OperatorSummary;
}

/** The sink that gathers runs for sizing, and what it gathered. */
export interface SizingObserver {
  sink: Sink;
  /** Runs seen so far (one `start` each). */
  readonly runs: number;
  /** One entry per operator, in the order first seen; builds the summaries (call once, after the last run). */
  finish(): OperatorSizing[];
}

/** A sink that feeds every run's batches into one SummaryBuilder per operator. */
export function defineSizingObserver(policy: SizingPolicy): SizingObserver {
  const operators = new Map<string, { builder: SummaryBuilder; peaks: RunPeak[]; results: OperatorResult[] }>();
  let runs = 0;
  let cpus: number | undefined;
  const entry = (name: string) => {
    let found = operators.get(name);
    if (!found) operators.set(name, (found = { builder: new SummaryBuilder(name, { policy, host: { cpus } }), peaks: [], results: [] }));
    return found;
  };
  return {
    get runs() {
      return runs;
    },
    sink: {
      name: "sizing",
      start(run) {
        runs++;
        cpus = run.host?.cpus;
      },
      operatorStart(operator) {
        entry(operator.name);
      },
      write(batch) {
        entry(batch.operator).builder.add(batch);
      },
      operatorDone(result, summary) {
        const op = entry(result.operator);
        op.results.push(result);
        // Each run's peaks as sizing reads them: the 1 s CPU figure and the working set.
        const ev = summary.recommendation.evidence;
        if (summary.samples > 0) op.peaks.push({ run: runs, status: result.status, samples: summary.samples, cpuMaxPercent: ev?.cpu.value ?? summary.cpuPercent.max, memoryMaxMb: ev?.memory.valueMb ?? summary.memoryMb.max });
      },
      end() {},
    },
    finish() {
      return [...operators].map(([operator, { builder, peaks, results }]) => {
        const result = foldResults(operator, results);
        return { operator, peaks, result, summary: builder.build(result) };
      });
    },
  };
}

/** The results of one operator over several runs, as one: the worst status, every retried attempt, the last limits. */
function foldResults(operator: string, results: OperatorResult[]): OperatorResult {
  const last = results.at(-1);
  if (!last) return { operator, containerId: "", status: "skipped", exitCode: null, reason: "never ran", startedAtMs: 0, endedAtMs: 0 };
  if (results.length === 1) return last;
  const worst = (["failed", "interrupted", "succeeded", "skipped"] as const).find((s) => results.some((r) => r.status === s))!;
  const failed = results.find((r) => r.status === worst)!;
  const attempts: OperatorAttempt[] = results.flatMap((r) => r.attempts ?? []);
  return {
    ...failed,
    oomKilled: results.some((r) => r.oomKilled === true),
    startedAtMs: results[0]!.startedAtMs,
    endedAtMs: last.endedAtMs,
    ...(last.limits ? { limits: last.limits } : {}),
    ...(attempts.length > 0 ? { attempts } : {}),
  };
}

// ---------------------------------------------------------------- repeated runs

/** `<metrics_dir>/run-<i>` and `run-<i>` beside a --record file: every run's outputs are kept. */
function runOutputs(request: RunRequest, run: number): Pick<RunRequest, "metricsDir" | "record"> {
  const record = request.record === undefined ? undefined : join(dirname(request.record), `${basename(request.record, extname(request.record))}-run-${run}${extname(request.record) || ".msgpack"}`);
  return { metricsDir: request.metricsDir === undefined ? undefined : join(request.metricsDir, `run-${run}`), record };
}

/** Runs the pipeline as asked: once, or `--repeat N` times with the spread and recommendations printed. */
export function executeRequest(request: RunRequest): Promise<number> {
  return (request.sizing?.repeat ?? 1) > 1 ? executeRepeated(request) : executeRun(request);
}

/**
 * Runs the pipeline `request.sizing.repeat` times, then prints the spread
 * and the recommendations; the worst run's exit code. `observer` lets a
 * caller (cpost size) keep the sizing for more work (--apply).
 */
export async function executeRepeated(request: RunRequest, observer?: SizingObserver, out: { write(text: string): unknown } = process.stdout): Promise<number> {
  const repeat = request.sizing?.repeat ?? 1;
  const policy = request.sizing?.policy ?? CPOST_POLICY;
  const sizing = observer ?? defineSizingObserver(policy);
  let code: number = EXIT.ok;
  for (let run = 1; run <= repeat; run++) {
    if (repeat > 1 && !request.quiet) out.write(`\n${"=".repeat(20)} Run ${run} of ${repeat} ${"=".repeat(20)}\n`);
    const outputs = repeat > 1 ? runOutputs(request, run) : {};
    const one: RunRequest = { ...request, ...outputs, sizing: { ...request.sizing, repeat: 1 }, observer: sizing.sink };
    code = Math.max(code, await executeRun(one));
  }
  if (!observer) {
    const sized = sizing.finish();
    out.write(`\n${formatSpread(sized, repeat)}\n${formatRecommendations(sized, policy)}`);
  }
  return code;
}

// ---------------------------------------------------------------- printing

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};
/** The per-operator spread of the runs' peaks (min / median / max) beside the recommendation. */
export function formatSpread(sized: OperatorSizing[], runs: number): string {
  if (runs < 2) return "";
  const rows = sized.map((op) => {
    const cpu = op.peaks.map((p) => p.cpuMaxPercent);
    const memory = op.peaks.map((p) => p.memoryMaxMb);
    const cell = (xs: number[], unit: string, pick: (xs: number[]) => number) => (xs.length === 0 ? "-" : `${f3(pick(xs))} ${unit}`);
    const rec = op.summary.recommendation;
    return [
      [op.operator, `(${op.peaks.length} of ${runs} runs)`],
      ["CPU", "Memory"],
      [cell(cpu, "%", (x) => Math.min(...x)), cell(memory, "MB", (x) => Math.min(...x))],
      [cell(cpu, "%", median), cell(memory, "MB", median)],
      [cell(cpu, "%", (x) => Math.max(...x)), cell(memory, "MB", (x) => Math.max(...x))],
      [`cpu: ${rec.cpu}`, `memory: ${rec.memory}`],
    ];
  });
  return `Peaks over ${runs} runs\n${grid(["Operator", "Metric", "Min", "Median", "Max", "Resource"], rows).join("\n")}\n`;
}

/** The CPU figure sized on, with its window and error: `max 1 s CPU 100.203 % ± 0.835`. */
export function describeCpu(ev: SizingEvidence): string {
  const { cpu } = ev;
  if (cpu.metric !== "cpu.usage_ns") return `${cpu.statistic} CPU ${f3(cpu.value)} % (short windows, no usage counter recorded)`;
  const window = cpu.windowMs >= CPU_WINDOW_MS ? "1 s" : `${f3(cpu.windowMs / 1000)} s (its whole run)`;
  return `${cpu.statistic} ${window} CPU ${f3(cpu.value)} % ± ${f3(cpu.errorPercent)}`;
}

/** The memory figure sized on: `max working set 13.136 MB`. */
export function describeMemory(ev: SizingEvidence): string {
  const what = ev.memory.metric === "memory.working_set_bytes" ? "working set" : "memory";
  return `max ${what} ${f3(ev.memory.valueMb)} MB over ${ev.memory.rows} readings`;
}

/** The recommendations with what they rest on, and every note (OOM, throttling, retries). */
export function formatRecommendations(sized: OperatorSizing[], policy: SizingPolicy): string {
  const lines = [`Recommended requests (policy ${policyName(policy)}: ${policyRule(policy)})`];
  const width = Math.max(0, ...sized.map((op) => op.operator.length));
  for (const op of sized) {
    const rec = op.summary.recommendation;
    const ev = rec.evidence;
    const requests = `cpu: ${rec.cpu}, memory: ${rec.memory}${rec.gpu === undefined ? "" : `, gpu: ${rec.gpu}`}`;
    const basis = ev ? `from ${describeCpu(ev)} and ${describeMemory(ev)}` : "";
    const flag = ev?.lowerBound ? `  [LOWER BOUND: ${[ev.lowerBound.memory ? "OOM killed" : "", ev.lowerBound.cpu ? "CPU throttled" : ""].filter(Boolean).join(", ")}]` : "";
    const failed = op.result.status === "succeeded" ? "" : `  (${op.result.status}${op.result.exitCode === null ? "" : `, exit code ${op.result.exitCode}`})`;
    lines.push(`  ${op.operator.padEnd(width)}  ${requests}   ${basis}${flag}${failed}`);
    for (const note of rec.notes) lines.push(`  ${" ".repeat(width)}  - ${note}`);
    if (ev?.cpuLimit) lines.push(`  ${" ".repeat(width)}  limit: ${describeCpuLimit(ev.cpuLimit, rec.cpu)}`);
    if (ev?.gpu) lines.push(`  ${" ".repeat(width)}  gpu: ${describeGpuFit(ev.gpu)}`);
  }
  return `${lines.join("\n")}\n`;
}

/** `cpu 2 (throttled periods predicted: 0.000 % at 2, 45.000 % at the request 1, which would run 12.000 % longer)`. */
export function describeCpuLimit(limit: NonNullable<SizingEvidence["cpuLimit"]>, request: number): string {
  const at = (p: { throttledPercent: number; stretchPercent: number }) => `${f3(p.throttledPercent)} %${p.stretchPercent > 0 ? `, ${f3(p.stretchPercent)} % longer` : ""}`;
  const bound = limit.lowerBound ? " [LOWER BOUND: the trace was throttled]" : "";
  const requestPart = limit.limit === request ? "" : `; at the request ${request}: ${at(limit.atRequest)}`;
  return `cpu ${limit.limit} (simulated CFS throttled periods at ${limit.limit}: ${at(limit.atLimit)}${requestPart}; target ${limit.targetPercent} %)${bound}`;
}

/**
 * What slower samplers would have seen of each operator, beside cpost's own
 * figures: the highest CPU and memory they would have read (median over
 * start offsets, with the range) and the request the same policy would have
 * given from them.
 */
export function formatSamplerViews(sized: OperatorSizing[]): string {
  const withViews = sized.filter((op) => (op.summary.recommendation.evidence?.samplerViews?.length ?? 0) > 0);
  if (withViews.length === 0) return "";
  const range = (r: [number, number]) => (r[0] === r[1] ? "" : ` (${f3(r[0])}-${f3(r[1])})`);
  const rows = withViews.map((op) => {
    const rec = op.summary.recommendation;
    const ev = rec.evidence!;
    const views = ev.samplerViews!;
    return [
      [op.operator],
      ["cpost (fine)", ...views.map((v) => v.sampler)],
      [`${f3(ev.cpu.value)} %`, ...views.map((v) => `${f3(v.cpuPercent)} %${range(v.cpuPercentRange)}`)],
      [`${f3(ev.memory.valueMb)} MB`, ...views.map((v) => `${f3(v.memoryMb)} MB${range(v.memoryMbRange)}`)],
      [`cpu: ${rec.cpu}, memory: ${rec.memory}`, ...views.map((v) => `cpu: ${v.requests.cpu}, memory: ${v.requests.memory}`)],
    ];
  });
  const header = "What slower samplers would have seen (resampled from this recording; median over 10 start offsets, range in brackets)";
  return `\n${header}\n${grid(["Operator", "Sampler", "Peak CPU", "Peak memory", "Requests"], rows).join("\n")}\n`;
}
