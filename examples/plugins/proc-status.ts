/**
 * Collector plugin `proc-status`: the container's main process as the kernel
 * reports it in /proc/<pid>/status: resident and peak memory, threads, and
 * context switches. The cgroup collector sees the whole container; this sees
 * its first process alone, which is the operator itself when the image runs
 * it directly.
 *
 *   cpost run pipeline.yaml input --collector-plugin ./proc-status.ts
 *
 * Option: `--proc-status-proc-root DIR` (default /proc), for a cpost that
 * sees the host's /proc mounted elsewhere.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { defineCollector, type MetricSpec } from "cpost";

/** The status lines read, the metric each fills, and its unit's factor (the kernel writes kB). */
const FIELDS: ReadonlyArray<readonly [key: string, metric: MetricSpec, factor: number]> = [
  ["VmRSS:", { name: "proc.rss_bytes", unit: "bytes", kind: "gauge", description: "resident memory of the main process (VmRSS)" }, 1024],
  ["VmHWM:", { name: "proc.peak_rss_bytes", unit: "bytes", kind: "gauge", description: "peak resident memory of the main process (VmHWM)" }, 1024],
  ["Threads:", { name: "proc.threads", unit: "count", kind: "gauge", description: "threads of the main process" }, 1],
  ["voluntary_ctxt_switches:", { name: "proc.voluntary_ctxt_switches", unit: "count", kind: "counter", description: "times it gave up the CPU (waiting for I/O, a lock)" }, 1],
  ["nonvoluntary_ctxt_switches:", { name: "proc.nonvoluntary_ctxt_switches", unit: "count", kind: "counter", description: "times it was preempted" }, 1],
];
const KEYS = FIELDS.map(([key]) => Buffer.from(key));
const NEWLINE = 0x0a;
const SPACE = 0x20;
const TAB = 0x09;

export default defineCollector({
  name: "proc-status",
  description: "memory, threads and context switches of the container's main process, from /proc/<pid>/status",
  metrics: FIELDS.map(([, metric]) => metric),
  options: {
    "proc-root": { description: "where the host's /proc is mounted", default: "/proc" },
  },

  open(target, { options }) {
    const root = options["proc-root"];
    // the pid may come after open (a watch begun as the container starts): read follows target.pid
    if (target.pid > 0) {
      try {
        closeSync(openSync(`${root}/${target.pid}/status`, "r"));
      } catch (error) {
        return { unavailable: `cannot open ${root}/${target.pid}/status: ${(error as NodeJS.ErrnoException).code ?? String(error)}` };
      }
    }
    // allocated once here: the hot path below only re-reads into them
    const text = Buffer.alloc(8192);
    const found = new Float64Array(FIELDS.length);
    let fd = -1;
    let fdPid = 0;

    /** Where line `start`'s key matches one of KEYS: that key's index, else -1. */
    const keyAt = (start: number, length: number): number => {
      for (let k = 0; k < KEYS.length; k++) {
        const key = KEYS[k]!;
        if (start + key.length > length) continue;
        let same = true;
        for (let i = 0; i < key.length && same; i++) same = text[start + i] === key[i];
        if (same) return k;
      }
      return -1;
    };

    return {
      metrics: FIELDS.map(([, metric]) => metric),
      source: `${root}/<pid>/status of the container's main process`,

      read(out) {
        if (target.pid <= 0) return true; // not known yet: its slots stay NaN, "not measured"
        let length: number;
        try {
          if (fdPid !== target.pid) {
            if (fd >= 0) closeSync(fd);
            fd = openSync(`${root}/${target.pid}/status`, "r"); // once per pid, not per sample
            fdPid = target.pid;
          }
          length = readSync(fd, text, 0, text.length, 0);
        } catch {
          return false; // ENOENT/ESRCH: the process is gone, its series ends here
        }
        if (length === 0) return false;
        found.fill(NaN);
        for (let start = 0; start < length; ) {
          const k = keyAt(start, length);
          let i = start;
          if (k >= 0) {
            i += KEYS[k]!.length;
            while (text[i] === SPACE || text[i] === TAB) i++;
            let value = 0;
            for (let c = text[i]!; c >= 0x30 && c <= 0x39; c = text[++i]!) value = value * 10 + (c - 0x30);
            found[k] = value * FIELDS[k]![2];
          }
          while (i < length && text[i] !== NEWLINE) i++;
          start = i + 1;
        }
        for (let k = 0; k < found.length; k++) out.values[out.base + k] = found[k]!;
        return true;
      },

      close() {
        if (fd >= 0) closeSync(fd);
        fd = -1;
      },
    };
  },
});
