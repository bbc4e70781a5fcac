/**
 * One run of a pipeline as the command line asked for it: the pipeline
 * loaded and checked, collectors and sinks resolved (built-ins and plugins),
 * the runner driven under Ctrl-C handling, the exit code. `cpost run` and
 * the CPOST-compatible form come here through repeat.ts's executeRequest.
 */
import { dirname, resolve } from "node:path";
import { builtinSinks, sinkName } from "../../plugins/index.ts";
import { CpostError, EXIT } from "../contracts/errors.ts";
import type { Collector, Sink } from "../contracts/types.ts";
import { formatWarning, loadPipeline } from "../pipeline/pipeline.ts";
import { resolveCollectors, resolveSinkFactories, type PluginSet } from "../registry/plugin-loader.ts";
import type { SizingRequest } from "./limits.ts";
import { checkInputs, checkWritableDir, interruptSignals, runPipeline } from "./runner.ts";

/** What one run was asked for, from either command form. */
export interface RunRequest {
  /** Where warnings go: the CLI's one channel (core/cli/console.ts). */
  warn: (message: string) => void;
  pipeline: string;
  input: string;
  metricsDir?: string;
  modelsDir?: string;
  force: "none" | "cont" | "stop";
  verbose: boolean;
  quiet: boolean;
  keepOutputs: boolean;
  collectors: string[];
  sinks: string[];
  intervalMs: number;
  record?: string;
  /** Sizing policy, --repeat, --enforce-requests, --retry-oom (core/run/limits.ts); absent: one run, CPOST's rule. */
  sizing?: SizingRequest;
  /** An extra sink fed with the run (the --repeat and `cpost size` bookkeeping, core/run/repeat.ts). */
  observer?: Sink;
  tritonImage?: string;
  /** `--<sink>-<option> value` flags, keyed `<sink>-<option>` (also a collector plugin's `--<collector>-<option>`). */
  sinkOptions: Record<string, string>;
  /** Loaded plugins whose names `collectors` and `sinks` may use. */
  plugins?: PluginSet;
  /** `--sink-end-timeout`, ms. */
  sinkEndTimeoutMs?: number;
}

/**
 * Asks each collector with an `available()` hook whether it can work here;
 * the first that cannot stops everything with exit 2, naming it and why.
 * The check's own handles are released: the sampling thread opens its own.
 */
export function requireAvailable(collectors: Collector[], flag: string): void {
  for (const collector of collectors) {
    const state = collector.available?.();
    collector.dispose?.();
    if (state && !state.ok) {
      throw new CpostError("usage", `${flag} ${collector.name}: not available on this host: ${state.reason}`, {
        hint: `leave ${collector.name} out of ${flag} to run without it`,
      });
    }
  }
}

/** Runs a pipeline once as asked; the exit code (0 all succeeded, 1 an operator failed or was skipped). `--repeat`: repeat.ts. */
export async function executeRun(request: RunRequest): Promise<number> {
  const { pipeline, warnings } = loadPipeline(request.pipeline);
  for (const w of warnings) request.warn(formatWarning(w));
  // Before any sink creates a file or the engine is asked anything.
  checkInputs({ pipeline, inputDir: request.input, metricsDir: request.metricsDir, modelsDir: request.modelsDir });
  if (request.record !== undefined) checkWritableDir(dirname(resolve(request.record)), "--record", "give --record a file in a directory cpost can create and write to");

  const collectors = await resolveCollectors(request.collectors, request.plugins, request.sinkOptions);
  // A collector named is a collector asked for: a run without it would not be what was asked.
  requireAvailable(collectors, "--collectors");
  const sinkNames = [...request.sinks];
  const sinkOptions: Record<string, string | undefined> = { ...request.sinkOptions };
  if (request.record !== undefined) {
    if (!sinkNames.map(sinkName).includes("msgpack")) sinkNames.push("msgpack");
    sinkOptions["msgpack-file"] = resolve(request.record);
  }
  if (!request.quiet && process.stderr.isTTY && "progress" in builtinSinks && !sinkNames.includes("progress")) sinkNames.push("progress");
  const sinks: Sink[] = [];
  for (const { name, factory } of await resolveSinkFactories(sinkNames, request.plugins)) {
    sinks.push(await factory({ metricsDir: request.metricsDir, options: sinkOptions, ...(name === "progress" ? {} : { out: process.stdout }) }));
  }
  if (request.observer) sinks.push(request.observer);

  const interrupt = interruptSignals((name) => process.stderr.write(`\n${name}: stopping; cleaning up (press Ctrl-C again to force)\n`));
  try {
    const result = await runPipeline({
      pipeline,
      inputDir: request.input,
      metricsDir: request.metricsDir,
      modelsDir: request.modelsDir,
      collectors,
      sinks,
      sinkNames,
      intervalMs: request.intervalMs,
      force: request.force,
      verbose: request.verbose,
      quiet: request.quiet,
      keepOutputs: request.keepOutputs,
      tritonImage: request.tritonImage,
      sizing: request.sizing,
      sinkEndTimeoutMs: request.sinkEndTimeoutMs,
      warn: request.warn,
      signal: interrupt.signal,
      forceSignal: interrupt.forceSignal,
    });
    return result.results.every((r) => r.status === "succeeded") ? EXIT.ok : EXIT.operatorFailed;
  } finally {
    interrupt.dispose();
  }
}

