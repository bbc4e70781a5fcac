/**
 * The blkio collector: a container's disk reads and writes, bytes and ops,
 * from blkio.throttle.io_service_bytes / io_serviced (cgroup v1) or io.stat
 * (v2). Where those stay empty (measured: kernel 6.18, v1, virtio disk, even
 * for O_DIRECT; docker stats shows nothing there either), the bytes come from
 * /proc/<pid>/io of the container's processes: a counter the cgroup files
 * leave at zero is taken from /proc, and `source` says which one it was. The
 * cgroup files are read about every 10 ms, /proc about every 100 ms; rows in
 * between leave the slots NaN. When the cgroup goes, what its processes did
 * after their last reading (settled from their reaping, proc.ts) makes one
 * last row; on v2 that tail is added to io.stat's last count.
 */
import { existsSync } from "node:fs";
import { builtinCollector, defineCollector } from "../../core/contracts/plugin-sdk.ts";
import type { Collector, MetricBuffer, MetricSpec, Probe } from "../../core/contracts/types.ts";
import { findContainerCgroup, resolveRoots, type CgroupRoots } from "../cgroup/paths.ts";
import { defineProcCounters } from "./proc.ts";
import { closeStatFile, dueAfter, keyBytes, nextLine, numberAt, NOT_READ, openStatFile, reread, startsWith, type CapturingProbe, type StatFile } from "../cgroup/files.ts";

/** Options of the blkio collector: where the cgroup filesystem and /proc are. */
export type BlkioOptions = CgroupRoots;

const METRICS: readonly MetricSpec[] = [
  { name: "io.read_bytes", unit: "bytes", kind: "counter", description: "bytes read from block devices" },
  { name: "io.write_bytes", unit: "bytes", kind: "counter", description: "bytes written to block devices" },
  { name: "io.read_ops", unit: "ops", kind: "counter", description: "read requests (cgroup files only)" },
  { name: "io.write_ops", unit: "ops", kind: "counter", description: "write requests (cgroup files only)" },
];

/**
 * The cgroup's files (io.stat; v1's two blkio files) are read about every
 * 10 ms, by the sampler's native loop between JS ticks: one or two cheap
 * reads, and the op counts exist only there, so the last interval before a
 * cgroup goes (lost with it) must stay short; at 100 ms an init that did
 * 200 MiB of O_DIRECT reads and exited at once showed 145 of its 200 read
 * ops. The /proc fallback (the pid list, a file per process, the parents)
 * costs more than everything else together and its bytes are settled at
 * the end from the reaping, so it is read about every 100 ms. Due as
 * files.ts's dueAfter says, on the sampler's shared marks.
 */
const CGROUP_MS = 10;
const PROC_MS = 100;
const READ = keyBytes("Read");
const WRITE = keyBytes("Write");
const V2_KEYS = ["rbytes=", "wbytes=", "rios=", "wios="].map(keyBytes);

/** Sums v1 `MAJ:MIN Read|Write N` lines into out[0] (reads) and out[1] (writes). */
function sumV1(file: StatFile, out: Float64Array, at: number): void {
  const buf = file.buf;
  const end = file.length;
  let read = 0;
  let write = 0;
  for (let line = 0; line < end; line = nextLine(buf, line, end)) {
    let op = line;
    while (op < end && buf[op] !== 32 && buf[op] !== 10) op++;
    if (buf[op] !== 32) continue;
    op++;
    if (startsWith(buf, op, end, READ) && buf[op + READ.length] === 32) read += numberAt(buf, op + READ.length, end);
    else if (startsWith(buf, op, end, WRITE) && buf[op + WRITE.length] === 32) write += numberAt(buf, op + WRITE.length, end);
  }
  out[at] = read;
  out[at + 1] = write;
}

/** Sums v2 io.stat `MAJ:MIN rbytes=… wbytes=… rios=… wios=…` over devices into out[0..3]. */
function sumV2(file: StatFile, out: Float64Array): void {
  out.fill(0);
  const buf = file.buf;
  const end = file.length;
  for (let line = 0; line < end; line = nextLine(buf, line, end)) {
    const lineEnd = nextLine(buf, line, end);
    for (let i = line; i < lineEnd; i++) {
      if (buf[i] !== 32) continue;
      for (let k = 0; k < V2_KEYS.length; k++) {
        const key = V2_KEYS[k]!;
        if (startsWith(buf, i + 1, lineEnd, key)) out[k]! += numberAt(buf, i + 1 + key.length, lineEnd);
      }
    }
  }
}

/** The blkio collector, written as a plugin is (copying this folder starts one), reading under the given roots (tests point them at fixture trees). */
export function defineBlkioCollector(options: BlkioOptions = {}) {
  return defineCollector({
    name: "blkio",
    description: "disk bytes and ops from cgroup blkio/io.stat, or /proc/<pid>/io where those stay empty",
    metrics: METRICS,
    open(target): CapturingProbe | { unavailable: string } {
      const roots = resolveRoots(options);
      const cg = findContainerCgroup(target, roots);
      if ("unavailable" in cg) return cg;
      const dir = cg.version === 2 ? cg.unified! : cg.v1.blkio;
      if (!dir) return { unavailable: `no blkio controller for ${cg.relative}` };
      const bytesFile = openStatFile(cg.version === 2 ? `${dir}/io.stat` : `${dir}/blkio.throttle.io_service_bytes`, 8192);
      const opsFile = cg.version === 2 ? null : openStatFile(`${dir}/blkio.throttle.io_serviced`, 8192);
      if (!bytesFile) {
        closeStatFile(opsFile);
        return { unavailable: `${dir} has no ${cg.version === 2 ? "io.stat" : "blkio.throttle.io_service_bytes"}` };
      }
      const proc = existsSync(`${dir}/cgroup.procs`) ? defineProcCounters(roots.procRoot, `${dir}/cgroup.procs`, target) : null;
      const cgroup = new Float64Array(4);
      const fromProc = new Float64Array(2);
      // Both sources as read on the same tick (the last one that read /proc): what /proc adds after it
      // is what the cgroup's count lacks once the cgroup has gone.
      const jointCgroup = new Float64Array(2);
      const jointProc = new Float64Array(2);
      const reported = new Float64Array(2);
      // Which source each reported counter last came from, and so the probe's `source`: early on /proc
      // can show dirtied pages io.stat has not counted yet; once the cgroup's count passes them, it is the source again.
      const reportedFromProc = [false, false];
      let cgroupDue = -Infinity;
      let procDue = -Infinity;
      let gone = false;
      const files = opsFile ? [bytesFile, opsFile] : [bytesFile];

      /** Parses the cgroup files' last read into `cgroup`; false once they cannot be read (the cgroup is gone). */
      const parseCgroup = (): boolean => {
        if (bytesFile.length < 0) return false;
        if (cg.version === 2) sumV2(bytesFile, cgroup);
        else {
          sumV1(bytesFile, cgroup, 0);
          // no bytes, no ops: the ops file's read is not used while the bytes are zero (always, on some kernels)
          if (cgroup[0]! + cgroup[1]! === 0) cgroup[2] = cgroup[3] = 0;
          else if (opsFile && opsFile.length >= 0) sumV1(opsFile, cgroup, 2);
          else cgroup[2] = cgroup[3] = NaN;
        }
        return true;
      };

      /**
       * The row from what was read: `cgroupRead` (else the cgroup's slots stay NaN: not read this tick),
       * /proc as last read (`procRead`: on this tick). False: the settling row after the cgroup went added nothing.
       */
      const emit = (out: MetricBuffer, cgroupRead: boolean, procRead: boolean): boolean => {
        const values = out.values;
        const base = out.base;
        if (!cgroupRead && !gone) {
          values.fill(NaN, base, base + METRICS.length);
          return true;
        }
        let rose = false;
        for (let i = 0; i < 2; i++) {
          // The cgroup's count is the source wherever it has bytes; /proc is read a moment
          // later, so while I/O is in flight it runs ahead and must not win on that alone.
          const fromCgroup = !proc || cgroup[i]! > 0 || !(fromProc[i]! > 0);
          // Once the cgroup is gone its last count misses what was done after that reading;
          // /proc's final count (settled from the reaping) says how much that was.
          const best = !fromCgroup ? fromProc[i]! : gone ? Math.max(cgroup[i]!, jointCgroup[i]! + Math.max(0, fromProc[i]! - jointProc[i]!)) : cgroup[i]!;
          if (!gone && procRead) {
            jointCgroup[i] = cgroup[i]!;
            jointProc[i] = proc ? fromProc[i]! : 0;
          }
          // counters never go back: a child's bytes are briefly in neither it nor its parent while it is reaped
          if (best > reported[i]!) {
            reported[i] = best;
            reportedFromProc[i] = !fromCgroup;
            rose = true;
          }
          values[base + i] = reported[i]!;
        }
        if (gone && !rose) return false;
        // ops exist only in the cgroup files: if they missed bytes /proc saw, their op counts are wrong too
        const opsTrusted = cgroup[0]! + cgroup[1]! > 0 || reported[0]! + reported[1]! === 0;
        values[base + 2] = opsTrusted ? cgroup[2]! : NaN;
        values[base + 3] = opsTrusted ? cgroup[3]! : NaN;
        return true;
      };

      /** The cgroup went (its files failed): the processes' settled /proc counts make one last row, if they add anything. */
      const settle = (out: MetricBuffer): boolean => {
        if (!proc) return false;
        gone = true;
        proc.read(out.monotonicMs, fromProc);
        return emit(out, false, true);
      };
      const cgroupSource = cg.version === 2 ? `cgroup v2 ${dir}/io.stat` : `cgroup v1 ${dir}/blkio.throttle.io_service_bytes,io_serviced`;
      return {
        metrics: METRICS,
        get source() {
          return reportedFromProc[0] || reportedFromProc[1]
            ? `/proc/<pid>/io of the container's processes (${cgroup[0]! + cgroup[1]! === 0 ? "cgroup blkio files empty; ops not measured" : `where ${cgroupSource} had none`})`
            : cgroupSource;
        },
        captured: {
          files: files.map((file) => ({ file, everyMs: CGROUP_MS, dueMs: () => cgroupDue })),
          liveDueMs: () => procDue,
          decode(out: MetricBuffer): boolean {
            if (gone) return false;
            if (bytesFile.length === NOT_READ) return emit(out, false, false);
            cgroupDue = dueAfter(out.monotonicMs, CGROUP_MS);
            return parseCgroup() ? emit(out, true, false) : settle(out);
          },
        },
        read(out: MetricBuffer): boolean {
          if (gone) return false;
          const now = out.monotonicMs;
          const cgroupRead = now >= cgroupDue;
          if (cgroupRead) {
            cgroupDue = dueAfter(now, CGROUP_MS);
            for (const file of files) reread(file);
            if (!parseCgroup()) return settle(out);
          }
          const procRead = proc !== null && now >= procDue;
          if (procRead) {
            procDue = dueAfter(now, PROC_MS);
            proc.read(now, fromProc);
          }
          return emit(out, cgroupRead, procRead);
        },
        close() {
          closeStatFile(bytesFile);
          closeStatFile(opsFile);
          proc?.close();
        },
      };
    },
  });
}

/** The built-in `blkio` collector, reading /sys/fs/cgroup and /proc (or CPOST_CGROUP_ROOT, CPOST_PROC_ROOT). */
export default defineBlkioCollector();

/** A configured instance as the sampler runs it; also the `create(options)` its worker rebuilds one with. */
export function createBlkioCollector(options: BlkioOptions = {}): Collector {
  return builtinCollector(defineBlkioCollector(options), { module: "blkio", options: { ...options } });
}
export const create = createBlkioCollector;
