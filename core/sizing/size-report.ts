/**
 * `cpost size` for machines: the JSON document (--json, schema in
 * docs/sizing.md), the CI gate (--check: current requests against the
 * recommendation) and Kubernetes / Argo `resources:` blocks (--format k8s).
 * Pure functions over the sized operators; the command prints and exits.
 */
import type { Operator, OperatorResult, OperatorSummary, SizingEvidence } from "../contracts/types.ts";
import { policyName, policyRule, type SizingPolicy } from "./sizing.ts";

/** The `schema` field of the JSON document; bumped when a field changes meaning. */
export const SIZE_JSON_SCHEMA = "cpost.size/v1";

/** What the formats need of one sized operator (repeat.ts's OperatorSizing has it). */
export interface SizedOperator {
  operator: string;
  result: OperatorResult;
  summary: OperatorSummary;
}

/** One operator in the JSON document. */
export interface SizeJsonOperator {
  name: string;
  status: OperatorResult["status"];
  samples: number;
  requests: { cpu: number; memory: number; gpu?: number };
  limits: { cpu: number; memory: number };
  /** Predicted share of throttled CFS periods at limits.cpu, percent (null: no usage counter recorded). */
  predictedThrottledPercent: number | null;
  /** The same at requests.cpu used as the limit. */
  predictedThrottledPercentAtRequest: number | null;
  /** Predicted run-time stretch at limits.cpu, percent. */
  predictedStretchPercent: number | null;
  gpuMemoryGb?: number;
  /** Per GPU model, the smallest MIG profile the GPU memory fits. */
  gpuPartitions?: Array<{ gpu: string; profile: string }>;
  lowerBound: { cpu: boolean; memory: boolean };
  notes: string[];
  evidence: SizingEvidence | null;
}

/** The whole document. */
export interface SizeJson {
  schema: typeof SIZE_JSON_SCHEMA;
  pipeline: string;
  policy: string;
  rule: string;
  throttleTargetPercent: number;
  runs: number;
  operators: SizeJsonOperator[];
}

/** The --json document. */
export function sizeJson(pipeline: string, sized: readonly SizedOperator[], policy: SizingPolicy, runs: number, throttleTarget: number): SizeJson {
  return {
    schema: SIZE_JSON_SCHEMA,
    pipeline,
    policy: policyName(policy),
    rule: policyRule(policy),
    throttleTargetPercent: throttleTarget,
    runs,
    operators: sized.map(({ operator, result, summary }) => {
      const rec = summary.recommendation;
      const ev = rec.evidence;
      const cpuLimit = ev?.cpuLimit;
      return {
        name: operator,
        status: result.status,
        samples: summary.samples,
        requests: { cpu: rec.cpu, memory: rec.memory, ...(rec.gpu === undefined ? {} : { gpu: rec.gpu }) },
        limits: { cpu: rec.cpuLimit ?? rec.cpu, memory: rec.memory },
        predictedThrottledPercent: cpuLimit?.atLimit.throttledPercent ?? null,
        predictedThrottledPercentAtRequest: cpuLimit?.atRequest.throttledPercent ?? null,
        predictedStretchPercent: cpuLimit?.atLimit.stretchPercent ?? null,
        ...(rec.gpuMemoryGb === undefined ? {} : { gpuMemoryGb: rec.gpuMemoryGb }),
        ...(ev?.gpu ? { gpuPartitions: ev.gpu.partitions.map((p) => ({ gpu: p.gpu, profile: p.profile })) } : {}),
        lowerBound: { cpu: ev?.lowerBound?.cpu ?? false, memory: ev?.lowerBound?.memory ?? false },
        notes: rec.notes,
        evidence: ev ?? null,
      };
    }),
  };
}

/** How far above the need a request is called wasteful by --check (a warning, not a failure). */
export const CHECK_FAR_ABOVE = 2;

/** --check's verdict: failures (requests below the need) and warnings (far above it, or nothing to judge by). */
export function checkRequests(operators: readonly Operator[], sized: readonly SizedOperator[]): { failures: string[]; warnings: string[] } {
  const failures: string[] = [];
  const warnings: string[] = [];
  for (const op of operators) {
    const found = sized.find((s) => s.operator === op.name);
    if (!found || found.summary.samples === 0) {
      warnings.push(`${op.name}: not in the recordings (no samples); its requests are not checked`);
      continue;
    }
    const rec = found.summary.recommendation;
    const ev = rec.evidence;
    const lower = ev?.lowerBound;
    const below: string[] = [];
    const above: string[] = [];
    const judge = (what: string, unit: string, current: number | undefined, need: number, lowerBound?: boolean, basis?: string) => {
      const why = [basis, lowerBound ? "a lower bound: it needs at least that" : undefined].filter(Boolean).join("; ");
      const given = current === undefined ? `no ${what} request` : `${what} request ${current}${unit}`;
      if (current === undefined || current < need) below.push(`${given}, below the ${need}${unit} it needs${why ? ` (${why})` : ""}`);
      else if (!lowerBound && current >= CHECK_FAR_ABOVE * need && current - need >= (what === "memory" ? 256 : 1)) above.push(`${what} request ${current}${unit} is ${(current / need).toFixed(1)}x the ${need}${unit} it needs`);
    };
    judge("cpu", "", op.requests.cpu, rec.cpu, lower?.cpu, ev ? `${ev.cpu.statistic} 1 s CPU ${ev.cpu.value.toFixed(3)} %` : undefined);
    judge("memory", " MB", op.requests.memory, rec.memory, lower?.memory, ev ? `${ev.memory.statistic} working set ${ev.memory.valueMb.toFixed(3)} MB` : undefined);
    if (rec.gpu !== undefined && rec.gpu > 0) judge("gpu", "", op.requests.gpu, rec.gpu);
    if (found.result.status !== "succeeded") warnings.push(`${op.name}: it ${found.result.status} in the recording${found.result.oomKilled ? " (OOM killed)" : ""}: its figures may be short of its need`);
    for (const b of below) failures.push(`${op.name}: ${b}`);
    for (const a of above) warnings.push(`${op.name}: ${a}`);
  }
  return { failures, warnings };
}

/** A CPU quantity as Kubernetes takes it: whole cores as "2", fractions in millicores "500m". */
export function k8sCpu(cores: number): string {
  const milli = Math.round(cores * 1000);
  return milli % 1000 === 0 ? `"${milli / 1000}"` : `${milli}m`;
}

/**
 * Each operator's `resources:` block, as a Kubernetes container and an Argo
 * Workflows template take it (memory in M = 1e6 bytes, as cpost's MB; the
 * memory limit equals the request; GPUs as `nvidia.com/gpu`, with the MIG
 * resources the GPU memory fits in a comment).
 */
export function k8sResources(sized: readonly SizedOperator[], policy: SizingPolicy): string {
  const lines = [`# cpost size, policy ${policyName(policy)}; memory in M (1e6 bytes); limits.cpu from the CFS throttling simulation`];
  for (const { operator, summary } of sized) {
    const rec = summary.recommendation;
    const ev = rec.evidence;
    const predicted = ev?.cpuLimit ? `; predicted throttled periods at the limit ${ev.cpuLimit.atLimit.throttledPercent.toFixed(3)} %` : "";
    lines.push(`# ${operator}${summary.samples === 0 ? ": no samples, minimum requests" : ""}${predicted}`);
    if (ev?.gpu) lines.push(`# ${operator}: GPU memory ${ev.gpu.memoryGb} GB${ev.gpu.partitions.length > 0 ? `; fits ${ev.gpu.partitions.map((p) => `nvidia.com/mig-${p.profile} (${p.gpu})`).join(", ")}` : "; a whole GPU"}`);
    const gpu = rec.gpu !== undefined && rec.gpu > 0 ? [`      nvidia.com/gpu: ${rec.gpu}`] : [];
    lines.push(
      `${operator}:`,
      "  resources:",
      "    requests:",
      `      cpu: ${k8sCpu(rec.cpu)}`,
      `      memory: ${rec.memory}M`,
      ...gpu,
      "    limits:",
      `      cpu: ${k8sCpu(rec.cpuLimit ?? rec.cpu)}`,
      `      memory: ${rec.memory}M`,
      ...gpu,
    );
  }
  return `${lines.join("\n")}\n`;
}
