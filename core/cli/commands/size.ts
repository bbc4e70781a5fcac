/**
 * `cpost size <pipeline.yaml> <input_dir> [--repeat N] [--policy ...] [--apply]`:
 * runs the pipeline (N times), then recommends each operator's `requests`
 * with what they rest on, and with --apply writes them into the pipeline
 * file (comments and formatting kept) and prints the diff.
 * `cpost size <pipeline.yaml> --from run1.msgpack [--from run2.msgpack]`
 * sizes from recordings instead, under any policy. `--json` prints one JSON
 * document, `--format k8s` the `resources:` blocks, and `--check` exits 1
 * naming each operator whose current request is below its need (a CI gate;
 * with --from it needs no engine).
 */
import { defineCommand } from "citty";
import { relative } from "node:path";
import { DEFAULT_COLLECTORS, builtinCollectors } from "../../../collectors/index.ts";
import { builtinSinks } from "../../../plugins/index.ts";
import { applyRequests, unifiedDiff, type RequestUpdate } from "../../pipeline/apply-requests.ts";
import { CpostError, EXIT } from "../../contracts/errors.ts";
import { SIZING_ARGS, sizingRequestOf } from "../../run/limits.ts";
import { loadPipeline } from "../../pipeline/pipeline.ts";
import { readRecording, replayInto } from "../../sinks/recording.ts";
import { defineSizingObserver, executeRepeated, formatRecommendations, formatSamplerViews, formatSpread, type OperatorSizing } from "../../run/repeat.ts";
import { CPOST_POLICY, DEFAULT_THROTTLE_TARGET_PCT } from "../../sizing/sizing.ts";
import { checkRequests, k8sResources, sizeJson } from "../../sizing/size-report.ts";
import { commaList, parseArgs, valueOf, type FlagsDef } from "../flags.ts";
import { available, checkSinkOptions, runSettingsOf, sinkPrefixesOf } from "./run.ts";
import { warn } from "../console.ts";

const args = {
  pipeline: { type: "positional", required: true, description: "pipeline definition file (Clara pipeline YAML); --apply writes into it", valueHint: "pipeline.yaml" },
  input: { type: "positional", required: false, description: "input payload directory (not with --from)", valueHint: "input_dir" },
  from: { type: "string", repeated: true, needs: "a recording file", description: "size from this recording instead of running (repeatable; written by --sinks msgpack or --record)", valueHint: "run.msgpack" },
  apply: { type: "boolean", description: "write the recommended requests (cpu, memory, and gpu where GPU metrics exist) into the pipeline file, keeping comments and formatting; prints the diff" },
  check: { type: "boolean", description: "CI gate: compare the pipeline's requests with the recommendation; exit 1 naming each operator whose request is below its need (warn where one is far above)" },
  json: { type: "boolean", description: "print one JSON document (schema cpost.size/v1, docs/sizing.md) instead of the text; same as --format json" },
  format: { type: "string", description: "output: text (default), json, or k8s (each operator's resources: block, requests and limits, as Kubernetes and Argo Workflows take it)", valueHint: "text|json|k8s" },
  ...SIZING_ARGS,
  metrics_dir: { type: "string", description: "keep each run's CSVs and msgpack recording here (run-<i>/ with --repeat)", valueHint: "dir" },
  models_dir: { type: "string", description: "Triton model repository, required if the pipeline uses Triton", valueHint: "dir" },
  collectors: { type: "string", description: `collectors, comma-separated (default ${DEFAULT_COLLECTORS.join(",")})`, valueHint: "cgroup,blkio,nvml" },
  sinks: { type: "string", description: "sinks for each run (default none; csv,msgpack with --metrics_dir)", valueHint: "table,csv" },
  interval: { type: "string", description: "sampling interval: 10ms (default), 1ms, 1s", valueHint: "10ms" },
  force: { type: "string", optionalValue: ["none", "cont", "stop"], description: "on an operator failure: none (ask; stop without a terminal), cont (continue) or stop", valueHint: "none|cont|stop" },
  verbose: { type: "boolean", alias: "v", description: "show engine details, container settings and each operator's output" },
  quiet: { type: "boolean", description: "no console lines but the recommendations, warnings and errors" },
  "triton-image": { type: "string", description: "Triton server image", valueHint: "image:tag" },
} satisfies FlagsDef;

/** Sends what is written to stdout to stderr until the returned function is called. */
function stdoutToStderr(): () => void {
  const write = process.stdout.write;
  process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => (process.stderr.write as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest)) as typeof process.stdout.write;
  return () => {
    process.stdout.write = write;
  };
}

/** The updates --apply writes: per operator what stands on firm ground, with why the rest is left out. */
export function requestUpdates(sized: OperatorSizing[], operators: string[]): { updates: RequestUpdate[]; skipped: string[] } {
  const updates: RequestUpdate[] = [];
  const skipped: string[] = [];
  for (const op of sized) {
    if (!operators.includes(op.operator)) continue;
    const rec = op.summary.recommendation;
    const lower = rec.evidence?.lowerBound;
    if (op.summary.samples === 0) skipped.push(`${op.operator}: no samples (${op.result.status}); requests left as they are`);
    else if (op.result.status !== "succeeded") {
      const why = op.result.oomKilled ? "it was OOM-killed, so its memory is only a lower bound; run again with --enforce-requests --retry-oom" : `it ${op.result.status}${op.result.exitCode === null ? "" : ` (exit code ${op.result.exitCode})`}`;
      skipped.push(`${op.operator}: not applied: ${why}`);
    } else {
      if (lower?.cpu) skipped.push(`${op.operator}: cpu not applied: it was throttled under its CPU limit, so ${rec.cpu} is only a lower bound`);
      if (lower?.memory) skipped.push(`${op.operator}: memory not applied: it was OOM-killed, so ${rec.memory} is only a lower bound`);
      updates.push({ operator: op.operator, ...(lower?.cpu ? {} : { cpu: rec.cpu }), ...(lower?.memory ? {} : { memory: rec.memory }), ...(rec.gpu === undefined ? {} : { gpu: rec.gpu }) });
    }
  }
  return { updates, skipped };
}

export default defineCommand({
  meta: { name: "size", description: "Run a pipeline (or read recordings), recommend each operator's requests, and --apply them to the pipeline file." },
  args,
  async run({ rawArgs }) {
    const { positionals, flags, sinkOptions, lists } = parseArgs(rawArgs, args, { sinkPrefixes: sinkPrefixesOf() });
    const from = lists?.from ?? [];
    const str = valueOf(flags);
    const expected = from.length > 0 ? 1 : 2;
    if (positionals.length !== expected) {
      throw new CpostError("usage", from.length > 0 ? `with --from, cpost size takes only the pipeline file (got ${positionals.length} arguments)` : `cpost size takes a pipeline file and an input directory (got ${positionals.length} argument${positionals.length === 1 ? "" : "s"})`, {
        hint: "cpost size <pipeline.yaml> <input_dir> [--repeat N] [--apply], or cpost size <pipeline.yaml> --from run.msgpack",
      });
    }
    const format = flags.json === true ? "json" : (str("format") ?? "text");
    if (!["text", "json", "k8s"].includes(format) || (flags.json === true && str("format") !== undefined && str("format") !== "json")) {
      throw new CpostError("usage", `--format ${str("format")}${flags.json === true ? " with --json" : ""}: not an output format`, { hint: "use --format text, --format json (or --json), or --format k8s" });
    }
    if (format !== "text" && flags.apply === true) throw new CpostError("usage", `--apply prints a diff; it does not go with --format ${format}`, { hint: "run --apply and --format separately" });
    const sizing = sizingRequestOf(flags);
    const policy = sizing.policy ?? CPOST_POLICY;
    const pipelineFile = positionals[0]!;
    const { pipeline } = loadPipeline(pipelineFile);
    const observer = defineSizingObserver(policy);
    let code: number = EXIT.ok;

    if (from.length > 0) {
      if (sizing.repeat > 1 || sizing.enforceRequests || sizing.retryOomCapMb !== undefined) {
        throw new CpostError("usage", "--repeat, --enforce-requests and --retry-oom are for live runs, not --from", { hint: "give each recording with --from instead" });
      }
      for (const file of from) {
        const recording = readRecording(file);
        if (!recording.complete) warn(`${file} ends before its run did; sizing on what it holds`);
        if (recording.run.pipeline.name !== pipeline.name) warn(`${file} recorded pipeline "${recording.run.pipeline.name}", not "${pipeline.name}"`);
        await replayInto(recording, [observer.sink], { policy });
      }
    } else {
      const settings = runSettingsOf(flags);
      const sinks = flags.sinks !== undefined ? commaList(str("sinks")) : settings.metricsDir ? available(["csv", "msgpack"], builtinSinks, "sink") : [];
      const collectors = flags.collectors !== undefined ? commaList(str("collectors")) : available(DEFAULT_COLLECTORS, builtinCollectors, "collector");
      checkSinkOptions(sinkOptions, sinks, collectors);
      // Machine-readable output owns stdout: what the run and its sinks print goes to stderr meanwhile.
      const restore = format === "text" ? undefined : stdoutToStderr();
      try {
        code = await executeRepeated(
          {
            pipeline: pipelineFile,
            input: positionals[1]!,
            warn,
            ...settings,
            // Machine-readable output owns stdout: the run's own console lines are left out.
            ...(format === "text" ? {} : { quiet: true }),
            keepOutputs: false,
            collectors,
            sinks,
            sizing,
            sinkOptions,
          },
          observer,
        );
      } finally {
        restore?.();
      }
    }

    const sized = observer.finish();
    const runs = observer.runs;
    if (format === "json") process.stdout.write(`${JSON.stringify(sizeJson(pipeline.name, sized, policy, runs, policy.throttleTargetPct ?? DEFAULT_THROTTLE_TARGET_PCT), null, 2)}\n`);
    else if (format === "k8s") process.stdout.write(k8sResources(sized, policy));
    else process.stdout.write(`\n${formatSpread(sized, runs)}${formatRecommendations(sized, policy)}${formatSamplerViews(sized)}`);
    if (flags.check === true) {
      const { failures, warnings } = checkRequests(pipeline.operators, sized);
      for (const line of warnings) warn(line);
      for (const line of failures) process.stderr.write(`check failed: ${line}\n`);
      if (failures.length > 0) {
        process.stderr.write(`cpost size --check: ${failures.length} request${failures.length === 1 ? "" : "s"} below the need in ${pipelineFile}; raise them (cpost size ... --apply writes the recommendation)\n`);
        return Math.max(code, EXIT.operatorFailed);
      }
      process.stderr.write(`cpost size --check: every operator's requests cover its need (${pipelineFile})\n`);
    }
    if (flags.apply !== true) return code;

    const { updates, skipped } = requestUpdates(sized, pipeline.operators.map((o) => o.name));
    for (const line of skipped) warn(line);
    const applied = applyRequests(pipelineFile, updates);
    if (applied.changed.length === 0) {
      process.stdout.write(`\nrequests already match; file unchanged (${pipelineFile})\n`);
      return code;
    }
    const name = relative(process.cwd(), pipelineFile) || pipelineFile;
    process.stdout.write(`\n${unifiedDiff(applied.before, applied.text, `a/${name}`, `b/${name}`)}`);
    process.stdout.write(`Wrote the requests of ${applied.changed.join(", ")} into ${pipelineFile}\n`);
    return code;
  },
});
