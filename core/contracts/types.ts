/**
 * The contracts between cpost's parts. Collectors read, sinks write, the
 * sampler owns time, the runner owns containers; none knows the others'
 * insides, only these types.
 */

// ---------------------------------------------------------------- pipeline

/** One `input[]` entry of an operator. */
export interface OperatorInput {
  /** Upstream operator whose output is mounted here; absent = the user's input dir. */
  from?: string;
  /** With `from`: which named output of the upstream operator. */
  name?: string;
  /** Absolute path inside the container. */
  path: string;
}

/** One `output[]` entry of an operator. */
export interface OperatorOutput {
  name?: string;
  /** Absolute path inside the container. */
  path: string;
}

/** `requests` of an operator: what it asks the scheduler for. */
export interface Requests {
  cpu?: number;
  gpu?: number;
  /** Megabytes, as Clara pipelines give it. */
  memory?: number;
}

/** A service (e.g. Triton) an operator needs beside it. */
export interface OperatorService {
  name: string;
  image?: string;
  tag?: string;
  command?: string[];
}

/** An operator of a pipeline, as parsed and checked. */
export interface Operator {
  name: string;
  description?: string;
  image: string;
  tag: string;
  /** argv for the container; absent = the image's default. Never run through a shell. */
  command?: string[];
  /** Environment variables for the container. */
  variables: Record<string, string>;
  inputs: OperatorInput[];
  outputs: OperatorOutput[];
  requests: Requests;
  services: OperatorService[];
  /** Model names (Triton) the operator uses. */
  models: string[];
  /** True when the operator needs a Triton server (models, or a service whose name contains triton or trtis). */
  needsTriton: boolean;
  /** Where the operator starts in the file (1-based). */
  line: number;
}

/** A parsed, checked pipeline definition. */
export interface Pipeline {
  /** The file it came from (as given by the user). */
  file: string;
  apiVersion: string;
  name: string;
  /** Operators in file order. */
  operators: Operator[];
  /** Operators in execution order (topological over `from`, stable in file order). */
  order: Operator[];
}

// ---------------------------------------------------------------- metrics

/** Units cpost reports in. */
export type MetricUnit = "ns" | "percent" | "bytes" | "count" | "ops" | "watts" | "celsius" | "mhz" | "us" | "ratio";

/**
 * One metric a probe reports. `kind: "counter"` values only grow
 * (cumulative since the container started); gauges are point readings.
 */
export interface MetricSpec {
  /** Stable dotted name of DESIGN.md, e.g. `cpu.percent`, `memory.working_set_bytes`. */
  name: string;
  unit: MetricUnit;
  kind: "gauge" | "counter";
  /** For per-device metrics (GPU): the device index. */
  device?: number;
  /** One line for `cpost plugins` and reports. */
  description?: string;
}

/** A metric as a column of a series: the spec plus its position and owner. */
export interface MetricColumn extends MetricSpec {
  /** Unique in a series: `name`, or `name[device]` for per-device metrics. */
  key: string;
  /** The collector that produced it. */
  collector: string;
}

/** Column key of a metric: `name`, or `name[device]` for per-device metrics. */
export function columnKey(spec: Pick<MetricSpec, "name" | "device">): string {
  return spec.device === undefined ? spec.name : `${spec.name}[${spec.device}]`;
}

/**
 * The row a probe fills during one sample. Each probe owns the slots
 * `values[base .. base + probe.metrics.length)`; a slot left NaN means
 * "not measured this time".
 */
export interface MetricBuffer {
  readonly values: Float64Array;
  /** Index of the reading probe's first slot. */
  base: number;
  /** Monotonic time of this sample in ms (performance.now() clock). */
  monotonicMs: number;
}

// ---------------------------------------------------------------- collectors

/** What a collector is asked to watch. */
export interface Target {
  kind: "container" | "host";
  /** Full container id (empty for a host target). */
  containerId: string;
  /** Host pid of the container's init process (0 when unknown or host). */
  pid: number;
  /** Which engine runs it; decides where its cgroup lives. */
  engine: "docker" | "podman";
  /** The engine's cgroup driver, from GET /info. */
  cgroupDriver?: "cgroupfs" | "systemd";
  /** The operator this container runs (empty for a host target). */
  operator: string;
}

/**
 * An open reading of one target by one collector.
 *
 * Lifecycle: the sampler calls `read` once per sample, from one thread,
 * never concurrently, until `read` returns false or the watch ends; then
 * `close` exactly once. `read` is the hot path: it must not allocate, must
 * not await, and must not throw for a target that went away (return false:
 * its series ends cleanly). An exception from `read` is a bug in the
 * collector; the sampler disables that probe with one warning.
 */
export interface Probe {
  /** Fixed when opened; the probe writes exactly these slots, in this order. */
  readonly metrics: readonly MetricSpec[];
  /** Where the numbers come from, for the output (e.g. "cgroup v1", "/proc/<pid>/io"). */
  readonly source: string;
  /** Fills this probe's slots of `out`. False: the target is gone, stop reading. */
  read(out: MetricBuffer): boolean;
  /** Releases files and handles. Called once; never throws. */
  close(): void;
}

/** Why a collector cannot watch a target here. */
export interface Unavailable {
  unavailable: string;
  /**
   * Paths whose appearance would make the target available (a container's
   * cgroup directories before it starts). A watch begun before the
   * container's start opens again once all exist, instead of warning.
   * Optional; absent = not available here, said once.
   */
  waitFor?: readonly string[];
}

/**
 * A source of metrics (cgroup files, /proc, NVML, a plugin).
 *
 * Lifecycle: `open` is called once per target, off the hot path, and may do
 * slow work (find files, open handles); it returns a Probe, or an
 * Unavailable with the reason (never throws for "not available here").
 */
export interface Collector {
  readonly name: string;
  readonly description: string;
  /** The metrics it can report, for `cpost plugins` (probes may report a subset). */
  readonly metrics: readonly MetricSpec[];
  open(target: Target): Probe | Unavailable;
  /** Host-wide resources to release when cpost ends (e.g. nvmlShutdown). Optional. */
  dispose?(): void;
  /**
   * Whether it can work on this host at all (a library, a device), asked
   * once before anything starts, off the hot path. A collector the user
   * named that answers `ok: false` stops `cpost run` and `cpost monitor`
   * with exit 2 and the reason; the monitor's defaults take it where it
   * answers `ok: true`. Optional: absent means it always can.
   */
  available?(): Availability;
  /**
   * How the sampler's worker thread makes its own instance (probes cannot
   * cross threads): `module` is a built-in's registry name (e.g. "cgroup")
   * or a plugin's file URL; the worker calls that module's `create(options)`
   * export if it has one, else takes its default export. Absent: a
   * built-in is rebuilt from the registry by its name; with any other, the
   * run samples on the main thread (intervals less steady). Optional.
   */
  readonly portable?: { module: string; options?: Record<string, string | number | boolean | undefined> };
}

/** A collector's answer to `available()`. */
export type Availability = { ok: true } | { ok: false; reason: string };

export function isUnavailable(x: Probe | Unavailable): x is Unavailable {
  return (x as Unavailable).unavailable !== undefined;
}

// ---------------------------------------------------------------- samples

/**
 * A batch of samples of one container, in time order. Batches are
 * immutable once handed to sinks: a sink may keep them.
 */
export interface SampleBatch {
  operator: string;
  containerId: string;
  /** The same array object for every batch of one container's series. */
  columns: readonly MetricColumn[];
  rows: number;
  /** Wall-clock time of each row: Unix epoch milliseconds (true UTC epoch, with fraction). */
  timestampMs: Float64Array;
  /** Monotonic time of each row in ms since the run started. */
  monotonicMs: Float64Array;
  /** rows × columns.length values, row-major; NaN = not measured. */
  values: Float64Array;
}

/** Aggregates of one metric over an operator's samples. */
export interface MetricStats {
  key: string;
  name: string;
  unit: MetricUnit;
  device?: number;
  count: number;
  mean: number;
  max: number;
  min: number;
  last: number;
}

/** What sizing recommends for an operator's `requests`. */
export interface Recommendation {
  cpu: number;
  /** MB, a multiple of 256 by the CPOST rule. */
  memory: number;
  gpu?: number;
  /** The policy that produced it (e.g. "cpost"). */
  policy: string;
  /** Notes such as "lower bound: OOM killed". */
  notes: string[];
  /** What it was computed from (rule, samples, peaks), so a recording can be checked or re-sized. Optional. */
  evidence?: SizingEvidence;
  /** CPU limit, cores: the smallest whose simulated CFS throttling meets the throttle target (core/sizing/cfs.ts). Optional. */
  cpuLimit?: number;
  /** GPU memory to ask for, GB (core/sizing/gpu-partitions.ts). Optional. */
  gpuMemoryGb?: number;
}

/** A throttled-period prediction at one CPU limit (core/sizing/cfs.ts). */
export interface ThrottlePrediction {
  /** The limit, cores. */
  cpu: number;
  /** Periods the kernel would count (mean over alignments). */
  periods: number;
  /** Throttled periods (mean over alignments). */
  throttledPeriods: number;
  /** Throttled share of periods, percent: mean over alignments. */
  throttledPercent: number;
  /** The least and the most over the alignments, percent. */
  minPercent: number;
  maxPercent: number;
  /** How much longer the run would take, percent of its run time (mean over alignments). */
  stretchPercent: number;
}

/** The figures and rule behind a Recommendation (core/sizing/sizing.ts fills it). */
export interface SizingEvidence {
  /** The formulas applied, with the policy's numbers filled in. */
  rule: string;
  cpu: {
    /** cpu.usage_ns (one-second windows of the counter), or cpu.percent where no counter was recorded. */
    metric: string;
    /** "max" or "p<N>" of the windows. */
    statistic: string;
    /** The measured figure, percent (100 = one core). */
    value: number;
    /** How far the counter's granularity lets `value` be off, ± percent. */
    errorPercent: number;
    /** What the rule is applied to: value − error, never below 0. */
    sizedPercent: number;
    /** Span of the window the figure comes from, ms (1000, or a shorter operator's whole life; 0 for cpu.percent). */
    windowMs: number;
    /** The usage counter's step: a scheduler tick or an upper bound of it (90th percentile of its changes, at most 10 ms), ms. */
    stepMs?: number;
    /** How late a reading may have come after its stamp: the 99th percentile of how far intervals stray from their median, ms. */
    delayMs?: number;
    /** Windows the statistic was taken over. */
    windows: number;
    /** Readings with a CPU figure. */
    rows: number;
    /** Epoch ms of the end of the window holding the maximum. */
    peakAtMs?: number;
    /** The largest short-window cpu.percent (the table's CPU maximum), for comparison. */
    shortWindowMaxPercent?: number;
  };
  memory: {
    /** memory.working_set_bytes (usage less inactive page cache), or memory.usage_bytes where that was not recorded. */
    metric: string;
    statistic: string;
    /** The figure sized on, MB (bytes / 1e6). */
    valueMb: number;
    /** Readings with a memory figure. */
    rows: number;
    peakAtMs?: number;
    headroomPct: number;
    bufferMb: number;
    /** The peak of memory.usage_bytes (page cache included), MB. */
    usagePeakMb?: number;
    /** Page cache left out of the need, MB, where counting it would have asked for more. */
    pageCacheMb?: number;
  };
  /** The memory figure is below what the operator needed (OOM killed), or its CPU was capped (throttled). */
  lowerBound?: { memory: boolean; cpu: boolean };
  /** Limits the operator's last container ran under. */
  limits?: ContainerLimits;
  /** CFS throttling seen under a CPU limit. */
  throttled?: { periods: number; seconds: number };
  /** The kernel's own count under a CPU limit (cpu.stat nr_periods, nr_throttled) where nr_periods was recorded; the last container's. */
  measuredThrottling?: { periods: number; throttledPeriods: number; throttledPercent: number };
  /** OOM kills seen: the engine's OOMKilled flag or the cgroup's oom_kill count. */
  oomKills?: number;
  /** Earlier attempts (an OOM-killed run retried with more memory, --retry-oom). */
  attempts?: OperatorAttempt[];
  /** The throttle-aware CPU limit and the predictions behind it (from the usage counter; absent without one). */
  cpuLimit?: {
    rule: string;
    periodMs: number;
    phases: number;
    targetPercent: number;
    /** Work over the quota by less than this is not counted as throttling: the counter's granularity per busy core, ms. */
    toleranceMs: number;
    /** The most CPU used in one period, cores. */
    peakPeriodCores: number;
    limit: number;
    atLimit: ThrottlePrediction;
    atRequest: ThrottlePrediction;
    curve: ThrottlePrediction[];
    /** The trace was throttled itself (recorded under a CPU limit): the limit is a lower bound. */
    lowerBound?: boolean;
  };
  /** What slower samplers would have seen of the same readings (core/sizing/slower-samplers.ts). */
  samplerViews?: Array<SamplerView & { requests: { cpu: number; memory: number } }>;
  /** GPU memory and the MIG partitions it fits (core/sizing/gpu-partitions.ts). */
  gpu?: GpuMemoryFit;
}

/** One slower sampler's view of an operator: median over start offsets, with the range, and the share that saw the fine memory peak. */
export interface SamplerView {
  sampler: string;
  intervalMs: number;
  cpuPercent: number;
  cpuPercentRange: [number, number];
  memoryMb: number;
  memoryMbRange: [number, number];
  /** Share of start offsets whose memory figure came within 10 % of the fine peak, percent. */
  sawMemoryPeakPercent: number;
}

/** The GPU sizing of one operator. */
export interface GpuMemoryFit {
  /** The figure: highest GPU memory on one device, MB (bytes / 1e6). */
  peakMb: number;
  /** Which metric it comes from. */
  metric: string;
  /** Recommended GPU memory, GB: ceil(peak × 1.1 / 1000). */
  memoryGb: number;
  /** Per GPU model, the smallest MIG profile it fits (absent: none smaller than the whole GPU). */
  partitions: Array<{ gpu: string; profile: string; memoryGb: number; perGpu: number }>;
  /** GPU models on which it needs a whole GPU (its memory is above every partition, or above the GPU). */
  wholeGpu: string[];
  /** GPU models too small even whole. */
  tooSmall: string[];
}

/** Resource limits a container ran under (absent = unlimited). */
export interface ContainerLimits {
  cpu?: number;
  /** MB (1e6 bytes). */
  memoryMb?: number;
}

/** One run of an operator's container that was retried. */
export interface OperatorAttempt {
  containerId: string;
  exitCode: number | null;
  oomKilled: boolean;
  limits: ContainerLimits;
  startedAtMs: number;
  endedAtMs: number;
}

export type OperatorStatus = "succeeded" | "failed" | "skipped" | "interrupted";

/** The host target of `cpost monitor`: the operator of this name, with an empty container id. */
export const HOST_OPERATOR = "host";

/** How an operator ended. */
export interface OperatorResult {
  operator: string;
  containerId: string;
  status: OperatorStatus;
  /** Container exit code; null when it never ran. */
  exitCode: number | null;
  /** Why it failed or was skipped, for the user. */
  reason?: string;
  oomKilled?: boolean;
  startedAtMs: number;
  endedAtMs: number;
  /** Limits its (last) container ran under (`--enforce-requests`, `--retry-oom`). Optional. */
  limits?: ContainerLimits;
  /** Earlier attempts that were retried (`--retry-oom`), oldest first. Optional. */
  attempts?: OperatorAttempt[];
  /** Absolute path of the file keeping its output (`<metrics_dir>/<operator>.log`); absent when none was kept. Optional. */
  logFile?: string;
  /** True when its output passed the log size limit and the file was cut there (marked in it). Optional. */
  logCut?: boolean;
}

/** Per-operator summary, built from the samples alone (so replay rebuilds it). */
export interface OperatorSummary {
  operator: string;
  samples: number;
  /** CPOST's CPU row: average and maximum percent (100 = one core). */
  cpuPercent: { mean: number; max: number };
  /** CPOST's Memory row: average and maximum MB (bytes / 1e6). */
  memoryMb: { mean: number; max: number };
  stats: MetricStats[];
  recommendation: Recommendation;
}

/** Facts about the machine and the run, written once at the start. */
export interface RunInfo {
  id: string;
  pipeline: Pipeline;
  host: {
    hostname: string;
    cpus: number;
    memoryBytes: number;
    kernel: string;
    arch: string;
    cgroupVersion: 1 | 2 | 0;
    engine: string;
    engineVersion: string;
  };
  collectors: string[];
  sinks: string[];
  intervalMs: number;
  startedAtMs: number;
  /** `--metrics_dir`, when given. */
  metricsDir?: string;
  /** Labels of a monitor session (`cpost monitor start --label k=v`); sinks attach them to every document or series. */
  labels?: Record<string, string>;
  cpostVersion: string;
}

/** How the whole run ended. */
export interface RunResult {
  results: OperatorResult[];
  summaries: OperatorSummary[];
  endedAtMs: number;
  /** Achieved sampling intervals, ms. */
  /** The sampling intervals achieved; `nativeTicks`: samples the native loop took (core/sampling, native/sampling-loop.ts). */
  interval: { target: number; p50: number; p99: number; samples: number; nativeTicks?: number };
  interrupted: boolean;
  /** Sinks that did not get every batch (fell behind and dropped, or cut off at the end). Optional; absent = none lost. */
  sinkLosses?: SinkLoss[];
}

/** What one sink did not get: batches dropped because it fell behind, and batches still queued when the run's end gave up on it. */
export interface SinkLoss {
  sink: string;
  droppedBatches: number;
  droppedRows: number;
  undeliveredBatches: number;
  undeliveredRows: number;
}

// ---------------------------------------------------------------- sinks

/**
 * Where samples go (terminal table, CSV, msgpack, Elasticsearch, plugins).
 *
 * Lifecycle, called by the runner in this order and never concurrently:
 * `start` once; then for each operator in execution order `operatorStart`,
 * any number of `write`s (one container's batches in time order), and
 * `operatorDone` once (also for failed and skipped operators, with zero
 * writes for skipped ones); finally `end` once, also after a failure or an
 * interrupt. Each hook may be async; the runner awaits it. A sink must not
 * lose a batch silently: if it cannot keep data it throws (or reports in
 * `end`). A throw is wrapped with the sink's name and hook and does not
 * stop the other sinks.
 */
export interface Sink {
  readonly name: string;
  start(run: RunInfo): void | Promise<void>;
  operatorStart?(operator: Operator): void | Promise<void>;
  write(batch: SampleBatch): void | Promise<void>;
  operatorDone(result: OperatorResult, summary: OperatorSummary): void | Promise<void>;
  end(result: RunResult): void | Promise<void>;
}

/** Options every sink factory receives. */
export interface SinkOptions {
  /** `--metrics_dir` (CSV and other file outputs go here). */
  metricsDir?: string;
  /** Where to print (the table sink); defaults to process.stdout. */
  out?: { write(text: string): unknown; isTTY?: boolean; columns?: number };
  /** Free-form `--<sink>-<option>` values, e.g. { "es-url": "…" }. */
  options: Record<string, string | undefined>;
}

/** A sink factory as the registry holds it. */
export type SinkFactory = (options: SinkOptions) => Sink | Promise<Sink>;
