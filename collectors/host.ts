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
import type { Collector, MetricBuffer, MetricSpec, Probe, Target, Unavailable } from "../core/contracts/types.ts";

/** Kernel clock ticks per second for /proc/stat (USER_HZ; 100 on every Linux architecture cpost runs on). */
const USER_HZ = 100;
const NS_PER_TICK = 1e9 / USER_HZ;
const SECTOR_BYTES = 512;

const METRICS: MetricSpec[] = [
  { name: "cpu.usage_ns", unit: "ns", kind: "counter", description: "CPU time of all cores, not idle or iowait" },
  { name: "cpu.percent", unit: "percent", kind: "gauge", description: "CPU use since the last sample, 100 = one core" },
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
  let lastBusy = NaN;
  let lastTotal = NaN;

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
      const busy = user + system + fields[7]!;
      const total = busy + fields[3]! + fields[4]!;
      v[b] = busy * NS_PER_TICK;
      v[b + 1] = total > lastTotal ? ((busy - lastBusy) / (total - lastTotal)) * cores * 100 : NaN;
      v[b + 2] = user * NS_PER_TICK;
      v[b + 3] = system * NS_PER_TICK;
      lastBusy = busy;
      lastTotal = total;

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
const host: Collector = {
  name: "host",
  description: "the whole machine: CPU (/proc/stat), memory (/proc/meminfo), physical disks (/proc/diskstats)",
  metrics: METRICS,
  portable: { module: "host" },
  open(target: Target): Probe | Unavailable {
    if (target.kind !== "host") return { unavailable: "the host collector reads the whole machine; it opens host targets only" };
    return openProbe();
  },
};

export default host;
