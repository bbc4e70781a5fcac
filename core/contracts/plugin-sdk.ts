/**
 * The plugin SDK: what a collector or sink plugin file imports from "cpost".
 *
 *   import { defineCollector } from "cpost";
 *   export default defineCollector({ name: "my-metrics", description: "…", metrics: [...], open(target, { options }) { … } });
 *
 * `defineCollector` and `defineSink` return their argument unchanged: they
 * exist for the types. A plugin needs nothing of cpost at run time; the
 * binary hands it what it needs through its hooks' arguments (the target,
 * the options, the run). When a plugin imports these functions as values,
 * the binary serves the module "cpost" itself (core/registry/plugin-loader.ts), so a
 * plugin works with or without cpost installed beside it. See docs/plugins.md.
 */
import type { Availability, Collector, MetricSpec, Operator, OperatorResult, OperatorSummary, Probe, RunInfo, RunResult, SampleBatch, Target, Unavailable } from "./types.ts";
import { columnKey, isUnavailable } from "./types.ts";

/** The contracts of core/contracts/types.ts a plugin deals in. */
export type {
  Availability,
  Collector,
  MetricBuffer,
  MetricColumn,
  MetricSpec,
  MetricStats,
  MetricUnit,
  Operator,
  OperatorResult,
  OperatorStatus,
  OperatorSummary,
  Pipeline,
  Probe,
  Recommendation,
  RunInfo,
  RunResult,
  SampleBatch,
  Sink,
  Target,
  Unavailable,
} from "./types.ts";
export { columnKey, isUnavailable };

/** One option of a plugin, given on the command line as `--<plugin>-<option> VALUE`. */
export interface PluginOption {
  /** One line for `cpost plugins`. */
  description: string;
  /** The value when the flag is not given. */
  default?: string;
  /** Without it (and without a default) the run stops before anything starts, naming the flag. */
  required?: boolean;
}

/** A plugin's options by name (kebab-case: `timeout-ms` is `--<plugin>-timeout-ms`). */
export type PluginOptions = Record<string, PluginOption>;

/** The option values a plugin receives: a string where the option is required or has a default. */
export type OptionValues<O extends PluginOptions> = {
  readonly [K in keyof O]: O[K] extends { required: true } ? string : O[K] extends { default: string } ? string : string | undefined;
};

/** What a collector's `open` gets beside the target. */
export interface CollectorContext<O extends PluginOptions = PluginOptions> {
  readonly options: OptionValues<O>;
}

/**
 * A collector plugin. `open` is called once per watched container (off the
 * hot path; slow work belongs here) and returns a Probe, or `{ unavailable:
 * "why" }` when it cannot watch this target. The probe's `read` is the hot
 * path, called up to 1000 times a second from the sampling thread: fill
 * `out.values[out.base + i]` for each of the probe's metrics, allocate
 * nothing, never await, and return false (not throw) once the target is
 * gone. A collector that throws is disabled for the rest of the run with one
 * warning. The plugin file is loaded a second time in the sampling thread,
 * so keep state inside `open`, not in module variables shared with sinks.
 * `target.pid` may still be 0 at `open` (a watch begun as the container
 * starts): cpost sets it on the same target object once the engine tells
 * it, so a probe that needs the pid reads `target.pid` in `read`.
 */
export interface CollectorPlugin<O extends PluginOptions = PluginOptions> {
  /** As users type it in `--collectors`: lowercase letters, digits and '-'. */
  readonly name: string;
  readonly description: string;
  /** Every metric it can report (a probe may report a subset). */
  readonly metrics: readonly MetricSpec[];
  readonly options?: O;
  open(target: Target, context: CollectorContext<O>): Probe | Unavailable;
  /** Releases host-wide resources when cpost ends. */
  dispose?(): void;
  /**
   * Whether it can work on this host at all (a library, a device), asked
   * once before anything starts. Named in --collectors and answering
   * `{ ok: false, reason }`, it stops the run with exit 2 and the reason;
   * the monitor's defaults take it only where it answers `{ ok: true }`.
   */
  available?(): Availability;
}

/** What a sink's `create` gets: its options and where cpost writes. */
export interface SinkContext<O extends PluginOptions = PluginOptions> {
  readonly options: OptionValues<O>;
  /** `--metrics_dir`, when given: where file outputs belong. */
  readonly metricsDir?: string;
  /** The run's standard output (`isTTY` and `columns` as a terminal's stream has them). */
  readonly out: { write(text: string): unknown; readonly isTTY?: boolean; readonly columns?: number };
}

/**
 * The hooks of one sink instance, called in this order and never
 * concurrently, each awaited: `start` once; per operator `operatorStart`,
 * `write` for each batch (in time order; batches are immutable), and
 * `operatorDone` (also for failed and skipped operators); `end` once, also
 * after a failure or an interrupt. A hook that throws is reported with the
 * sink's name and hook; the sink then gets no more calls but `end`, and the
 * other sinks go on. Every hook is optional.
 */
export interface SinkHooks {
  start?(run: RunInfo): void | Promise<void>;
  operatorStart?(operator: Operator): void | Promise<void>;
  write?(batch: SampleBatch): void | Promise<void>;
  operatorDone?(result: OperatorResult, summary: OperatorSummary): void | Promise<void>;
  end?(result: RunResult): void | Promise<void>;
}

/** A sink plugin: `create` makes one instance per run (check options here: a throw stops the run before it starts). */
export interface SinkPlugin<O extends PluginOptions = PluginOptions> {
  /** As users type it in `--sinks`: lowercase letters, digits and '-'. */
  readonly name: string;
  readonly description: string;
  readonly options?: O;
  create(context: SinkContext<O>): SinkHooks | Promise<SinkHooks>;
}

/** Declares a collector plugin (returns it unchanged; for the types). */
export function defineCollector<const O extends PluginOptions = {}>(plugin: CollectorPlugin<O>): CollectorPlugin<O> {
  return plugin;
}

/**
 * A built-in collector's definition as the Collector the sampler runs: no
 * wrapping (a built-in's hot path is trusted, a plugin's is guarded by the
 * plugin loader), and `portable`, the recipe the sampler's worker rebuilds
 * it from (the registry name, and the settings its module's `create` takes).
 */
export function builtinCollector(definition: CollectorPlugin, portable: NonNullable<Collector["portable"]>): Collector {
  const context = { options: {} } as CollectorContext;
  return {
    name: definition.name,
    description: definition.description,
    metrics: definition.metrics,
    portable,
    open: (target) => definition.open(target, context),
    ...(definition.dispose ? { dispose: () => definition.dispose!() } : {}),
    ...(definition.available ? { available: () => definition.available!() } : {}),
  };
}

/** Declares a sink plugin (returns it unchanged; for the types). */
export function defineSink<const O extends PluginOptions = {}>(plugin: SinkPlugin<O>): SinkPlugin<O> {
  return plugin;
}
