/**
 * NVML (libnvidia-ml.so.1) through bun:ffi (native/ holds all of cpost's FFI code).
 * `openNvml` loads the library on first use, checks every nvmlReturn_t and
 * turns failures into CpostErrors carrying nvmlErrorString's text. The
 * per-device readers are the sampler's hot path: preallocated buffers,
 * errno-style status, no allocation and no throw per call.
 *
 * nvml.h facts relied on (CUDA 12.6 nvml.h; nvml-wrapper-sys 0.7 bindings.rs):
 * - nvmlReturn_t is a C enum (int); see NvmlReturn. nvmlDevice_t is an opaque pointer.
 * - nvmlInit_v2 (since R319) replaced nvmlInit; _v2 of GetCount and GetHandleByIndex likewise.
 * - nvmlUtilization_t {uint gpu, memory}: 8 bytes, percent over the last sample period (1/6 s to 1 s).
 * - nvmlMemory_t {u64 total, free, used}: 24 bytes, used = reserved + allocated.
 *   nvmlMemory_v2_t {uint version; u64 total, reserved, free, used}: 40 bytes, version
 *   = NVML_STRUCT_VERSION(Memory, 2) = sizeof | 2 << 24, used = allocated only.
 * - nvmlProcessInfo_v1_t {uint pid; u64 usedGpuMemory}: 16 bytes (plain GetComputeRunningProcesses);
 *   nvmlProcessInfo_v2_t adds {uint gpuInstanceId, computeInstanceId}: 24 bytes (_v2 and _v3).
 *   R535.54's _v3 wrote 32-byte entries (usedGpuCcProtectedMemory appended, later moved to
 *   nvmlProcessDetail_v1_t); readProcesses detects the stride. usedGpuMemory = ~0ULL
 *   (NVML_VALUE_NOT_AVAILABLE) when unknown. *infoCount in = capacity, out = count, or the size
 *   needed with NVML_ERROR_INSUFFICIENT_SIZE.
 * - nvmlSample_t {u64 timeStamp (CPU µs); nvmlValue_t (8-byte union)}: 16 bytes. nvmlDeviceGetSamples
 *   (device, nvmlSamplingType_t, u64 lastSeenTimeStamp, nvmlValueType_t*, uint* count, samples)
 *   returns only samples newer than lastSeenTimeStamp, NVML_ERROR_NOT_FOUND when there are none.
 * - nvmlProcessUtilizationSample_t {uint pid; u64 timeStamp; uint smUtil, memUtil, encUtil, decUtil}:
 *   32 bytes; nvmlDeviceGetProcessUtilization(device, samples, uint* count, u64 lastSeen), one
 *   sample per process busy in the last period, NOT_FOUND when none.
 * - nvmlDeviceGetPowerUsage answers milliwatts; NVML_TEMPERATURE_GPU = 0; NVML_CLOCK_SM = 1;
 *   names and UUIDs fit NVML_DEVICE_NAME_V2_BUFFER_SIZE / NVML_DEVICE_UUID_V2_BUFFER_SIZE (96).
 */
import { dlopen, ptr, type ConvertFns, type FFIFunction, type Library, type Pointer } from "bun:ffi";
import { CpostError } from "../core/contracts/errors.ts";

/** nvmlReturn_t values cpost acts on (nvml.h nvmlReturn_enum). */
export const NvmlReturn = {
  SUCCESS: 0,
  UNINITIALIZED: 1,
  INVALID_ARGUMENT: 2,
  NOT_SUPPORTED: 3,
  NO_PERMISSION: 4,
  NOT_FOUND: 6,
  INSUFFICIENT_SIZE: 7,
  DRIVER_NOT_LOADED: 9,
  GPU_IS_LOST: 15,
  ARGUMENT_VERSION_MISMATCH: 25,
  UNKNOWN: 999,
} as const;

/** nvmlSamplingType_t values cpost reads through nvmlDeviceGetSamples. */
export const NvmlSampling = { GPU_UTILIZATION: 1, MEMORY_UTILIZATION: 2 } as const;

const REQUIRED = {
  nvmlInit_v2: { args: [], returns: "i32" },
  nvmlShutdown: { args: [], returns: "i32" },
  nvmlErrorString: { args: ["i32"], returns: "cstring" },
  nvmlDeviceGetCount_v2: { args: ["ptr"], returns: "i32" },
  nvmlDeviceGetHandleByIndex_v2: { args: ["u32", "ptr"], returns: "i32" },
  nvmlDeviceGetName: { args: ["ptr", "ptr", "u32"], returns: "i32" },
  nvmlDeviceGetUUID: { args: ["ptr", "ptr", "u32"], returns: "i32" },
  nvmlDeviceGetUtilizationRates: { args: ["ptr", "ptr"], returns: "i32" },
  nvmlDeviceGetMemoryInfo: { args: ["ptr", "ptr"], returns: "i32" },
  nvmlDeviceGetPowerUsage: { args: ["ptr", "ptr"], returns: "i32" },
  nvmlDeviceGetTemperature: { args: ["ptr", "i32", "ptr"], returns: "i32" },
  nvmlDeviceGetClockInfo: { args: ["ptr", "i32", "ptr"], returns: "i32" },
} as const satisfies Record<string, FFIFunction>;

/** Bound one by one: a library without them still works, with less. */
const OPTIONAL = {
  nvmlSystemGetDriverVersion: { args: ["ptr", "u32"], returns: "i32" },
  nvmlDeviceGetMemoryInfo_v2: { args: ["ptr", "ptr"], returns: "i32" },
  nvmlDeviceGetComputeRunningProcesses_v3: { args: ["ptr", "ptr", "ptr"], returns: "i32" },
  nvmlDeviceGetComputeRunningProcesses_v2: { args: ["ptr", "ptr", "ptr"], returns: "i32" },
  nvmlDeviceGetComputeRunningProcesses: { args: ["ptr", "ptr", "ptr"], returns: "i32" },
  nvmlDeviceGetSamples: { args: ["ptr", "i32", "u64", "ptr", "ptr", "ptr"], returns: "i32" },
  nvmlDeviceGetProcessUtilization: { args: ["ptr", "ptr", "ptr", "u64"], returns: "i32" },
} as const satisfies Record<string, FFIFunction>;

type Required = ConvertFns<typeof REQUIRED>;
type Optional = Partial<ConvertFns<typeof OPTIONAL>>;
type ProcessListName = "nvmlDeviceGetComputeRunningProcesses_v3" | "nvmlDeviceGetComputeRunningProcesses_v2" | "nvmlDeviceGetComputeRunningProcesses";

/** Where libnvidia-ml.so.1 lives on common distributions and in NVIDIA's container toolkit. */
export const NVML_SEARCH_PATHS = [
  "libnvidia-ml.so.1", // the loader's own search: ld.so.cache, LD_LIBRARY_PATH
  "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
  "/usr/lib/aarch64-linux-gnu/libnvidia-ml.so.1",
  "/usr/lib64/libnvidia-ml.so.1",
  "/usr/lib/libnvidia-ml.so.1",
  "/usr/local/nvidia/lib64/libnvidia-ml.so.1",
  "/usr/lib/wsl/lib/libnvidia-ml.so.1",
];

/** What the loaded library offers beyond the required symbols. */
export interface NvmlFeatures {
  memoryV2: boolean;
  /** The newest process-list function present, if any. */
  processList: ProcessListName | undefined;
  samples: boolean;
  processUtilization: boolean;
}

/**
 * One GPU. Each read* method calls NVML once (twice when a buffer must grow),
 * returns the nvmlReturn_t and, on success, leaves its results in the fields
 * named in its doc line. Nothing is allocated per call.
 */
export interface NvmlDevice {
  readonly index: number;
  readonly name: string;
  readonly uuid: string;
  /** Why the handle could not be had at open (e.g. "GPU is lost"); the readers then answer GPU_IS_LOST. */
  readonly openError: string | undefined;
  /** memoryTotal, memoryUsed (bytes; allocated, without the driver's reservation where v2 is present). */
  readMemory(): number;
  memoryTotal: number;
  memoryUsed: number;
  /** utilizationGpu, utilizationMemory (percent over NVML's last sample period). */
  readUtilization(): number;
  utilizationGpu: number;
  utilizationMemory: number;
  /** powerW. */
  readPower(): number;
  powerW: number;
  /** temperatureC (the GPU die sensor). */
  readTemperature(): number;
  temperatureC: number;
  /** smClockMhz. */
  readSmClock(): number;
  smClockMhz: number;
  /** Samples newer than lastSeenUs: sampleMean (NaN when none), sampleNewest (value of the latest), sampleLastUs. */
  readSamples(type: number, lastSeenUs: number): number;
  sampleMean: number;
  sampleNewest: number;
  sampleLastUs: number;
  /** Compute processes: processCount, then processPid(i), processMemory(i) (bytes, NaN when NVML cannot say). */
  readProcesses(): number;
  processCount: number;
  processPid(i: number): number;
  processMemory(i: number): number;
  /** Per-process utilisation newer than lastSeenUs: utilSampleCount, utilSamplePid(i), utilSampleSm(i), utilSampleLastUs. */
  readProcessUtilization(lastSeenUs: number): number;
  utilSampleCount: number;
  utilSamplePid(i: number): number;
  utilSampleSm(i: number): number;
  utilSampleLastUs: number;
}

/** An initialised NVML: call `shutdown` once when done. */
export interface NvmlLibrary {
  readonly path: string;
  /** e.g. "550.54.15"; "" when the library cannot say. */
  readonly driverVersion: string;
  readonly features: NvmlFeatures;
  readonly devices: readonly NvmlDevice[];
  /** nvmlErrorString's text for a code. */
  errorString(code: number): string;
  shutdown(): void;
}

const TWO_32 = 4294967296;
const NOT_AVAILABLE_HALF = 0xffffffff;
const SENTINEL = 0xa5;
const MEMORY_V2_VERSION = (40 | (2 << 24)) >>> 0;

/** Loads libnvidia-ml (the given path, else $CPOST_NVML_LIB, else the usual places), runs nvmlInit_v2 and enumerates the GPUs. */
export function openNvml(path: string | undefined = process.env.CPOST_NVML_LIB || undefined): NvmlLibrary {
  const opened: Library<Record<string, FFIFunction>>[] = [];
  const { lib, at } = loadRequired(path);
  opened.push(lib);
  const nvml: Required = lib.symbols;
  const optional: Optional = {};
  for (const [name, signature] of Object.entries(OPTIONAL)) {
    try {
      const one = dlopen(at, { [name]: signature });
      opened.push(one);
      Object.assign(optional, one.symbols);
    } catch {
      // absent in this driver: the feature falls back or stays off
    }
  }
  const errorString = (code: number): string => String(nvml.nvmlErrorString(code) ?? `NVML error ${code}`);
  const fail = (call: string, code: number): CpostError =>
    new CpostError("nvml", `${call} failed: ${errorString(code)} (NVML error ${code})`, { hint: hintFor(code) });

  const init = nvml.nvmlInit_v2();
  if (init !== NvmlReturn.SUCCESS) {
    const error = fail("nvmlInit_v2", init);
    for (const l of opened) l.close();
    throw error;
  }
  let down = false;
  const shutdown = (): void => {
    if (down) return;
    down = true;
    nvml.nvmlShutdown();
    for (const l of opened) l.close();
  };
  try {
    const scratch = new Uint32Array(new ArrayBuffer(128));
    const count = nvml.nvmlDeviceGetCount_v2(ptr(scratch));
    if (count !== NvmlReturn.SUCCESS) throw fail("nvmlDeviceGetCount_v2", count);
    const features: NvmlFeatures = {
      memoryV2: optional.nvmlDeviceGetMemoryInfo_v2 !== undefined,
      processList: (["nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2", "nvmlDeviceGetComputeRunningProcesses"] as const).find(
        (name) => optional[name] !== undefined,
      ),
      samples: optional.nvmlDeviceGetSamples !== undefined,
      processUtilization: optional.nvmlDeviceGetProcessUtilization !== undefined,
    };
    const devices = Array.from({ length: scratch[0] ?? 0 }, (_, index) => bindDevice(nvml, optional, features, index, errorString));
    return { path: at, driverVersion: readString(optional.nvmlSystemGetDriverVersion), features, devices, errorString, shutdown };
  } catch (e) {
    shutdown();
    throw e;
  }
}

function loadRequired(explicit: string | undefined): { lib: Library<typeof REQUIRED>; at: string } {
  const failures: string[] = [];
  for (const candidate of explicit ? [explicit] : NVML_SEARCH_PATHS) {
    try {
      return { lib: dlopen(candidate, REQUIRED), at: candidate };
    } catch (e) {
      const missing = missingSymbol(candidate);
      if (missing) {
        throw new CpostError("nvml", `NVML at ${candidate} is too old: it lacks ${missing}`, {
          hint: "update the NVIDIA driver (cpost needs R319 or newer), or point CPOST_NVML_LIB at a newer libnvidia-ml.so.1",
          cause: e,
        });
      }
      failures.push(e instanceof Error ? e.message : String(e));
    }
  }
  const where = explicit ? `CPOST_NVML_LIB=${explicit}: ${failures[0]}` : `no libnvidia-ml.so.1 in the loader path or ${NVML_SEARCH_PATHS.slice(1).join(", ")}`;
  throw new CpostError("unavailable", `NVML not found: ${where}`, {
    hint: "install the NVIDIA driver on this host, or set CPOST_NVML_LIB to the path of libnvidia-ml.so.1",
  });
}

/** The first required symbol a library lacks; undefined when it has none of them (it did not load, or is no NVML). */
function missingSymbol(path: string): string | undefined {
  const missing = Object.entries(REQUIRED)
    .filter(([name, signature]) => {
      try {
        dlopen(path, { [name]: signature }).close();
        return false;
      } catch {
        return true;
      }
    })
    .map(([name]) => name);
  return missing.length < Object.keys(REQUIRED).length ? missing[0] : undefined;
}

function hintFor(code: number): string | undefined {
  if (code === NvmlReturn.DRIVER_NOT_LOADED) return "the NVIDIA kernel driver is not loaded: check `lsmod | grep nvidia`";
  if (code === NvmlReturn.NO_PERMISSION) return "run cpost as root or give it access to /dev/nvidia*";
  if (code === NvmlReturn.GPU_IS_LOST) return "a GPU fell off the bus: check `dmesg` for Xid errors";
  return undefined;
}

const textDecoder = new TextDecoder();

function cString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return textDecoder.decode(bytes.subarray(0, end < 0 ? bytes.length : end));
}

function readString(fn: ((buffer: Pointer, length: number) => number) | undefined): string {
  if (!fn) return "";
  const bytes = new Uint8Array(new ArrayBuffer(96));
  return fn(ptr(bytes), bytes.length) === NvmlReturn.SUCCESS ? cString(bytes) : "";
}

/** Scratch layout (byte offsets) of one device's small out-parameters. */
const AT = { handle: 0, count: 8, valueType: 12, u32: 16, utilization: 24, memory: 32, memoryV2: 56, strings: 96 } as const;
const SCRATCH_BYTES = AT.strings + 96;
const SAMPLE_CAPACITY = 128;

function bindDevice(nvml: Required, optional: Optional, features: NvmlFeatures, index: number, errorString: (code: number) => string): NvmlDevice {
  const scratchBuffer = new ArrayBuffer(SCRATCH_BYTES);
  const u32 = new Uint32Array(scratchBuffer);
  const bytes = new Uint8Array(scratchBuffer);
  const base = ptr(bytes);
  const at = (offset: number) => (base + offset) as Pointer;
  const countPtr = at(AT.count);
  const u32Ptr = at(AT.u32);

  const got = nvml.nvmlDeviceGetHandleByIndex_v2(index, at(AT.handle));
  const handle = (got === NvmlReturn.SUCCESS ? u64(u32, AT.handle) : 0) as Pointer;
  const text = (fn: typeof nvml.nvmlDeviceGetName): string =>
    got === NvmlReturn.SUCCESS && fn(handle, at(AT.strings), 96) === NvmlReturn.SUCCESS ? cString(bytes.subarray(AT.strings)) : "";

  const samples = new ArrayBuffer(SAMPLE_CAPACITY * 16);
  const samples32 = new Uint32Array(samples);
  const samples64 = new Float64Array(samples);
  const samplesPtr = ptr(samples);

  let processes = new ArrayBuffer(64 * 32);
  let processes32 = new Uint32Array(processes);
  let processes8 = new Uint8Array(processes);
  let processesPtr = ptr(processes);
  let processStride = features.processList === "nvmlDeviceGetComputeRunningProcesses" ? 16 : 24;
  const listProcesses = features.processList && optional[features.processList];
  const v3 = features.processList === "nvmlDeviceGetComputeRunningProcesses_v3";

  let utilSamples = new ArrayBuffer(64 * 32);
  let utilSamples32 = new Uint32Array(utilSamples);
  let utilSamplesPtr = ptr(utilSamples);

  let memoryV2 = features.memoryV2;
  const lost = got !== NvmlReturn.SUCCESS;

  const device: NvmlDevice = {
    index,
    name: text(nvml.nvmlDeviceGetName),
    uuid: text(nvml.nvmlDeviceGetUUID),
    openError: lost ? errorString(got) : undefined,
    memoryTotal: NaN,
    memoryUsed: NaN,
    readMemory() {
      if (lost) return got;
      if (memoryV2) {
        u32[AT.memoryV2 / 4] = MEMORY_V2_VERSION;
        const code = optional.nvmlDeviceGetMemoryInfo_v2!(handle, at(AT.memoryV2));
        if (code === NvmlReturn.SUCCESS) {
          device.memoryTotal = u64(u32, AT.memoryV2 + 8);
          device.memoryUsed = u64(u32, AT.memoryV2 + 32);
          return code;
        }
        // a driver may export _v2 yet refuse it for this GPU: use v1 from now on
        if (code !== NvmlReturn.NOT_SUPPORTED && code !== NvmlReturn.ARGUMENT_VERSION_MISMATCH) return code;
        memoryV2 = false;
      }
      const code = nvml.nvmlDeviceGetMemoryInfo(handle, at(AT.memory));
      if (code === NvmlReturn.SUCCESS) {
        device.memoryTotal = u64(u32, AT.memory);
        device.memoryUsed = u64(u32, AT.memory + 16);
      }
      return code;
    },
    utilizationGpu: NaN,
    utilizationMemory: NaN,
    readUtilization() {
      if (lost) return got;
      const code = nvml.nvmlDeviceGetUtilizationRates(handle, at(AT.utilization));
      if (code === NvmlReturn.SUCCESS) {
        device.utilizationGpu = u32[AT.utilization / 4]!;
        device.utilizationMemory = u32[AT.utilization / 4 + 1]!;
      }
      return code;
    },
    powerW: NaN,
    readPower() {
      if (lost) return got;
      const code = nvml.nvmlDeviceGetPowerUsage(handle, u32Ptr);
      if (code === NvmlReturn.SUCCESS) device.powerW = u32[AT.u32 / 4]! / 1000;
      return code;
    },
    temperatureC: NaN,
    readTemperature() {
      if (lost) return got;
      const code = nvml.nvmlDeviceGetTemperature(handle, 0, u32Ptr);
      if (code === NvmlReturn.SUCCESS) device.temperatureC = u32[AT.u32 / 4]!;
      return code;
    },
    smClockMhz: NaN,
    readSmClock() {
      if (lost) return got;
      const code = nvml.nvmlDeviceGetClockInfo(handle, 1, u32Ptr);
      if (code === NvmlReturn.SUCCESS) device.smClockMhz = u32[AT.u32 / 4]!;
      return code;
    },
    sampleMean: NaN,
    sampleNewest: NaN,
    sampleLastUs: 0,
    readSamples(type, lastSeenUs) {
      if (lost) return got;
      if (!optional.nvmlDeviceGetSamples) return NvmlReturn.NOT_SUPPORTED;
      u32[AT.count / 4] = SAMPLE_CAPACITY;
      const code = optional.nvmlDeviceGetSamples(handle, type, lastSeenUs, at(AT.valueType), countPtr, samplesPtr);
      if (code !== NvmlReturn.SUCCESS) return code;
      const n = Math.min(u32[AT.count / 4]!, SAMPLE_CAPACITY);
      const valueType = u32[AT.valueType / 4]!;
      let sum = 0;
      let last = lastSeenUs;
      for (let i = 0; i < n; i++) {
        const value = sampleValue(valueType, samples32, samples64, i);
        sum += value;
        const stamp = u64(samples32, i * 16);
        if (stamp >= last) {
          last = stamp;
          device.sampleNewest = value;
        }
      }
      device.sampleMean = n > 0 ? sum / n : NaN;
      device.sampleLastUs = last;
      return code;
    },
    processCount: 0,
    readProcesses() {
      if (lost) return got;
      if (!listProcesses) return NvmlReturn.NOT_SUPPORTED;
      let code: number = NvmlReturn.INSUFFICIENT_SIZE;
      for (let attempt = 0; attempt < 2 && code === NvmlReturn.INSUFFICIENT_SIZE; attempt++) {
        const capacity = processes.byteLength / 32;
        u32[AT.count / 4] = capacity;
        if (v3) processes8.fill(SENTINEL);
        code = listProcesses(handle, countPtr, processesPtr);
        if (code === NvmlReturn.INSUFFICIENT_SIZE) {
          processes = new ArrayBuffer((u32[AT.count / 4]! + 16) * 2 * 32);
          processes32 = new Uint32Array(processes);
          processes8 = new Uint8Array(processes);
          processesPtr = ptr(processes);
        } else if (code === NvmlReturn.SUCCESS && v3) {
          processStride = strideOf(processes8, u32[AT.count / 4]!);
        }
      }
      device.processCount = code === NvmlReturn.SUCCESS ? u32[AT.count / 4]! : 0;
      return code;
    },
    processPid: (i) => processes32[(i * processStride) / 4]!,
    processMemory(i) {
      const word = (i * processStride + 8) / 4;
      const lo = processes32[word]!;
      const hi = processes32[word + 1]!;
      return lo === NOT_AVAILABLE_HALF && hi === NOT_AVAILABLE_HALF ? NaN : lo + hi * TWO_32;
    },
    utilSampleCount: 0,
    utilSampleLastUs: 0,
    readProcessUtilization(lastSeenUs) {
      if (lost) return got;
      const fn = optional.nvmlDeviceGetProcessUtilization;
      if (!fn) return NvmlReturn.NOT_SUPPORTED;
      let code: number = NvmlReturn.INSUFFICIENT_SIZE;
      for (let attempt = 0; attempt < 2 && code === NvmlReturn.INSUFFICIENT_SIZE; attempt++) {
        u32[AT.count / 4] = utilSamples.byteLength / 32;
        code = fn(handle, utilSamplesPtr, countPtr, lastSeenUs);
        if (code === NvmlReturn.INSUFFICIENT_SIZE) {
          utilSamples = new ArrayBuffer((u32[AT.count / 4]! + 16) * 2 * 32);
          utilSamples32 = new Uint32Array(utilSamples);
          utilSamplesPtr = ptr(utilSamples);
        }
      }
      device.utilSampleCount = code === NvmlReturn.SUCCESS ? u32[AT.count / 4]! : 0;
      let last = lastSeenUs;
      for (let i = 0; i < device.utilSampleCount; i++) last = Math.max(last, u64(utilSamples32, i * 32 + 8));
      device.utilSampleLastUs = last;
      return code;
    },
    utilSamplePid: (i) => utilSamples32[i * 8]!,
    utilSampleSm: (i) => utilSamples32[i * 8 + 4]!,
  };
  return device;
}

/** A little-endian u64 at a 4-aligned byte offset, as a double (exact below 2^53). */
function u64(words: Uint32Array, byteOffset: number): number {
  return words[byteOffset / 4]! + words[byteOffset / 4 + 1]! * TWO_32;
}

/** nvmlValue_t of sample i, by nvmlValueType_t (0 double, 1 uint, 2 ulong, 3 ulonglong, 4 signed long long). */
function sampleValue(valueType: number, words: Uint32Array, doubles: Float64Array, i: number): number {
  const offset = i * 16 + 8;
  if (valueType === 0) return doubles[offset / 8]!;
  if (valueType === 1) return words[offset / 4]!;
  if (valueType === 4) return words[offset / 4]! + (words[offset / 4 + 1]! | 0) * TWO_32;
  return u64(words, offset);
}

/** Entry size _v3 actually wrote for `count` entries: 32 where bytes past 24·count were touched. */
function strideOf(bytes: Uint8Array, count: number): number {
  for (let i = count * 24; i < count * 32; i++) if (bytes[i] !== SENTINEL) return 32;
  return 24;
}
