/**
 * Collector `host`: the whole machine, for `cpost monitor` — CPU from
 * /proc/stat, memory from /proc/meminfo, disk from /proc/diskstats (whole
 * physical disks only, so partitions and device-mapper volumes are not
 * counted twice). Opens only host targets. The hot path re-reads the three
 * files into buffers allocated at open and parses bytes: no strings, no
 * allocation.
 */
import { closeSync, existsSync, openSync, readdirSync, readSync } from "node:fs";
import { cpus } from "node:os";
import { defineCollector } from "../core/contracts/plugin-sdk.ts";
import type { MetricBuffer, MetricSpec, Probe, Target, Unavailable } from "../core/contracts/types.ts";

/** Kernel clock ticks per second for /proc/stat (USER_HZ; 100 on every Linux architecture cpost runs on). */
const USER_HZ = 100;
const NS_PER_TICK = 1e9 / USER_HZ;
/**
 * cpu.percent is taken over at least this window: /proc/stat counts whole
 * ticks (10 ms each), so over one 10 ms sample a core reads 0 or 100 %;
 * over 1 s a tick is 1 % of one core.
 */
const CPU_WINDOW_MS = 1000;
/** Readings kept for the window (at 1 kHz, a little more than one window). */
const CPU_HISTORY = 2048;
const SECTOR_BYTES = 512;

const METRICS: MetricSpec[] = [
  { name: "cpu.usage_ns", unit: "ns", kind: "counter", description: "CPU time of all cores, not idle, iowait or steal" },
  { name: "cpu.percent", unit: "percent", kind: "gauge", description: "CPU use over the last second (the tick counters' resolution), 100 = one core; steal counts as not busy" },
  { name: "cpu.user_ns", unit: "ns", kind: "counter", description: "CPU time in user mode (user + nice)" },
  { name: "cpu.system_ns", unit: "ns", kind: "counter", description: "CPU time in the kernel (system + irq + softirq)" },
  { name: "memory.usage_bytes", unit: "bytes", kind: "gauge", description: "MemTotal - MemFree (page cache included, as a cgroup's usage)" },
  { name: "memory.working_set_bytes", unit: "bytes", kind: "gauge", description: "MemTotal - MemAvailable" },
  { name: "memory.cache_bytes", unit: "bytes", kind: "gauge", description: "Cached + Buffers" },
  { name: "memory.limit_bytes", unit: "bytes", kind: "gauge", description: "MemTotal" },
  { name: "io.read_bytes", unit: "bytes", kind: "counter", description: "bytes read from physical disks" },
  { name: "io.write_bytes", unit: "bytes", kind: "counter", description: "bytes written to physical disks" },
  { name: "io.read_ops", unit: "ops", kind: "counter", description: "reads completed by physical disks" },
  { name: "io.write_ops", unit: "ops", kind: "counter", description: "writes completed by physical disks" },
];

const MEMINFO_KEYS = ["MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached"].map((k) => Buffer.from(k));

/** Physical disks: entries of /sys/block with a `device` link (not loop, ram, dm-, md). */
function physicalDisks(): Buffer[] {
  try {
    return readdirSync("/sys/block").filter((name) => existsSync(`/sys/block/${name}/device`)).map((name) => Buffer.from(name));
  } catch {
    return [];
  }
}

function openProbe(): Probe | Unavailable {
  const files = ["/proc/stat", "/proc/meminfo", "/proc/diskstats"];
  const fds: number[] = [];
  try {
    for (const file of files) fds.push(openSync(file, "r"));
  } catch (error) {
    for (const fd of fds) closeSync(fd);
    return { unavailable: `cannot read ${files[fds.length]}: ${(error as Error).message}` };
  }
  const [statFd, meminfoFd, diskFd] = fds as [number, number, number];
  const cores = cpus().length;
  const disks = physicalDisks();
  const buffer = Buffer.alloc(1 << 16);
  const fields = new Float64Array(16);
  const memory = new Float64Array(MEMINFO_KEYS.length);
  let length = 0;
  // A ring of (monotonic ms, busy ticks, total ticks), preallocated: the hot path allocates nothing.
  const history = new Float64Array(CPU_HISTORY * 3);
  let newest = -1;
  let oldest = 0;
  let kept = 0;

  /** Reads a whole proc file into `buffer` (proc files answer pread at offset 0). */
  function load(fd: number): boolean {
    try {
      length = readSync(fd, buffer, 0, buffer.length, 0);
      return length > 0;
    } catch {
      return false;
    }
  }

  /** Parses up to `max` whitespace-separated unsigned integers from `at` to the line's end into `fields`. */
  function numbers(at: number, max: number): number {
    let n = 0;
    let i = at;
    while (i < length && buffer[i] !== 10 && n < max) {
      while (buffer[i] === 32 || buffer[i] === 9) i++;
      if (buffer[i]! < 48 || buffer[i]! > 57) break;
      let v = 0;
      while (i < length && buffer[i]! >= 48 && buffer[i]! <= 57) v = v * 10 + buffer[i++]! - 48;
      fields[n++] = v;
    }
    return n;
  }

  function lineEnd(at: number): number {
    let i = at;
    while (i < length && buffer[i] !== 10) i++;
    return i + 1;
  }

  function matches(at: number, end: number, key: Buffer): boolean {
    if (end - at !== key.length) return false;
    for (let k = 0; k < key.length; k++) if (buffer[at + k] !== key[k]) return false;
    return true;
  }

  /** Busy share of the total over the newest window of at least CPU_WINDOW_MS; NaN until one has passed. */
  function windowPercent(nowMs: number, busy: number, total: number): number {
    newest = (newest + 1) % CPU_HISTORY;
    if (kept === CPU_HISTORY) oldest = (oldest + 1) % CPU_HISTORY;
    else kept++;
    history[newest * 3] = nowMs;
    history[newest * 3 + 1] = busy;
    history[newest * 3 + 2] = total;
    // Forget readings while the next one is itself at least a window old: `oldest` is then the newest such reading.
    while (kept > 2) {
      const next = (oldest + 1) % CPU_HISTORY;
      if (nowMs - history[next * 3]! < CPU_WINDOW_MS) break;
      oldest = next;
      kept--;
    }
    if (kept < 2 || (nowMs - history[oldest * 3]! < CPU_WINDOW_MS && kept < CPU_HISTORY)) return NaN;
    const spent = total - history[oldest * 3 + 2]!;
    return spent > 0 ? ((busy - history[oldest * 3 + 1]!) / spent) * cores * 100 : NaN;
  }

  return {
    metrics: METRICS,
    source: `/proc/stat, /proc/meminfo, /proc/diskstats (${disks.map((d) => d.toString()).join(", ") || "no physical disks"})`,
    read(out: MetricBuffer): boolean {
      const v = out.values;
      const b = out.base;
      // /proc/stat "cpu  user nice system idle iowait irq softirq steal ..." (ticks, all cores).
      if (!load(statFd) || numbers(3, 8) < 8) return false;
      const user = fields[0]! + fields[1]!;
      const system = fields[2]! + fields[5]! + fields[6]!;
      // Steal is time the hypervisor gave to others: in the total, never busy.
      const busy = user + system;
      const total = busy + fields[3]! + fields[4]! + fields[7]!;
      v[b] = busy * NS_PER_TICK;
      v[b + 1] = windowPercent(out.monotonicMs, busy, total);
      v[b + 2] = user * NS_PER_TICK;
      v[b + 3] = system * NS_PER_TICK;

      memory.fill(NaN);
      if (load(meminfoFd)) {
        for (let at = 0; at < length; at = lineEnd(at)) {
          let colon = at;
          while (colon < length && buffer[colon] !== 58 && buffer[colon] !== 10) colon++;
          for (let k = 0; k < MEMINFO_KEYS.length; k++) {
            if (matches(at, colon, MEMINFO_KEYS[k]!) && numbers(colon + 1, 1) === 1) memory[k] = fields[0]! * 1024;
          }
        }
      }
      v[b + 4] = memory[0]! - memory[1]!;
      v[b + 5] = memory[0]! - memory[2]!;
      v[b + 6] = memory[4]! + memory[3]!;
      v[b + 7] = memory[0]!;

      // /proc/diskstats "major minor name reads merged sectors ms writes merged sectors ...".
      let readBytes = 0, writeBytes = 0, readOps = 0, writeOps = 0;
      if (load(diskFd)) {
        for (let at = 0; at < length; at = lineEnd(at)) {
          let i = at;
          for (let skip = 0; skip < 2; skip++) {
            while (buffer[i] === 32) i++;
            while (buffer[i]! >= 48 && buffer[i]! <= 57) i++;
          }
          while (buffer[i] === 32) i++;
          const nameStart = i;
          while (i < length && buffer[i] !== 32 && buffer[i] !== 10) i++;
          let physical = false;
          for (let d = 0; d < disks.length; d++) if (matches(nameStart, i, disks[d]!)) physical = true;
          if (!physical || numbers(i, 7) < 7) continue;
          readOps += fields[0]!;
          readBytes += fields[2]! * SECTOR_BYTES;
          writeOps += fields[4]!;
          writeBytes += fields[6]! * SECTOR_BYTES;
        }
      }
      v[b + 8] = readBytes;
      v[b + 9] = writeBytes;
      v[b + 10] = readOps;
      v[b + 11] = writeOps;
      return true;
    },
    close() {
      for (const fd of fds.splice(0)) {
        try {
          closeSync(fd);
        } catch {
          // Already closed: nothing left to release.
        }
      }
    },
  };
}

/** The host collector: whole-machine CPU, memory and disk. */
export default defineCollector({
  name: "host",
  description: "the whole machine: CPU (/proc/stat), memory (/proc/meminfo), physical disks (/proc/diskstats)",
  metrics: METRICS,
  open(target: Target): Probe | Unavailable {
    if (target.kind !== "host") return { unavailable: "the host collector reads the whole machine; it opens host targets only" };
    return openProbe();
  },
});
