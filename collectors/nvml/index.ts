/**
 * Collector `nvml`: what the GPUs do while an operator runs, from NVIDIA's
 * management library (native/nvml.ts), with no nvidia-smi and no Python.
 * Per GPU and sample: utilisation, memory, power, temperature, SM clock; per
 * container and GPU: memory and SM share of the container's own processes
 * (NVML's process list matched through /proc/<pid>/cgroup, see
 * processes.ts). Utilisation is NVML's average over its own period (1/6
 * to 1 s): it comes from the driver's sample buffer (nvmlDeviceGetSamples)
 * and is held until the next period, never polled faster than it changes. A
 * GPU that falls off the bus ends its series (NaN) with one warning; the
 * others go on.
 */
import { existsSync } from "node:fs";
import { asCpostError } from "../../core/contracts/errors.ts";
import { builtinCollector, defineCollector } from "../../core/contracts/plugin-sdk.ts";
import type { Collector, MetricBuffer, MetricSpec, Probe, Target, Unavailable } from "../../core/contracts/types.ts";
import { openNvml, NvmlReturn, NvmlSampling, type NvmlLibrary } from "../../native/nvml.ts";
import { defineOwnership } from "./processes.ts";

/** Options of the nvml collector. */
export interface NvmlOptions {
  /** Path of libnvidia-ml.so.1 (default: $CPOST_NVML_LIB, then the usual places). */
  library?: string;
  /** Where /proc is (default: $CPOST_PROC_ROOT, else /proc); tests point it at fixture trees. */
  procRoot?: string;
  /** Where warnings go (default: stderr); does not travel to the sampler's worker. */
  onWarning?: (message: string) => void;
}

const m = (name: string, unit: MetricSpec["unit"], description: string): MetricSpec => ({ name, unit, kind: "gauge", description });
const DEVICE_METRICS: readonly MetricSpec[] = [
  m("gpu.utilization_pct", "percent", "time a kernel ran, over NVML's last sample period"),
  m("gpu.memory_utilization_pct", "percent", "time device memory was read or written, over NVML's last period"),
  m("gpu.memory_used_bytes", "bytes", "device memory allocated (all processes)"),
  m("gpu.memory_total_bytes", "bytes", "device memory"),
  m("gpu.power_w", "watts", "board power draw"),
  m("gpu.temperature_c", "celsius", "GPU die temperature"),
  m("gpu.sm_clock_mhz", "mhz", "SM clock"),
];
const PROCESS_METRICS: readonly MetricSpec[] = [
  m("gpu.process_memory_bytes", "bytes", "device memory held by the container's own processes"),
  m("gpu.process_sm_pct", "percent", "SM utilisation of the container's own processes"),
];
/** NVML's shortest utilisation period: polling nvmlDeviceGetUtilizationRates faster only repeats it. */
const RATES_PERIOD_MS = 1000 / 6;
/** Its longest: a process utilisation older than this no longer describes the process. */
const STALE_MS = 1000;
const UTIL_SAMPLES = 1, RATES = 2, MEMORY = 4, POWER = 8, TEMPERATURE = 16, CLOCK = 32, PROCESSES = 64, PROCESS_UTIL = 128;

type Shared = { lib: NvmlLibrary; lost: boolean[]; off: number[]; warned: number[]; warn(message: string): void };

function openProbe(shared: Shared, target: Target, procRoot: string): Probe {
  const { lib, lost, off, warned, warn } = shared;
  const devices = lib.devices;
  const container = target.kind === "container" && target.containerId !== "";
  const width = DEVICE_METRICS.length + (container ? PROCESS_METRICS.length : 0);
  const ownership = defineOwnership(procRoot, target.containerId);
  // the pid may come later (a watch begun before the container started): the path follows it
  let alivePid = 0;
  let alivePath = "";
  const held = devices.map(() => ({ gpu: NaN, memory: NaN, gpuSeenUs: 0, memorySeenUs: 0, ratesDueMs: -Infinity, sm: 0, smSeenUs: 0, smAtMs: 0 }));

  /** True on success; otherwise marks the device lost or the call off, warning once. */
  function ok(k: number, bit: number, call: string, code: number): boolean {
    if (code === NvmlReturn.SUCCESS) return true;
    const device = devices[k]!;
    const text = () => `${lib.errorString(code)} (NVML error ${code})`;
    if (code === NvmlReturn.GPU_IS_LOST) {
      if (!lost[k]) warn(`GPU ${k} (${device.name} ${device.uuid}) is lost: ${call}: ${text()}; its series ends here, other GPUs go on`);
      lost[k] = true;
    } else if (!(warned[k]! & bit)) {
      warned[k]! |= bit;
      const permanent = code === NvmlReturn.NOT_SUPPORTED || code === NvmlReturn.NO_PERMISSION;
      if (permanent) off[k]! |= bit;
      warn(`GPU ${k}: ${call}: ${text()}${permanent ? "; cpost stops asking" : ""}`);
    }
    return false;
  }

  /** Mean of the new samples of one kind (the newest alone at first), held while NVML has none. */
  function sampled(k: number, type: number, seenUs: number): number {
    const device = devices[k]!;
    const code = device.readSamples(type, seenUs);
    if (code === NvmlReturn.SUCCESS) return seenUs === 0 ? device.sampleNewest : device.sampleMean;
    if (code === NvmlReturn.NOT_SUPPORTED) off[k]! |= UTIL_SAMPLES; // MIG: fall back to polling rates
    else if (code !== NvmlReturn.NOT_FOUND) ok(k, UTIL_SAMPLES, "nvmlDeviceGetSamples", code);
    return NaN;
  }

  function readUtilization(k: number, v: Float64Array, o: number, now: number): void {
    const device = devices[k]!;
    const h = held[k]!;
    if (lib.features.samples && !(off[k]! & UTIL_SAMPLES)) {
      const gpu = sampled(k, NvmlSampling.GPU_UTILIZATION, h.gpuSeenUs);
      if (gpu === gpu) {
        h.gpu = gpu;
        h.gpuSeenUs = device.sampleLastUs;
      }
      const memory = sampled(k, NvmlSampling.MEMORY_UTILIZATION, h.memorySeenUs);
      if (memory === memory) {
        h.memory = memory;
        h.memorySeenUs = device.sampleLastUs;
      }
    } else if (now >= h.ratesDueMs && !(off[k]! & RATES)) {
      if (ok(k, RATES, "nvmlDeviceGetUtilizationRates", device.readUtilization())) {
        h.gpu = device.utilizationGpu;
        h.memory = device.utilizationMemory;
        h.ratesDueMs = now + RATES_PERIOD_MS;
      }
    }
    v[o] = h.gpu;
    v[o + 1] = h.memory;
  }

  function readProcesses(k: number, v: Float64Array, o: number, now: number): void {
    const device = devices[k]!;
    const h = held[k]!;
    if (off[k]! & PROCESSES || !ok(k, PROCESSES, lib.features.processList ?? "process list", device.readProcesses())) return;
    let bytes = 0;
    let mine = 0;
    for (let i = 0; i < device.processCount; i++) {
      if (!ownership.owns(device.processPid(i))) continue;
      mine++;
      const used = device.processMemory(i);
      if (used === used) bytes += used;
    }
    v[o] = bytes;
    if (!lib.features.processUtilization || off[k]! & PROCESS_UTIL) return;
    const code = device.readProcessUtilization(h.smSeenUs);
    if (code === NvmlReturn.SUCCESS) {
      let sm = 0;
      for (let i = 0; i < device.utilSampleCount; i++) if (ownership.owns(device.utilSamplePid(i))) sm += device.utilSampleSm(i);
      h.sm = sm;
      h.smSeenUs = device.utilSampleLastUs;
      h.smAtMs = now;
    } else if (code !== NvmlReturn.NOT_FOUND) ok(k, PROCESS_UTIL, "nvmlDeviceGetProcessUtilization", code);
    // NOT_FOUND: no process was busy in a newer period yet; an old figure is kept only while it can still be current
    v[o + 1] = mine === 0 || now - h.smAtMs > STALE_MS ? 0 : h.sm;
  }

  function readDevice(k: number, v: Float64Array, o: number, now: number): void {
    for (let j = 0; j < width; j++) v[o + j] = NaN;
    if (lost[k]) return;
    const device = devices[k]!;
    const skip = off[k]!;
    readUtilization(k, v, o, now);
    if (!(skip & MEMORY) && ok(k, MEMORY, "nvmlDeviceGetMemoryInfo", device.readMemory())) {
      v[o + 2] = device.memoryUsed;
      v[o + 3] = device.memoryTotal;
    }
    if (!(skip & POWER) && ok(k, POWER, "nvmlDeviceGetPowerUsage", device.readPower())) v[o + 4] = device.powerW;
    if (!(skip & TEMPERATURE) && ok(k, TEMPERATURE, "nvmlDeviceGetTemperature", device.readTemperature())) v[o + 5] = device.temperatureC;
    if (!(skip & CLOCK) && ok(k, CLOCK, "nvmlDeviceGetClockInfo", device.readSmClock())) v[o + 6] = device.smClockMhz;
    if (container) readProcesses(k, v, o + DEVICE_METRICS.length, now);
    if (lost[k]) for (let j = 0; j < width; j++) v[o + j] = NaN;
  }

  const how = lib.features.samples ? "utilisation from nvmlDeviceGetSamples" : "utilisation polled every 167 ms";
  return {
    metrics: devices.flatMap((d) => [...DEVICE_METRICS, ...(container ? PROCESS_METRICS : [])].map((spec) => ({ ...spec, device: d.index }))),
    source: `NVML ${lib.driverVersion || "(driver version unknown)"} at ${lib.path}: ${devices.map((d) => `${d.index} ${d.name}`).join(", ")}; ${how}${container ? `; processes from ${lib.features.processList ?? "(none: no process list)"}` : ""}`,
    read(out: MetricBuffer): boolean {
      ownership.nextRound();
      for (let k = 0; k < devices.length; k++) readDevice(k, out.values, out.base + k * width, out.monotonicMs);
      ownership.endRound();
      if (container && target.pid !== alivePid) {
        alivePid = target.pid;
        alivePath = alivePid > 0 ? `${procRoot}/${alivePid}` : "";
      }
      return alivePath === "" || existsSync(alivePath);
    },
    close() {},
  };
}

/** The nvml collector, written as a plugin is (copying this folder starts one); the library is loaded on the first `open` (or `available`) and shut down by `dispose`. */
export function defineNvmlCollector(options: NvmlOptions = {}) {
  let state: Shared | Unavailable | undefined;
  const warn = options.onWarning ?? ((message: string) => void process.stderr.write(`warning: nvml: ${message}\n`));
  function load(): Shared | Unavailable {
    if (state) return state;
    try {
      const lib = openNvml(options.library ?? (process.env.CPOST_NVML_LIB || undefined));
      if (lib.devices.length === 0) {
        lib.shutdown();
        return (state = { unavailable: "NVML reports no GPUs on this host" });
      }
      const zeros = () => lib.devices.map(() => 0);
      const shared: Shared = { lib, lost: lib.devices.map((d) => d.openError !== undefined), off: zeros(), warned: zeros(), warn };
      for (const d of lib.devices) if (d.openError) warn(`GPU ${d.index} cannot be used: ${d.openError}`);
      return (state = shared);
    } catch (e) {
      const error = asCpostError(e, "nvml");
      return (state = { unavailable: error.hint ? `${error.message} (${error.hint})` : error.message });
    }
  }
  return defineCollector({
    name: "nvml",
    description: "GPU utilisation, memory, power, temperature, clocks, and the container's own GPU processes, from NVML",
    metrics: [...DEVICE_METRICS, ...PROCESS_METRICS],
    open(target: Target): Probe | Unavailable {
      const loaded = load();
      return "unavailable" in loaded ? loaded : openProbe(loaded, target, options.procRoot ?? (process.env.CPOST_PROC_ROOT || "/proc"));
    },
    dispose() {
      if (state && !("unavailable" in state)) state.lib.shutdown();
      state = undefined;
    },
    available(): NvmlAvailability {
      const loaded = load();
      return "unavailable" in loaded
        ? { ok: false, reason: loaded.unavailable }
        : { ok: true, gpus: loaded.lib.devices.length, driver: loaded.lib.driverVersion };
    },
  });
}

/** Whether NVML works here (the collector's `available()`): with how many GPUs and which driver. */
export type NvmlAvailability = { ok: true; gpus: number; driver: string } | { ok: false; reason: string };

/** The built-in `nvml` collector: libnvidia-ml.so.1 (or CPOST_NVML_LIB). */
export default defineNvmlCollector();

/** A configured instance as the sampler runs it; also the `create(options)` its worker rebuilds one with (without the warning callback, which cannot cross threads). */
export function createNvmlCollector(options: NvmlOptions = {}): Omit<Collector, "available"> & { available(): NvmlAvailability } {
  const { onWarning: _, ...portable } = options;
  return builtinCollector(defineNvmlCollector(options), { module: "nvml", options: portable }) as Omit<Collector, "available"> & { available(): NvmlAvailability };
}
export const create = createNvmlCollector;
