/**
 * The blkio collector's fallback: bytes read and written by a container's
 * processes, summed from /proc/<pid>/io over the pids its cgroup.procs
 * lists (re-read every ~20 ms), each io file held open and re-read with
 * pread. A process's bytes outlive it in the process that reaps it: a
 * container process's parent inside the container, and for the container's
 * init the parent outside it (the engine's shim), whose /proc/<pid>/io is
 * followed too, so the init's last bytes before its exit count.
 */
import { closeSync, openSync, readSync } from "node:fs";
import type { Target } from "../../core/contracts/types.ts";
import { closeStatFile, keyBytes, keyedValues, nextLine, numberAt, openStatFile, reread, type StatFile } from "../cgroup/files.ts";

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

/**
 * The parent outside the container of one or more of its top processes. The
 * kernel adds a child's whole I/O (with its reaped descendants') to the
 * parent that reaps it, so the parent's rise across the round in which a top
 * process went is that process's final count, including what it did after
 * its last reading.
 */
interface Reaper {
  pid: number;
  io: StatFile;
  read: number;
  write: number;
  beforeRead: number;
  beforeWrite: number;
  used: boolean;
  /** A top process of the container went this round with this parent. */
  reaped: boolean;
  /** The last readings of what went with it this round. */
  goneRead: number;
  goneWrite: number;
}

/** The parent pid from /proc/<pid>/stat (`pid (comm) S ppid …`; comm may hold spaces and parentheses). */
function parentOf(stat: StatFile | null): number {
  if (!stat || !reread(stat)) return 0;
  let close = stat.length - 1;
  while (close > 0 && stat.buf[close] !== 41 /* ) */) close--;
  return numberAt(stat.buf, close + 4, stat.length) || 0;
}

/**
 * Sums /proc/<pid>/io over the container's processes listed in the
 * cgroup.procs at `procsPath`. A departed process counts on through whoever
 * reaps it: a followed parent inside the container takes its bytes in; for
 * the container's init (`target.pid`, once the engine has told it), the
 * parent outside says what it ended at. That parent's rise over the round in
 * which the init went is all the parent reaped then: where the runtime keeps
 * its state on disk, a few KB of its own writes can come with it (measured
 * here, /run on ext4: 20 KB for an init that wrote nothing).
 */
export function defineProcCounters(procRoot: string, procsPath: string, target: Pick<Target, "pid">) {
  const byPid = new Map<number, Tracked>();
  const list: Tracked[] = [];
  const reapers = new Map<number, Reaper>();
  const reaperList: Reaper[] = [];
  const io = new Float64Array(2);
  const procs = { buf: Buffer.allocUnsafe(65536), length: 0 };
  let departedRead = 0;
  let departedWrite = 0;
  let lastRefresh = -Infinity;

  /**
   * Reads cgroup.procs through a new descriptor each time: on cgroup v1 a
   * descriptor kept open and re-read within a second answers the pid list of
   * its first read forever (the kernel caches that list per cgroup), so
   * processes started later would never be seen.
   */
  const readProcs = (): boolean => {
    let fd = -1;
    try {
      fd = openSync(procsPath, "r");
      procs.length = readSync(fd, procs.buf, 0, procs.buf.length, 0);
      return true;
    } catch {
      procs.length = 0;
      return false;
    } finally {
      if (fd >= 0) closeSync(fd);
    }
  };

  const reaperOf = (pid: number): void => {
    const known = reapers.get(pid);
    if (known) {
      known.used = true;
      return;
    }
    const file = openStatFile(`${procRoot}/${pid}/io`, 512);
    if (!file) return;
    const r: Reaper = { pid, io: file, read: NaN, write: NaN, beforeRead: NaN, beforeWrite: NaN, used: true, reaped: false, goneRead: 0, goneWrite: 0 };
    reapers.set(pid, r);
    reaperList.push(r);
  };

  const refresh = (): void => {
    if (readProcs()) {
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
    }
    for (let i = 0; i < reaperList.length; i++) reaperList[i]!.used = false;
    for (let i = 0; i < list.length; i++) {
      const t = list[i]!;
      if (t.pid === target.pid && t.ppid > 0 && !byPid.has(t.ppid)) reaperOf(t.ppid);
    }
    // a parent outside that the init has no more is let go
    for (let i = reaperList.length - 1; i >= 0; i--) {
      const r = reaperList[i]!;
      if (r.used) continue;
      closeStatFile(r.io);
      reapers.delete(r.pid);
      reaperList[i] = reaperList[reaperList.length - 1]!;
      reaperList.pop();
    }
  };

  /** Reads a parent outside into read/write; false (and NaN) when it is gone. */
  const readReaper = (r: Reaper): boolean => {
    if (reread(r.io)) {
      keyedValues(r.io, PROC_KEYS, io);
      r.read = io[0]!;
      r.write = io[1]!;
      return true;
    }
    r.read = r.write = NaN;
    return false;
  };

  const forget = (i: number): void => {
    const t = list[i]!;
    closeStatFile(t.io);
    closeStatFile(t.stat);
    byPid.delete(t.pid);
    list[i] = list[list.length - 1]!;
    list.pop();
  };

  /** The departed process whose reaping carries `t`'s bytes on: up through parents that went in this round too. */
  const topOf = (t: Tracked): Tracked => {
    let top = t;
    for (let hops = 0; hops < list.length; hops++) {
      const parent = byPid.get(top.ppid);
      if (!parent || parent.alive) break;
      top = parent;
    }
    return top;
  };

  /**
   * Settles this round's departures. A process whose parent in the container
   * lives on was taken in by it. The others go up to the topmost process that
   * went with them; each such top counts the last readings of its subtree,
   * or, where its parent outside was read in the round before, that parent's
   * rise since if larger: the top's final count, with what it did after its
   * last reading. The parent is read again here, after the reaping that made
   * the top's /proc/<pid>/io go away.
   */
  const settle = (): void => {
    let gone = false;
    for (let i = 0; i < list.length; i++) if (!list[i]!.alive) gone = true;
    if (!gone) return;
    for (let i = 0; i < reaperList.length; i++) {
      const r = reaperList[i]!;
      r.reaped = false;
      r.goneRead = r.goneWrite = 0;
    }
    for (let i = 0; i < list.length; i++) {
      const t = list[i]!;
      if (t.alive) continue;
      const top = topOf(t);
      if (byPid.get(top.ppid)?.alive) continue; // its parent in the container took it in
      // only the init's: the runtime's own processes that set the container up are reaped by a runc
      // that writes its state meanwhile, and that parent's rise would be the runtime's writes
      const reaper = top.pid === target.pid ? reapers.get(top.ppid) : undefined;
      if (reaper && !Number.isNaN(reaper.beforeRead)) {
        reaper.reaped = true;
        reaper.goneRead += t.read;
        reaper.goneWrite += t.write;
      } else {
        departedRead += t.read;
        departedWrite += t.write;
      }
    }
    for (let i = 0; i < reaperList.length; i++) {
      const r = reaperList[i]!;
      if (!r.reaped) continue;
      const rose = readReaper(r);
      departedRead += rose ? Math.max(r.goneRead, r.read - r.beforeRead) : r.goneRead;
      departedWrite += rose ? Math.max(r.goneWrite, r.write - r.beforeWrite) : r.goneWrite;
    }
    for (let i = list.length - 1; i >= 0; i--) if (!list[i]!.alive) forget(i);
  };

  return {
    /** Fills out[0], out[1] with bytes read and written by the container's processes so far. */
    read(now: number, out: Float64Array): void {
      if (now - lastRefresh >= PIDS_MS) {
        refresh();
        lastRefresh = now;
      }
      // parents outside first: a later rise is then bytes reaped after their children's readings of this round
      for (let i = 0; i < reaperList.length; i++) {
        const r = reaperList[i]!;
        r.beforeRead = r.read;
        r.beforeWrite = r.write;
        readReaper(r);
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
      settle();
      out[0] = read + departedRead;
      out[1] = write + departedWrite;
    },
    close(): void {
      while (list.length > 0) forget(list.length - 1);
      for (const r of reaperList) closeStatFile(r.io);
      reaperList.length = 0;
      reapers.clear();
    },
  };
}
