/**
 * Runs a pipeline as the original CPOST did: each operator in execution
 * order, one at a time, in its own container, sampled while it runs. Owns
 * everything it creates on the engine (labelled `cpost.run=<id>`) and
 * removes it on every exit path: success, failure, exception, interrupt.
 */
import { randomBytes } from "node:crypto";
import { accessSync, chmodSync, constants, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { availableParallelism, hostname, release, tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline/promises";
import { connectDocker, engineAnswer, type DockerClient } from "../engine/docker.ts";
import { asCpostError, CpostError, pathError } from "../contracts/errors.ts";
import { limitSpec, runWithOomRetry, type RunSizing } from "./limits.ts";
import { defineOperatorOutput, type OperatorOutput, type OutputTarget } from "./operator-log.ts";
import { isTritonService, mountsFor, outputHostDir, upstreamsOf } from "../pipeline/pipeline.ts";
import { Sampler, type Watch } from "../sampling/sampler.ts";
import { defineSinkFanout } from "../sinks/session.ts";
import { SummaryBuilder } from "../sizing/summary.ts";
import type { Collector, ContainerLimits, Operator, OperatorResult, OperatorSummary, Pipeline, RunInfo, RunResult, SampleBatch, Sink } from "../contracts/types.ts";
import { VERSION } from "../contracts/version.ts";

/** The Triton server image the original CPOST used. */
const DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:20.07-v1-py3";
/** The network Triton and the operators that use it share, as the original named it. */
export const TRITON_NETWORK = "cpost_net";
/** How long creating and starting one container may take (the original's ID_WAITING_TIME_SECONDS). */
const START_TIMEOUT_MS = 15_000;
/** How long Triton may take to answer ready. */
const TRITON_READY_TIMEOUT_MS = 60_000;
/** Grace for the last samples after a container exits. */
const FINISH_GRACE_MS = 2000;
const PROMPT = "Would you like to continue execution at the risk of the rest of pipeline failing (y)? If (n), cpost will stop and cleanup.";

/** What a run needs; the first block is the agreed contract, the rest optional refinements. */
export interface RunOptions {
  pipeline: Pipeline;
  inputDir: string;
  metricsDir?: string;
  modelsDir?: string;
  collectors: Collector[];
  sinks: Sink[];
  intervalMs: number;
  force: "none" | "cont" | "stop";
  verbose: boolean;
  keepOutputs: boolean;
  /** Where operator outputs go; given = kept. Default: a fresh `cpost-<runId>` under the temp dir. */
  workDir?: string;
  tritonImage?: string;
  /** Aborted on the first SIGINT/SIGTERM: stop, flush sinks, clean up, throw CpostError("interrupted"). */
  signal?: AbortSignal;
  engine?: DockerClient;
  /** Aborted on a second Ctrl-C: stop waiting on cleanup, remove what can be removed at once. */
  forceSignal?: AbortSignal;
  /** Triton's argv (default: tritonserver with the pipeline's models). */
  tritonCommand?: string[];
  /** The console lines of the original (banners, container ids); default process.stdout, like the tables. */
  out?: { write(text: string): unknown; isTTY?: boolean };
  /** No console lines but warnings and errors. */
  quiet?: boolean;
  /** Warnings (sampler, sinks, cleanup); default: stderr. */
  warn?: (message: string) => void;
  /** Limit for creating and starting one container (default 15 s, as the original). */
  startTimeoutMs?: number;
  /** Asks whether to continue after a failure (`--force none`); default: a y/n prompt when stdin is a TTY. */
  confirm?: (question: string, signal: AbortSignal) => Promise<boolean>;
  /** Batch period of the sampler, ms (default: the sampler's). */
  batchMs?: number;
  /** Sink names as the user typed them, for RunInfo (default: each sink's name). */
  sinkNames?: string[];
  /** Sizing policy, requests enforced as limits, OOM retries (core/run/limits.ts). */
  sizing?: RunSizing;
  /** How long the run's end waits for a sink to catch up, and again for its end hook (`--sink-end-timeout`; default core/sinks/session.ts). */
  sinkEndTimeoutMs?: number;
}

/** Checks what can be checked before anything starts; throws CpostError("input") naming the path and what to do. */
export function checkInputs(options: Pick<RunOptions, "pipeline" | "inputDir" | "metricsDir" | "modelsDir">): void {
  checkReadableDir(options.inputDir, "input directory", "give the directory holding the input payload as the second argument");
  if (options.metricsDir !== undefined) checkWritableDir(options.metricsDir, "--metrics_dir");
  const triton = options.pipeline.order.filter((op) => op.needsTriton);
  if (triton.length === 0) return;
  const models = [...new Set(triton.flatMap((op) => op.models))];
  if (options.modelsDir === undefined) {
    throw new CpostError("input", `--models_dir is required: operator ${triton.map((op) => op.name).join(", ")} uses Triton${models.length ? ` (models: ${models.join(", ")})` : ""}`, {
      file: options.pipeline.file,
      line: triton[0]!.line,
      hint: "pass --models_dir with the Triton model repository (one directory per model, each with config.pbtxt)",
    });
  }
  checkReadableDir(options.modelsDir, "--models_dir", "pass --models_dir with the Triton model repository");
  for (const model of models) {
    if (!existsSync(join(options.modelsDir, model, "config.pbtxt"))) {
      throw new CpostError("input", `model \`${model}\` is missing in the models directory ${options.modelsDir} (no ${model}/config.pbtxt)`, {
        file: options.modelsDir,
        hint: "put each model the pipeline names in its own directory with its config.pbtxt",
      });
    }
  }
}

/** A directory the user named that cpost reads (and mounts): exit 2 naming it and what is wrong (ENOENT, ENOTDIR, EACCES). */
function checkReadableDir(dir: string, what: string, hint: string): void {
  try {
    if (!statSync(dir).isDirectory()) throw Object.assign(new Error("not a directory"), { code: "ENOTDIR" });
    accessSync(dir, constants.R_OK | constants.X_OK);
  } catch (cause) {
    throw pathError(dir, what, cause, "directory", hint);
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** Creates `dir` if need be and writes a probe file into it; a CpostError naming `flag` otherwise. */
export function checkWritableDir(dir: string, flag: string, hint = `give ${flag} a directory cpost can create and write to`): void {
  const fail = (why: string, cause?: unknown) => new CpostError("input", `${flag} ${dir}: ${why}`, { file: dir, cause, hint });
  try {
    mkdirSync(dir, { recursive: true });
  } catch (cause) {
    throw fail(`cannot create it (${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message})`, cause);
  }
  if (!isDirectory(dir)) throw fail("not a directory");
  // access() says yes to root even on a read-only file system; writing is the real test.
  const probe = join(dir, `.cpost-write-test-${process.pid}`);
  try {
    accessSync(dir, constants.W_OK);
    writeFileSync(probe, "");
    unlinkSync(probe);
  } catch (cause) {
    throw fail(`not writable (${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message})`, cause);
  }
}

// ---------------------------------------------------------------- the run

/**
 * Runs every operator of the pipeline once, in execution order. Resolves
 * with the run's result (failed operators included); throws CpostError
 * "input"/"engine" before anything starts, "interrupted" after cleaning up
 * when `signal` aborts.
 */
export async function runPipeline(options: RunOptions): Promise<RunResult> {
  const signal = options.signal ?? new AbortController().signal;
  const log = defineConsole(options);
  checkInputs(options);
  const engine = options.engine ?? (await connectDocker({ signal, warn: log.warn }));
  const { pipeline } = options;
  const runId = randomBytes(6).toString("hex");
  const labels = { "cpost.run": runId, "cpost.pid": String(process.pid), "cpost.host": hostname() };
  log.debug(`Engine: ${engine.info.engine} ${engine.info.version} (API ${engine.info.apiVersion}, cgroup v${engine.info.cgroupVersion}, ${engine.info.cgroupDriver}) at ${engine.endpoint.display}; run ${runId}`);

  await removeLeftovers(engine, log, signal);
  const triton = pipeline.order.some((op) => op.needsTriton) ? tritonPlan(options) : undefined;
  await ensureImages(engine, [...new Set([...pipeline.order.map((op) => `${op.image}:${op.tag}`), ...(triton ? [triton.image] : [])])], log, signal);
  const others = pipeline.order.flatMap((op) => op.services.filter((s) => !isTritonService(s.name)).map((s) => `${op.name}/${s.name}`));
  if (others.length > 0) log.warn(`services other than Triton are not started by cpost: ${others.join(", ")}`);
  const gpus = engine.info.runtimes.includes("nvidia");
  if (!gpus && (triton || pipeline.order.some((op) => (op.requests.gpu ?? 0) > 0))) {
    log.warn(`the engine has no nvidia runtime: ${triton ? "Triton and " : ""}GPU operators run without GPUs`);
  }

  const ownWorkDir = options.workDir === undefined;
  const workDir = resolve(options.workDir ?? join(tmpdir(), `cpost-${runId}`));
  const inputDir = resolve(options.inputDir);
  const sinks = defineSinkFanout(options.sinks, log.warn, { endTimeoutMs: options.sinkEndTimeoutMs });
  const builders = new Map<string, SummaryBuilder>();
  const originMs = performance.now();
  const sampler = new Sampler({
    intervalMs: options.intervalMs,
    collectors: options.collectors,
    batchMs: options.batchMs,
    originMs,
    onWarning: (message) => log.warn(message),
    onBatch: (batch: SampleBatch) => {
      builders.get(batch.operator)?.add(batch);
      void sinks.call("write", (s) => s.write(batch), batch);
    },
  });
  sampler.ready(); // the sampling thread's start-up, before the first container rather than in its first samples
  const output = defineOperatorOutput({ engine, metricsDir: options.metricsDir, live: options.verbose && !options.quiet, quiet: options.quiet ?? false, out: (options.out ?? process.stdout) as OutputTarget, operators: pipeline.order.map((op) => op.name), warn: log.warn });
  const results: OperatorResult[] = [];
  const summaries: OperatorSummary[] = [];
  const lateCleanups: Promise<unknown>[] = [];
  let started = false;
  let interrupted = false;
  const startedAtMs = Date.now();

  try {
    prepareWorkDir(pipeline, workDir);
    if (ownWorkDir && !options.keepOutputs) writeFileSync(join(workDir, OWNER_FILE), JSON.stringify({ pid: process.pid, host: hostname(), run: runId }));
    const tritonEnv = triton ? await startTriton(engine, triton, { labels, runId, gpus, log, signal }) : {};
    const info: RunInfo = {
      id: runId,
      pipeline,
      host: { hostname: hostname(), cpus: availableParallelism(), memoryBytes: totalmem(), kernel: release(), arch: process.arch, cgroupVersion: engine.info.cgroupVersion, engine: engine.info.engine, engineVersion: engine.info.version },
      collectors: options.collectors.map((c) => c.name),
      sinks: options.sinkNames ?? options.sinks.map((s) => s.name),
      intervalMs: options.intervalMs,
      startedAtMs,
      ...(options.metricsDir === undefined ? {} : { metricsDir: resolve(options.metricsDir) }),
      cpostVersion: VERSION,
    };
    started = true;
    await sinks.call("start", (s) => s.start(info));

    const failed = new Map<string, string>(); // operator -> why its outputs are missing
    let stopped: string | undefined;
    for (const op of pipeline.order) {
      await sinks.call("operatorStart", (s) => s.operatorStart?.(op));
      const builder = new SummaryBuilder(op.name, { policy: options.sizing?.policy, host: { cpus: info.host.cpus } });
      builders.set(op.name, builder);
      const missing = upstreamsOf(op).filter((u) => failed.has(u));
      let result: OperatorResult;
      if (interrupted || signal.aborted) {
        interrupted = true;
        result = skipped(op, "not run: cpost was interrupted");
      } else if (stopped !== undefined) {
        result = skipped(op, `not run: the pipeline stopped after ${stopped} failed`);
        log.info(`Operator ${op.name} ${result.reason}`);
      } else if (missing.length > 0) {
        result = skipped(op, `skipped: its input from ${missing.map((u) => `${u} (${failed.get(u)})`).join(", ")} is missing`);
        log.info(`Operator ${op.name} ${result.reason}`);
      } else {
        log.info(`\n${centre(`Executing Operator ${op.name}`)}`);
        result = await runWithOomRetry(op, options.sizing, log.info, (limits) => runOperator(op, { engine, options, pipeline, inputDir, workDir, labels, runId, tritonEnv, gpus, sampler, log, signal, lateCleanups, limits, output }));
      }
      if (result.status === "interrupted") interrupted = true;
      if (result.status !== "succeeded") failed.set(op.name, result.status === "failed" ? "failed" : result.status);
      const summary = builder.build(result);
      results.push(result);
      summaries.push(summary);
      await sinks.call("operatorDone", (s) => s.operatorDone(result, summary));
      if (result.status === "failed") {
        if (result.exitCode !== null) log.info(`Operator ${op.name} failed with exitcode ${result.exitCode}`);
        if (!(await keepGoing(op, options, log, signal))) stopped = op.name;
      }
    }
  } catch (thrown) {
    if (signal.aborted) interrupted = true;
    else {
      await finishRun().catch((e: unknown) => log.warn(`cleanup after the failure: ${(e as Error).message}`));
      throw thrown;
    }
  }
  const result = await finishRun();
  if (interrupted) {
    throw new CpostError("interrupted", `interrupted: stopped the running operator and removed the containers of run ${runId}`);
  }
  return result;

  async function finishRun(): Promise<RunResult> {
    const interval = sampler.intervals();
    sampler.close();
    const result: RunResult = { results, summaries, endedAtMs: Date.now(), interval, interrupted: interrupted || signal.aborted };
    // The end hook sees the final losses: the session calls it once every sink caught up or was given up on.
    if (started) await untilForced(sinks.call("end", (s) => s.end(withLosses(result, sinks.losses()))), options.forceSignal);
    Object.assign(result, withLosses(result, sinks.losses()));
    await untilForced(Promise.all(lateCleanups), options.forceSignal);
    await removeRun(engine, runId, log, options.forceSignal);
    if (ownWorkDir && !options.keepOutputs) rmSync(workDir, { recursive: true, force: true });
    else if (existsSync(workDir)) log.info(`Operator outputs are kept in ${workDir}`);
    sinks.reportSuppressed();
    return result;
  }
}

/** The run result with what each sink lost, where one lost anything. */
function withLosses(result: RunResult, losses: NonNullable<RunResult["sinkLosses"]>): RunResult {
  return losses.length > 0 ? { ...result, sinkLosses: losses } : result;
}

interface OperatorContext {
  engine: DockerClient;
  options: RunOptions;
  pipeline: Pipeline;
  inputDir: string;
  workDir: string;
  labels: Record<string, string>;
  runId: string;
  tritonEnv: Record<string, string>;
  gpus: boolean;
  sampler: Sampler;
  log: Console;
  signal: AbortSignal;
  /** Removals of containers the engine made after their start timed out; awaited before the run ends. */
  lateCleanups: Promise<unknown>[];
  /** Limits of this attempt (`--enforce-requests`, `--retry-oom`). */
  limits: ContainerLimits;
  /** The run's operator output: shown live, kept, the last lines of a failure. */
  output: OperatorOutput;
}

async function runOperator(op: Operator, ctx: OperatorContext): Promise<OperatorResult> {
  const { engine, options, log, signal } = ctx;
  const startedAtMs = Date.now();
  const base = { operator: op.name, startedAtMs };
  const mounts = mountsFor(ctx.pipeline, op, ctx.inputDir, ctx.workDir).map((m) => ({ source: m.hostPath, target: m.containerPath, readOnly: m.readOnly }));
  const gpuCount = op.requests.gpu ?? 0;
  const spec = {
    name: `cpost-${ctx.runId}-${op.name}`,
    image: `${op.image}:${op.tag}`,
    cmd: op.command,
    env: { ...op.variables, NVIDIA_CLARA_NOSYNCLOCK: "1", ...(op.needsTriton ? ctx.tritonEnv : {}) },
    labels: { ...ctx.labels, "cpost.operator": op.name },
    mounts,
    network: op.needsTriton ? TRITON_NETWORK : undefined,
    gpus: gpuCount > 0 && ctx.gpus ? gpuCount : undefined,
    ...limitSpec(ctx.limits),
  };
  log.debug(`Container for operator ${op.name}: ${JSON.stringify({ image: spec.image, cmd: spec.cmd, env: spec.env, mounts: spec.mounts, network: spec.network })}`);
  log.info("Running operator ...");

  const limitMs = options.startTimeoutMs ?? START_TIMEOUT_MS;
  let id = "";
  let watch: Watch | undefined;
  const attempt = (async () => {
    id = await engine.createContainer(spec, signal);
    // Watched before it starts: the sampler opens its cgroup the moment runc makes it, so an
    // operator of a few milliseconds, gone before start() returns, still has samples.
    watch = ctx.sampler.watch({ kind: "container", containerId: id, pid: 0, engine: engine.info.engine, cgroupDriver: engine.info.cgroupDriver, operator: op.name }, { pending: true });
    await engine.startContainer(id, signal);
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((done) => (timer = setTimeout(() => done("late"), limitMs)));
  try {
    if ((await Promise.race([attempt, late])) === "late") {
      // The engine may still make it: remove it whenever it does, so it cannot outlive the run.
      ctx.lateCleanups.push(attempt.then(() => undefined, () => undefined).then(() => (watch?.stop(), id ? engine.removeContainer(id, { force: true }) : undefined)).catch(() => undefined));
      const why = `its container could not be created and started within ${limitMs / 1000} s (the original CPOST's exit code -15)`;
      log.info(`Operator ${op.name} failed: ${why}`);
      return { ...base, containerId: id, status: "failed", exitCode: null, reason: why, endedAtMs: Date.now() };
    }
  } catch (thrown) {
    watch?.stop();
    if (id) await engine.removeContainer(id, { force: true, signal: cleanupSignal(options.forceSignal) }).catch(() => undefined);
    if (signal.aborted) return { ...base, containerId: id, status: "interrupted", exitCode: null, reason: "interrupted before it started", endedAtMs: Date.now() };
    const why = `the engine could not start its container: ${asCpostError(thrown).message}`;
    log.info(`Operator ${op.name} failed: ${why}`);
    return { ...base, containerId: id, status: "failed", exitCode: null, reason: why, endedAtMs: Date.now() };
  } finally {
    clearTimeout(timer);
  }
  log.info(`The container id is: ${id}`);
  const output = ctx.output.follow(op.name, id, signal);

  try {
    const state = await engine.inspectContainer(id, signal);
    watch!.setPid(state.pid);
    const outagesBefore = engine.outages ?? 0;
    const exit = await engine.waitContainer(id, signal);
    await watch!.finish(FINISH_GRACE_MS);
    for (const source of watch!.sources) log.debug(`Sampled ${op.name}: ${source}`);
    // Removed from outside (`docker rm -f`): its exit code is all there is left to know.
    const after = await engine.inspectContainer(id, signal).catch((e: unknown) => {
      if (engineAnswer(e)?.status === 404) return { oomKilled: false, removed: true };
      throw e;
    });
    const kept = await output.finish();
    const lastLines = exit.exitCode !== 0 && !("removed" in after) ? await output.failureLines(signal) : undefined;
    await engine.removeContainer(id, { force: true, signal });
    const endedAtMs = Date.now();
    if (exit.exitCode === 0) return { ...base, containerId: id, status: "succeeded", exitCode: 0, oomKilled: after.oomKilled, endedAtMs, ...kept };
    log.info(`Operator failed with exitcode is: ${exit.exitCode}`);
    if (lastLines !== undefined) log.info(lastLines);
    const engineWentAway = (engine.outages ?? 0) > outagesBefore;
    const why = after.oomKilled ? ": killed for lack of memory (OOM)" : "removed" in after ? ": its container was removed from outside cpost" : engineWentAway ? ": the engine went away while it ran (stopped or restarted)" : exit.error ? `: ${exit.error}` : "";
    const reason = `exit code ${exit.exitCode}${why}`;
    return { ...base, containerId: id, status: "failed", exitCode: exit.exitCode, reason, oomKilled: after.oomKilled, endedAtMs, ...kept };
  } catch (thrown) {
    watch?.stop();
    // Interrupted (or the engine failed mid-run): the container must not outlive cpost.
    await engine.killContainer(id, "SIGKILL", cleanupSignal(options.forceSignal)).catch(() => undefined);
    await engine.removeContainer(id, { force: true, signal: cleanupSignal(options.forceSignal) }).catch(() => undefined);
    const kept = await output.finish();
    if (!signal.aborted) throw thrown;
    log.info(`Operator ${op.name} interrupted`);
    return { ...base, containerId: id, status: "interrupted", exitCode: null, reason: "interrupted", endedAtMs: Date.now(), ...kept };
  }
}

function skipped(op: Operator, reason: string): OperatorResult {
  const now = Date.now();
  return { operator: op.name, containerId: "", status: "skipped", exitCode: null, reason, startedAtMs: now, endedAtMs: now };
}

/** After a failure: --force cont goes on, stop stops, none asks on a TTY and stops without one. */
async function keepGoing(op: Operator, options: RunOptions, log: Console, signal: AbortSignal): Promise<boolean> {
  if (options.force === "cont") return true;
  if (options.force === "stop") {
    log.info(`Stopping: operator ${op.name} failed and --force stop was given`);
    return false;
  }
  if (options.confirm) return options.confirm(PROMPT, signal);
  if (!process.stdin.isTTY) {
    log.warn(`operator ${op.name} failed and stdin is not a terminal, so cpost cannot ask whether to continue: stopping (pass --force cont to run the rest anyway, --force stop to stop without asking)`);
    return false;
  }
  return askYesNo(PROMPT, signal);
}

async function askYesNo(question: string, signal: AbortSignal): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  // Ctrl-C at the prompt reaches readline, not the process: turn it into the run's interrupt.
  rl.on("SIGINT", () => process.kill(process.pid, "SIGINT"));
  try {
    for (;;) {
      const reply = (await rl.question(`${question} (y/n): `, { signal })).trim().toLowerCase();
      if (reply.startsWith("y")) return true;
      if (reply.startsWith("n")) return false;
    }
  } catch {
    return false;
  } finally {
    rl.close();
  }
}

// ---------------------------------------------------------------- images, Triton, cleanup

async function ensureImages(engine: DockerClient, images: string[], log: Console, signal: AbortSignal): Promise<void> {
  for (const image of images) {
    if (await engine.imageExists(image, signal)) continue;
    log.info(`Image ${image} is not on this machine: pulling it ...`);
    let last = "";
    await engine.pullImage(image, {
      signal,
      onProgress: (p) => {
        if (p.status !== last && !p.progress) log.debug(`  ${p.id ? `${p.id}: ` : ""}${p.status}`);
        last = p.status;
      },
    });
  }
}

interface TritonPlan {
  image: string;
  command: string[];
  modelsDir: string;
}

function tritonPlan(options: RunOptions): TritonPlan {
  const ops = options.pipeline.order.filter((op) => op.needsTriton);
  const service = ops.flatMap((op) => op.services).find((s) => isTritonService(s.name) && s.image);
  const models = [...new Set(ops.flatMap((op) => op.models))];
  return {
    image: options.tritonImage ?? (service?.image ? `${service.image}:${service.tag ?? "latest"}` : DEFAULT_TRITON_IMAGE),
    command: options.tritonCommand ?? service?.command ?? ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit", ...models.map((m) => `--load-model=${m}`)],
    modelsDir: resolve(options.modelsDir!),
  };
}

/** Starts Triton on cpost_net and waits until it answers ready; the env its clients get. */
async function startTriton(
  engine: DockerClient,
  plan: TritonPlan,
  ctx: { labels: Record<string, string>; runId: string; gpus: boolean; log: Console; signal: AbortSignal },
): Promise<Record<string, string>> {
  const { log, signal } = ctx;
  await ensureNetwork(engine, ctx.labels, signal);
  log.info(`Starting Triton (${plan.image}) on network ${TRITON_NETWORK} ...`);
  const id = await engine.createContainer(
    {
      name: `cpost-${ctx.runId}-triton`,
      image: plan.image,
      cmd: plan.command,
      env: { NVIDIA_CLARA_NOSYNCLOCK: "1" },
      labels: { ...ctx.labels, "cpost.service": "triton" },
      mounts: [{ source: plan.modelsDir, target: "/models", readOnly: true }],
      network: TRITON_NETWORK,
      gpus: ctx.gpus ? 1 : undefined,
    },
    signal,
  );
  await engine.startContainer(id, signal);
  const ip = (await engine.inspectContainer(id, signal)).ipAddresses[TRITON_NETWORK];
  if (!ip) throw new CpostError("engine", `Triton started but has no address on ${TRITON_NETWORK}`, { hint: `check the network with \`docker network inspect ${TRITON_NETWORK}\`` });
  const deadline = Date.now() + TRITON_READY_TIMEOUT_MS;
  for (;;) {
    try {
      const res = await fetch(`http://${ip}:8000/v2/health/ready`, { signal: AbortSignal.any([signal, AbortSignal.timeout(1000)]) });
      await res.body?.cancel();
      if (res.ok) break;
    } catch {
      if (signal.aborted) throw new CpostError("interrupted", "interrupted while Triton was starting");
    }
    const state = await engine.inspectContainer(id, signal);
    if (!state.running) {
      throw new CpostError("engine", `Triton (${plan.image}) exited with code ${state.exitCode} before it was ready`, { hint: "run cpost with -v, or check the models in --models_dir" });
    }
    if (Date.now() > deadline) {
      throw new CpostError("engine", `Triton (${plan.image}) did not answer ready on ${ip}:8000 within ${TRITON_READY_TIMEOUT_MS / 1000} s`, { hint: "check the models in --models_dir and that no other Triton runs on this machine" });
    }
    await Bun.sleep(250);
  }
  log.debug(`Triton is ready at ${ip}:8000`);
  return {
    NVIDIA_TRITON_HTTPURI: `${ip}:8000`,
    CLARA_TRITON_URI: `${ip}:8000`,
    NVIDIA_CLARA_TRTISURI: `${ip}:8000`,
    NVIDIA_TRITON_GRPCURI: `${ip}:8001`,
  };
}

/** cpost_net: made here, or reused when cpost made it; someone else's is an error that says how to remove it. */
async function ensureNetwork(engine: DockerClient, labels: Record<string, string>, signal: AbortSignal): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const existing = await engine.findNetwork(TRITON_NETWORK, signal);
    if (existing) {
      if (existing.labels["cpost.run"] !== undefined) return;
      throw new CpostError("engine", `network ${TRITON_NETWORK} already exists and was not created by cpost`, {
        hint: `remove it with \`docker network rm ${TRITON_NETWORK}\` (check \`docker network ls\`), then run cpost again`,
      });
    }
    try {
      await engine.createNetwork(TRITON_NETWORK, labels, signal);
      return;
    } catch (error) {
      // Another cpost made it between our look and our create: look again.
      if (attempt > 0 || !/already exists/i.test((error as Error).message)) throw error;
    }
  }
}

function prepareWorkDir(pipeline: Pipeline, workDir: string): void {
  mkdirSync(workDir, { recursive: true, mode: 0o755 });
  for (const op of pipeline.order) {
    op.outputs.forEach((_, index) => {
      const dir = outputHostDir(workDir, op, index);
      mkdirSync(dir, { recursive: true });
      // Whatever user the operator's image runs as must be able to write its outputs.
      chmodSync(dir, 0o777);
    });
  }
}

/** Removes containers and networks of runs whose cpost process on this host is gone. */
async function removeLeftovers(engine: DockerClient, log: Console, signal: AbortSignal): Promise<void> {
  const host = hostname();
  const dead = (labels: Record<string, string>) => labels["cpost.host"] === host && !isAlive(Number(labels["cpost.pid"]));
  const containers = (await engine.listContainers(["cpost.run"], signal)).filter((c) => dead(c.labels));
  const networks = (await engine.listNetworks(["cpost.run"], signal)).filter((n) => dead(n.labels));
  removeDeadWorkDirs(log);
  if (containers.length + networks.length === 0) return;
  const runs = [...new Set([...containers, ...networks].map((x) => x.labels["cpost.run"]))];
  log.warn(`removing ${containers.length} container(s) and ${networks.length} network(s) left by ended cpost run(s) ${runs.join(", ")}`);
  for (const c of containers) await engine.removeContainer(c.id, { force: true, signal });
  for (const n of networks) await engine.removeNetwork(n.id, signal).catch((e: unknown) => log.warn(`could not remove network ${n.name}: ${(e as Error).message}`));
}

/** In a work dir cpost made and will remove: who made it, so a later run can remove it should this one be killed. */
const OWNER_FILE = ".cpost-owner";

/** Removes `cpost-<run>` work dirs in the temp dir whose cpost process on this host is gone (killed before it could). */
function removeDeadWorkDirs(log: Console): void {
  const host = hostname();
  let names: string[];
  try {
    names = readdirSync(tmpdir());
  } catch {
    return;
  }
  for (const name of names) {
    const runId = /^cpost-([0-9a-f]{12})$/.exec(name)?.[1];
    if (!runId) continue;
    const dir = join(tmpdir(), name);
    let owner: { pid?: unknown; host?: unknown };
    try {
      if (!lstatSync(dir).isDirectory()) continue;
      owner = JSON.parse(readFileSync(join(dir, OWNER_FILE), "utf8")) as typeof owner;
    } catch {
      continue; // not ours to judge: no owner file (kept outputs, or not made by cpost)
    }
    if (owner.host !== host || isAlive(Number(owner.pid))) continue;
    try {
      rmSync(dir, { recursive: true, force: true });
      log.warn(`removed the work dir ${dir} of ended cpost run ${runId}`);
    } catch (error) {
      log.warn(`could not remove the work dir ${dir} of ended cpost run ${runId}: ${(error as Error).message}`);
    }
  }
}

function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** What cleanup requests wait on: nothing, until a second interrupt; then a second at most each. */
function cleanupSignal(forceSignal: AbortSignal | undefined): AbortSignal | undefined {
  return forceSignal?.aborted ? AbortSignal.timeout(1000) : forceSignal;
}

/** Removes every container and network of this run; after a forced (second) interrupt, only quick attempts. */
async function removeRun(engine: DockerClient, runId: string, log: Console, forceSignal: AbortSignal | undefined): Promise<void> {
  const quick = () => cleanupSignal(forceSignal);
  try {
    const containers = await engine.listContainers([`cpost.run=${runId}`], quick());
    await Promise.all(containers.map((c) => engine.removeContainer(c.id, { force: true, signal: quick() })));
    for (const n of await engine.listNetworks([`cpost.run=${runId}`], quick())) {
      await engine.removeNetwork(n.id, quick()).catch((e: unknown) => {
        // Another live cpost run may still have containers on a network it reused from us.
        log.warn(`could not remove network ${n.name}: ${(e as Error).message}`);
      });
    }
  } catch (error) {
    log.warn(`cleanup of run ${runId} incomplete: ${(error as Error).message}; remove what is left with \`docker rm -f $(docker ps -aq --filter label=cpost.run=${runId})\``);
  }
}

async function untilForced(work: Promise<unknown>, forceSignal: AbortSignal | undefined): Promise<void> {
  if (!forceSignal) return void (await work);
  if (forceSignal.aborted) return;
  await new Promise<void>((done) => {
    const onForce = () => done();
    forceSignal.addEventListener("abort", onForce, { once: true });
    work.then(
      () => (forceSignal.removeEventListener("abort", onForce), done()),
      () => (forceSignal.removeEventListener("abort", onForce), done()),
    );
  });
}

// ---------------------------------------------------------------- sinks and console

interface Console {
  info(line: string): void;
  debug(line: string): void;
  warn(line: string): void;
}

function defineConsole(options: RunOptions): Console {
  const out = options.out ?? process.stdout;
  // On a terminal a progress line may be drawn where the cursor is: clear it before writing.
  const clear = (out as { isTTY?: boolean }).isTTY ? "\r\x1b[2K" : "";
  const warn = options.warn ?? ((message: string) => process.stderr.write(`${clear}warning: ${message}\n`));
  return {
    info: (line) => {
      if (!options.quiet) out.write(`${clear}${line}\n`);
    },
    debug: (line) => {
      if (options.verbose && !options.quiet) out.write(`${clear}${line}\n`);
    },
    warn,
  };
}

/** A title centred in 60 underscores, as Python's "{:_^60}" did for the original's banners. */
export function centre(title: string, width = 60): string {
  const pad = Math.max(0, width - title.length);
  const left = Math.floor(pad / 2);
  return `${"_".repeat(left)}${title}${"_".repeat(pad - left)}`;
}

// ---------------------------------------------------------------- signals

/**
 * SIGINT/SIGTERM for a run: the first aborts `signal` (stop, flush, clean
 * up), the second aborts `forceSignal` (stop waiting on cleanup). Call
 * `dispose` when the run is over.
 */
export function interruptSignals(onFirst?: (name: string) => void): { signal: AbortSignal; forceSignal: AbortSignal; dispose(): void } {
  const first = new AbortController();
  const second = new AbortController();
  const handler = (name: NodeJS.Signals) => {
    if (!first.signal.aborted) {
      onFirst?.(name);
      first.abort(new CpostError("interrupted", `interrupted by ${name}`));
    } else second.abort(new CpostError("interrupted", `interrupted again by ${name}: forcing`));
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
  return {
    signal: first.signal,
    forceSignal: second.signal,
    dispose() {
      process.off("SIGINT", handler);
      process.off("SIGTERM", handler);
    },
  };
}
