/**
 * How each cgroup version's files are read into the cgroup collector's
 * metric slots: which file fills which metric, and in which tier (fast:
 * every sample; working set: memory.stat; breakdown: the rest of the CPU
 * and memory figures; slow: the limit and PSI). How often each tier is read
 * is the collector's choice (index.ts).
 * v1 reads one directory per controller, v2 one directory; a hybrid v1 host
 * adds PSI from the container's directory in the unified tree.
 */
import type { MetricSpec } from "../../core/contracts/types.ts";
import type { ContainerCgroup } from "./paths.ts";
import { closeStatFile, fieldOnLine, fileNumber, keyBytes, keyedValues, openStatFile, reread, type StatFile } from "./files.ts";

const m = (name: string, unit: MetricSpec["unit"], kind: MetricSpec["kind"], description: string): MetricSpec => ({ name, unit, kind, description });
/** Every metric the collector can report, in slot order; a probe reports those its files allow. */
export const METRICS: readonly MetricSpec[] = [
  m("cpu.usage_ns", "ns", "counter", "CPU time used (cpuacct.usage / cpu.stat usage_usec)"),
  m("cpu.percent", "percent", "gauge", "CPU use over the last 100 ms (50-100 ms at the start), 100 = one core"),
  m("cpu.user_ns", "ns", "counter", "CPU time in user mode"),
  m("cpu.system_ns", "ns", "counter", "CPU time in kernel mode"),
  m("cpu.nr_throttled", "count", "counter", "periods the CFS quota throttled the container"),
  m("cpu.throttled_ns", "ns", "counter", "time spent throttled"),
  m("memory.usage_bytes", "bytes", "gauge", "memory charged, page cache included (memory.usage_in_bytes / memory.current)"),
  m("memory.working_set_bytes", "bytes", "gauge", "usage minus inactive file pages, as docker stats and the kubelet"),
  m("memory.rss_bytes", "bytes", "gauge", "anonymous memory (rss / anon)"),
  m("memory.cache_bytes", "bytes", "gauge", "page cache (cache / file)"),
  m("memory.peak_bytes", "bytes", "gauge", "highest usage so far (max_usage_in_bytes / memory.peak)"),
  m("memory.limit_bytes", "bytes", "gauge", "memory limit; the host's memory when unlimited, as docker stats"),
  m("memory.oom_kills", "count", "counter", "processes the OOM killer ended"),
  m("pids.current", "count", "gauge", "tasks in the container"),
  m("psi.cpu.some_avg10", "percent", "gauge", "share of time some task waited for CPU, 10 s average"),
  m("psi.cpu.full_avg10", "percent", "gauge", "share of time all tasks waited for CPU, 10 s average"),
  m("psi.memory.some_avg10", "percent", "gauge", "share of time some task stalled on memory, 10 s average"),
  m("psi.memory.full_avg10", "percent", "gauge", "share of time all tasks stalled on memory, 10 s average"),
  m("psi.io.some_avg10", "percent", "gauge", "share of time some task stalled on I/O, 10 s average"),
  m("psi.io.full_avg10", "percent", "gauge", "share of time all tasks stalled on I/O, 10 s average"),
  m("cpu.nr_periods", "count", "counter", "CFS periods that had runnable work under a CPU limit (nr_throttled / nr_periods: the throttled share)"),
];
/** Slot of each metric in METRICS. */
export const [USAGE, PERCENT, USER, SYSTEM, NR_THROTTLED, THROTTLED, MEM_USAGE, WORKING_SET, RSS, CACHE, PEAK, LIMIT, OOM, PIDS, PSI] =
  METRICS.map((_, i) => i) as [number, number, number, number, number, number, number, number, number, number, number, number, number, number, number];
/** Slot of cpu.nr_periods (after the PSI metrics). */
export const NR_PERIODS = METRICS.findIndex((x) => x.name === "cpu.nr_periods");

const PSI_RESOURCES = ["cpu", "memory", "io"] as const;
const SOME = keyBytes("some ");
const FULL = keyBytes("full ");
const AVG10 = keyBytes("avg10=");
/** No limit: v1 writes PAGE_COUNTER_MAX pages (~2^63 bytes), v2 writes "max". */
const UNLIMITED = 2 ** 62;

/** The files of one version and how to read each tier into the slot values. */
export interface Reader {
  source: string;
  files: StatFile[];
  /** Slots the files can fill. */
  slots: Set<number>;
  /** CPU and memory usage, re-read every sample (by the caller, or by the sampler's native loop). */
  fastFiles: StatFile[];
  /** Parses the fast files' last reads; false when none of them could be read (the cgroup is gone). */
  parseFast(v: Float64Array): boolean;
  /** memory.stat (working set, rss, cache), re-read by the caller as often as it wants the working set. */
  workingSetFile: StatFile | null;
  /** Parses memory.stat's last read; after parseFast, as the working set is usage less inactive file pages. */
  parseWorkingSet(v: Float64Array): void;
  /** Re-reads and parses the rest of the breakdown: user/system, throttling, peak, OOM kills, pids. */
  breakdown(v: Float64Array): void;
  slow(v: Float64Array): void;
}

/** PSI files (v2, or the unified tree of a hybrid host): some/full avg10 of cpu, memory, io. */
function pressureFiles(dir: string | undefined, slots: Set<number>, files: StatFile[]): (v: Float64Array) => void {
  const opened: Array<{ file: StatFile; slot: number; full: boolean }> = [];
  for (const [r, resource] of PSI_RESOURCES.entries()) {
    const file = dir ? openStatFile(`${dir}/${resource}.pressure`, 256) : null;
    if (!file || !reread(file) || file.length === 0) {
      closeStatFile(file);
      continue;
    }
    files.push(file);
    const full = !Number.isNaN(fieldOnLine(file, FULL, AVG10));
    opened.push({ file, slot: PSI + 2 * r, full });
    slots.add(PSI + 2 * r);
    if (full) slots.add(PSI + 2 * r + 1);
  }
  return (v) => {
    for (const p of opened) {
      if (!reread(p.file)) continue;
      v[p.slot] = fieldOnLine(p.file, SOME, AVG10);
      if (p.full) v[p.slot + 1] = fieldOnLine(p.file, FULL, AVG10);
    }
  };
}

/** The OOM-kill count's key in v1 memory.oom_control and v2 memory.events. */
const OOM_KEYS = [keyBytes("oom_kill")];

function limitOf(raw: number, hostMemory: number): number {
  if (Number.isNaN(raw)) return NaN;
  return raw >= UNLIMITED ? hostMemory : Math.min(raw, hostMemory || raw);
}

/** Opens the files of a cgroup v1 container (controllers in directories of their own). */
export function openV1(cg: ContainerCgroup, hostMemory: number): Reader {
  const files: StatFile[] = [];
  const slots = new Set<number>();
  const open = (dir: string | undefined, name: string, fills: number[], size = 256): StatFile | null => {
    const file = dir ? openStatFile(`${dir}/${name}`, size) : null;
    if (file) files.push(file), fills.forEach((s) => slots.add(s));
    return file;
  };
  const { cpu, cpuacct, memory, pids } = cg.v1;
  const usage = open(cpuacct, "cpuacct.usage", [USAGE, PERCENT]);
  const user = open(cpuacct, "cpuacct.usage_user", [USER]);
  const system = open(cpuacct, "cpuacct.usage_sys", [SYSTEM]);
  const cpuStat = open(cpu, "cpu.stat", [NR_THROTTLED, THROTTLED, NR_PERIODS]);
  const memUsage = open(memory, "memory.usage_in_bytes", [MEM_USAGE]);
  const memStat = open(memory, "memory.stat", [RSS, CACHE, WORKING_SET], 16384);
  const peak = open(memory, "memory.max_usage_in_bytes", [PEAK]);
  const limit = open(memory, "memory.limit_in_bytes", [LIMIT]);
  const oom = open(memory, "memory.oom_control", [OOM]);
  const pidsCurrent = open(pids, "pids.current", [PIDS]);
  const throttleKeys = [keyBytes("nr_throttled"), keyBytes("throttled_time"), keyBytes("nr_periods")];
  // total_* include child cgroups; plain keys are the fallback for kernels without them
  const statKeys = ["total_rss", "total_cache", "total_inactive_file", "rss", "cache", "inactive_file"].map(keyBytes);
  const stat = new Float64Array(statKeys.length);
  const pressure = pressureFiles(cg.unified, slots, files);
  const dirs = (["cpu", "cpuacct", "memory", "pids"] as const).filter((c) => cg.v1[c]).join(",");
  return {
    source: `cgroup v1 ${cg.v1.memory ? cg.v1.memory.replace(/\/memory\//, `/{${dirs}}/`) : cg.relative}` +
      (slots.has(PSI) ? `, PSI from ${cg.unified}` : ""),
    files,
    slots,
    fastFiles: [usage, memUsage].filter((f): f is StatFile => f !== null),
    parseFast(v) {
      let alive = false;
      if (usage && usage.length >= 0) (v[USAGE] = fileNumber(usage)), (alive = true);
      if (memUsage && memUsage.length >= 0) (v[MEM_USAGE] = fileNumber(memUsage)), (alive = true);
      return alive;
    },
    workingSetFile: memStat,
    parseWorkingSet(v) {
      if (!memStat || memStat.length < 0) return;
      keyedValues(memStat, statKeys, stat);
      v[RSS] = Number.isNaN(stat[0]!) ? stat[3]! : stat[0]!;
      v[CACHE] = Number.isNaN(stat[1]!) ? stat[4]! : stat[1]!;
      const inactiveFile = Number.isNaN(stat[2]!) ? stat[5]! : stat[2]!;
      v[WORKING_SET] = Math.max(0, v[MEM_USAGE]! - inactiveFile);
    },
    breakdown(v) {
      if (user && reread(user)) v[USER] = fileNumber(user);
      if (system && reread(system)) v[SYSTEM] = fileNumber(system);
      if (cpuStat && reread(cpuStat)) {
        keyedValues(cpuStat, throttleKeys, stat);
        v[NR_THROTTLED] = stat[0]!;
        v[THROTTLED] = stat[1]!;
        v[NR_PERIODS] = stat[2]!;
      }
      if (peak && reread(peak)) v[PEAK] = fileNumber(peak);
      if (oom && reread(oom)) {
        keyedValues(oom, OOM_KEYS, stat);
        v[OOM] = stat[0]!;
      }
      if (pidsCurrent && reread(pidsCurrent)) v[PIDS] = fileNumber(pidsCurrent);
    },
    slow(v) {
      if (limit && reread(limit)) v[LIMIT] = limitOf(fileNumber(limit), hostMemory);
      pressure(v);
    },
  };
}

/** Opens the files of a cgroup v2 container (one directory). */
export function openV2(cg: ContainerCgroup, hostMemory: number): Reader {
  const dir = cg.unified!;
  const files: StatFile[] = [];
  const slots = new Set<number>();
  const open = (name: string, fills: number[], size = 256): StatFile | null => {
    const file = openStatFile(`${dir}/${name}`, size);
    if (file) files.push(file), fills.forEach((s) => slots.add(s));
    return file;
  };
  const cpuStat = open("cpu.stat", [USAGE, PERCENT, USER, SYSTEM, NR_THROTTLED, THROTTLED, NR_PERIODS], 1024);
  const current = open("memory.current", [MEM_USAGE]);
  const memStat = open("memory.stat", [RSS, CACHE, WORKING_SET], 16384);
  const peak = open("memory.peak", [PEAK]);
  const max = open("memory.max", [LIMIT]);
  const events = open("memory.events", [OOM]);
  const pidsCurrent = open("pids.current", [PIDS]);
  const cpuKeys = ["usage_usec", "user_usec", "system_usec", "nr_throttled", "throttled_usec", "nr_periods"].map(keyBytes);
  const cpu = new Float64Array(cpuKeys.length);
  const statKeys = ["anon", "file", "inactive_file"].map(keyBytes);
  const stat = new Float64Array(statKeys.length);
  const pressure = pressureFiles(dir, slots, files);
  return {
    source: `cgroup v2 ${dir}`,
    files,
    slots,
    fastFiles: [cpuStat, current].filter((f): f is StatFile => f !== null),
    parseFast(v) {
      let alive = false;
      if (cpuStat && cpuStat.length >= 0) {
        keyedValues(cpuStat, cpuKeys, cpu);
        v[USAGE] = cpu[0]! * 1000;
        v[USER] = cpu[1]! * 1000;
        v[SYSTEM] = cpu[2]! * 1000;
        v[NR_THROTTLED] = cpu[3]!;
        v[THROTTLED] = cpu[4]! * 1000;
        v[NR_PERIODS] = cpu[5]!;
        alive = true;
      }
      if (current && current.length >= 0) (v[MEM_USAGE] = fileNumber(current)), (alive = true);
      return alive;
    },
    workingSetFile: memStat,
    parseWorkingSet(v) {
      if (!memStat || memStat.length < 0) return;
      keyedValues(memStat, statKeys, stat);
      v[RSS] = stat[0]!;
      v[CACHE] = stat[1]!;
      v[WORKING_SET] = Math.max(0, v[MEM_USAGE]! - stat[2]!);
    },
    breakdown(v) {
      if (peak && reread(peak)) v[PEAK] = fileNumber(peak);
      if (events && reread(events)) {
        keyedValues(events, OOM_KEYS, stat);
        v[OOM] = stat[0]!;
      }
      if (pidsCurrent && reread(pidsCurrent)) v[PIDS] = fileNumber(pidsCurrent);
    },
    slow(v) {
      if (max && reread(max)) v[LIMIT] = limitOf(fileNumber(max), hostMemory);
      pressure(v);
    },
  };
}
