/**
 * The blkio collector's fallback: bytes read and written by a container's
 * processes, summed from /proc/<pid>/io over the pids its cgroup.procs
 * lists (re-read every ~20 ms), each file held open and re-read with pread.
 */
import { closeStatFile, keyBytes, keyedValues, nextLine, numberAt, openStatFile, reread, type StatFile } from "./cgroup-files.ts";

/** How often the container's process list is re-read (ms, at most). */
const PIDS_MS = 20;
const PROC_KEYS = [keyBytes("read_bytes:"), keyBytes("write_bytes:")];

/** A process of the container, followed through /proc/<pid>/io. */
interface Tracked {
  pid: number;
  io: StatFile;
  stat: StatFile | null;
  ppid: number;
  read: number;
  write: number;
  alive: boolean;
}

/** The parent pid from /proc/<pid>/stat (`pid (comm) S ppid …`; comm may hold spaces and parentheses). */
function parentOf(stat: StatFile | null): number {
  if (!stat || !reread(stat)) return 0;
  let close = stat.length - 1;
  while (close > 0 && stat.buf[close] !== 41 /* ) */) close--;
  return numberAt(stat.buf, close + 4, stat.length) || 0;
}

/**
 * Sums /proc/<pid>/io over the container's processes. A reaped child's bytes
 * move into its parent's counters, so a departed process counts on only when
 * no followed parent took it in (the init process, `docker exec`ed ones).
 */
export function defineProcCounters(procRoot: string, procs: StatFile) {
  const byPid = new Map<number, Tracked>();
  const list: Tracked[] = [];
  const io = new Float64Array(2);
  let departedRead = 0;
  let departedWrite = 0;
  let lastRefresh = -Infinity;
  const refresh = (): void => {
    if (!reread(procs)) return;
    const buf = procs.buf;
    for (let at = 0; at < procs.length; at = nextLine(buf, at, procs.length)) {
      const pid = numberAt(buf, at, procs.length);
      if (!(pid > 0)) continue;
      const known = byPid.get(pid);
      if (known) {
        known.ppid = parentOf(known.stat) || known.ppid; // orphans get a new parent
        continue;
      }
      const file = openStatFile(`${procRoot}/${pid}/io`, 512);
      if (!file) continue;
      const stat = openStatFile(`${procRoot}/${pid}/stat`, 1024);
      const t: Tracked = { pid, io: file, stat, ppid: parentOf(stat), read: 0, write: 0, alive: true };
      byPid.set(pid, t);
      list.push(t);
    }
  };
  const forget = (i: number): void => {
    const t = list[i]!;
    closeStatFile(t.io);
    closeStatFile(t.stat);
    byPid.delete(t.pid);
    list[i] = list[list.length - 1]!;
    list.pop();
  };
  return {
    /** Fills out[0], out[1] with bytes read and written by the container's processes so far. */
    read(now: number, out: Float64Array): void {
      if (now - lastRefresh >= PIDS_MS) {
        refresh();
        lastRefresh = now;
      }
      let read = 0;
      let write = 0;
      for (let i = 0; i < list.length; i++) {
        const t = list[i]!;
        t.alive = reread(t.io);
        if (!t.alive) continue;
        keyedValues(t.io, PROC_KEYS, io);
        t.read = io[0]!;
        t.write = io[1]!;
        read += t.read;
        write += t.write;
      }
      for (let i = list.length - 1; i >= 0; i--) {
        const t = list[i]!;
        if (t.alive) continue;
        if (!byPid.get(t.ppid)?.alive) {
          departedRead += t.read;
          departedWrite += t.write;
        }
        forget(i);
      }
      out[0] = read + departedRead;
      out[1] = write + departedWrite;
    },
    close(): void {
      while (list.length > 0) forget(list.length - 1);
    },
  };
}
