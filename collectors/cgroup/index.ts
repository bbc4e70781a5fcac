/**
 * The cgroup collector: CPU, memory, pids and pressure of a container, read
 * from its cgroup files on v1, v2 and hybrid hosts. CPU and memory usage are
 * read every sample; memory.stat (working set, rss, cache) at most every
 * ~10 ms, because it alone costs more than everything else together; the
 * rest of the breakdown (user/system, throttling, peak, OOM kills, pids:
 * counters, a high-water mark and a slow gauge) about every 100 ms; PSI and
 * the limit about once a second (the kernel recomputes avg10 only every
 * 2 s). Rows in between leave those slots NaN: not measured then.
 *
 * Usage and memory.stat are files the sampler's native loop may re-read
 * itself between the probe's own reads (`captured`): at 1 kHz a JS tick
 * then runs about ten times a second instead of a thousand.
 */
import { builtinCollector, defineCollector } from "../../core/contracts/plugin-sdk.ts";
import type { Collector, MetricBuffer, Probe } from "../../core/contracts/types.ts";
import { closeStatFile, dueAfter, NOT_READ, reread, type CapturedFile, type CapturingProbe } from "./files.ts";
import { findContainerCgroup, hostMemoryBytes, resolveRoots, type CgroupRoots } from "./paths.ts";
import { MEM_USAGE, METRICS, openV1, openV2, PERCENT, USAGE, type Reader } from "./readers.ts";

/** Options of the cgroup collector: where the cgroup filesystem and /proc are. */
export interface CgroupOptions extends CgroupRoots {
  /** Milliseconds clock of cpu.percent (tests drive it); default performance.now. */
  clock?: () => number;
}

const WORKING_SET_MS = 10;
const BREAKDOWN_MS = 100;
const CPU_WINDOW_MS = 100;
/** A series younger than this has no cpu.percent yet: over a shorter span one tick is more than 2 %. */
const CPU_MIN_WINDOW_MS = 50;
const SLOW_MS = 1000;

/**
 * cpu.percent: Δusage over Δwall time back to the newest sample at least
 * CPU_WINDOW_MS older (all of the series while it is younger, and nothing
 * before it spans CPU_MIN_WINDOW_MS). The kernel adds a running task's
 * time to the usage counter only at scheduler ticks (measured here: steps of
 * ~0.9 ms; 4 ms at HZ=250), so over one 10 ms interval a single busy thread
 * reads anywhere from 90 to 120 %; over 100 ms the tick error stays near 1 %.
 * cpu.usage_ns keeps every sample.
 */
function defineRateWindow() {
  const CAPACITY = 4096; // samples of the last CPU_WINDOW_MS, at any interval down to 1 ms
  const times = new Float64Array(CAPACITY);
  const usages = new Float64Array(CAPACITY);
  let head = 0; // next write
  let tail = 0; // oldest kept
  let size = 0;
  return {
    percent(now: number, usage: number): number {
      if (Number.isNaN(usage)) return NaN;
      if (size === CAPACITY) (tail = (tail + 1) % CAPACITY), size--;
      times[head] = now;
      usages[head] = usage;
      head = (head + 1) % CAPACITY;
      size++;
      // drop the oldest while the next one is still old enough to span the window
      while (size > 2 && now - times[(tail + 1) % CAPACITY]! >= CPU_WINDOW_MS) (tail = (tail + 1) % CAPACITY), size--;
      const span = now - times[tail]!;
      if (size < 2 || span < CPU_MIN_WINDOW_MS) return NaN;
      return ((usage - usages[tail]!) / (span * 1e6)) * 100;
    },
  };
}

function openProbe(reader: Reader, clock: () => number): CapturingProbe {
  const order = [...reader.slots].sort((a, b) => a - b);
  const slotOf = Int32Array.from(order);
  const v = new Float64Array(METRICS.length);
  const window = defineRateWindow();
  const workingSet = reader.workingSetFile;
  let workingSetDue = -Infinity;
  let breakdownDue = -Infinity;
  let slowDue = -Infinity;
  const write = (out: MetricBuffer): void => {
    const values = out.values;
    const base = out.base;
    for (let i = 0; i < slotOf.length; i++) values[base + i] = v[slotOf[i]!]!;
  };
  const captured: CapturedFile[] = reader.fastFiles.map((file) => ({ file, everyMs: 0, dueMs: () => -Infinity }));
  if (workingSet) captured.push({ file: workingSet, everyMs: WORKING_SET_MS, dueMs: () => workingSetDue });
  return {
    metrics: order.map((i) => METRICS[i]!),
    source: reader.source,
    read(out: MetricBuffer): boolean {
      v.fill(NaN);
      for (let i = 0; i < reader.fastFiles.length; i++) reread(reader.fastFiles[i]!);
      if (!reader.parseFast(v)) return false;
      const now = out.monotonicMs;
      // the rate's own clock is read right after the counter: a thread preempted between the
      // sample's timestamp and this read would otherwise book a late read against an early time
      v[PERCENT] = window.percent(clock(), v[USAGE]!);
      if (workingSet && now >= workingSetDue) {
        reread(workingSet);
        reader.parseWorkingSet(v);
        workingSetDue = dueAfter(now, WORKING_SET_MS);
      }
      if (now >= breakdownDue) {
        reader.breakdown(v);
        breakdownDue = dueAfter(now, BREAKDOWN_MS);
      }
      if (now >= slowDue) {
        reader.slow(v);
        slowDue = dueAfter(now, SLOW_MS);
      }
      write(out);
      return true;
    },
    captured: {
      files: captured,
      liveDueMs: () => Math.min(breakdownDue, slowDue),
      decode(out: MetricBuffer, readMs: number): boolean {
        v.fill(NaN);
        if (!reader.parseFast(v)) return false;
        v[PERCENT] = window.percent(readMs, v[USAGE]!);
        if (workingSet && workingSet.length !== NOT_READ) {
          reader.parseWorkingSet(v);
          workingSetDue = dueAfter(out.monotonicMs, WORKING_SET_MS);
        }
        write(out);
        return true;
      },
    },
    close() {
      for (const file of reader.files) closeStatFile(file);
      reader.files.length = 0;
    },
  };
}

/** The cgroup collector, written as a plugin is (copying this folder starts one), reading under the given roots (tests point them at fixture trees). */
export function defineCgroupCollector(options: CgroupOptions = {}) {
  return defineCollector({
    name: "cgroup",
    description: "CPU, memory, pids and pressure from the container's cgroup (v1, v2, hybrid)",
    metrics: METRICS,
    open(target) {
      const roots = resolveRoots(options);
      const cg = findContainerCgroup(target, roots);
      if ("unavailable" in cg) return cg;
      const hostMemory = hostMemoryBytes(roots.procRoot);
      const reader = cg.version === 2 ? openV2(cg, hostMemory) : openV1(cg, hostMemory);
      if (!reader.slots.has(USAGE) && !reader.slots.has(MEM_USAGE)) {
        for (const file of reader.files) closeStatFile(file);
        return { unavailable: `cgroup of ${target.containerId.slice(0, 12)} has neither CPU nor memory accounting files (${reader.source})` };
      }
      return openProbe(reader, options.clock ?? (() => performance.now()));
    },
  });
}

/** The built-in `cgroup` collector, reading /sys/fs/cgroup and /proc (or CPOST_CGROUP_ROOT, CPOST_PROC_ROOT). */
export default defineCgroupCollector();

/** A configured instance as the sampler runs it; also the `create(options)` its worker rebuilds one with. */
export function createCgroupCollector(options: CgroupOptions = {}): Collector {
  return builtinCollector(defineCgroupCollector(options), { module: "cgroup", options: { cgroupRoot: options.cgroupRoot, procRoot: options.procRoot } });
}
export const create = createCgroupCollector;
