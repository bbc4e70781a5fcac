/**
 * The sampler's native loop: a few lines of C, compiled at run time by the
 * TinyCC inside Bun (bun:ffi's `cc`), so the executable stays one file and
 * needs no compiler on the host. It sleeps until each slot of the sampling
 * schedule and re-reads (pread from offset 0) the kernel files its probes
 * listed into a ring of raw bytes, without waking JavaScript; the sampling
 * thread decodes the ring with the probes' own parsers when the loop hands
 * back. Why: on the hosts measured here a wake-up of the JS thread costs
 * ~30–90 µs of CPU and each cold syscall after it ~8 µs, so a JS tick per
 * sample cost 2–3 times what the reads need (bench/sampler.ts).
 *
 * The loop hands back at the slot where a JS tick is due: having slept
 * until it, when it took few ticks since it started (decoding them delays
 * that tick little, and JS wakes once), or else right after the last tick
 * before it (the thread is awake then; JS decodes the many ticks, sleeps
 * until the slot and ticks on time); also when the ring is full, after a tick in which every file of a group failed (the target is
 * gone), or as soon as the control word is set: it sleeps in a futex on
 * that word, which `wakeSamplingLoop` wakes from any thread.
 *
 * Where TinyCC is not there (a platform Bun builds without it) or fails,
 * `openSamplingLoop` says why and the sampler samples in JS instead.
 */
import { cc, CFunction, ptr, type Pointer } from "bun:ffi";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** sched[] slots shared with the C loop (monotonic ms on CLOCK_MONOTONIC, performance.now()'s clock). */
export const SCHED = { anchor: 0, interval: 1, live: 2, ticks: 3, origin: 4, early: 5, sleepToLive: 6 } as const;
/** Why the loop handed back. */
export const LOOP = { live: 1, full: 2, gone: 3, command: 4 } as const;

const SOURCE = /* c */ `
typedef long ssize_t;
typedef unsigned long size_t;
struct timespec { long tv_sec; long tv_nsec; };
extern ssize_t pread(int fd, void *buf, size_t count, long offset);
extern int clock_gettime(int clock, struct timespec *ts);
extern long syscall(long number, ...);
#if defined(__x86_64__)
#define SYS_FUTEX 202
#elif defined(__aarch64__)
#define SYS_FUTEX 98
#else
#error "cpost's native loop knows the futex syscall number of x86-64 and arm64 only"
#endif
#define FUTEX_WAKE_PRIVATE 129
#define FUTEX_WAIT_BITSET_PRIVATE 137

static double now_ms(void) {
  struct timespec t;
  clock_gettime(1 /* CLOCK_MONOTONIC */, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* Sleeps until 'until' (monotonic ms); 1 as soon as *flag is non-zero. */
static int sleep_until(volatile int *flag, double until) {
  for (;;) {
    if (*flag != 0) return 1;
    if (now_ms() >= until) return 0;
    long ns = (long)(until * 1e6);
    struct timespec at;
    at.tv_sec = ns / 1000000000L;
    at.tv_nsec = ns % 1000000000L;
    syscall(SYS_FUTEX, flag, FUTEX_WAIT_BITSET_PRIVATE, 0, &at, 0, -1);
  }
}

/* Wakes a loop sleeping on flag (the caller set it first). */
void cpost_wake(int *flag) { syscall(SYS_FUTEX, flag, FUTEX_WAKE_PRIVATE, 1); }

/* libc's syscall(), for other threads to wake the loop without a compiled unit of their own. */
void *cpost_syscall_address(void) { return (void *)&syscall; }

int cpost_futex_wake_number(void) { return SYS_FUTEX; }

double cpost_now(void) { return now_ms(); }

/*
 * Samples on the slots anchor + k * interval before the slot 'live' (sched[]),
 * reading each file whose due time has come (due[f] <= tick; every[f] == 0:
 * each tick) into its place of the tick's record; a file read is due again at
 * the next multiple of every[f] after the tick on the clock that starts at
 * sched[origin], less sched[early] (dueAfter of collectors/cgroup/files.ts). times[] per tick: the tick's start, then per group the time its
 * reads ended. Returns a LOOP reason; sched[ticks] = ticks recorded.
 */
int cpost_capture(volatile int *flag, double *sched, int nfiles, const int *fds, const int *caps, const int *offsets,
                  const double *every, double *due, int ngroups, const int *group_ends,
                  double *times, int *lengths, unsigned char *data, int record_bytes, int capacity) {
  double anchor = sched[0], interval = sched[1], live = sched[2], origin = sched[4], early = sched[5], sleep_to_live = sched[6];
  int ticks = 0, reason = 0;
  for (;;) {
    double now = now_ms();
    double next = now < anchor ? anchor : anchor + interval * ((double)(long)((now - anchor) / interval) + 1.0);
    if (next >= live - interval / 2) { /* the next slot is JS's */
      reason = ticks > sleep_to_live ? 1 : sleep_until(flag, live) ? 4 : 1;
      break;
    }
    if (sleep_until(flag, next)) { reason = 4; break; }
    double tick = now_ms();
    double *row = times + (long)ticks * (ngroups + 1);
    int *len = lengths + (long)ticks * nfiles;
    unsigned char *record = data + (long)ticks * record_bytes;
    int gone = 0, f = 0;
    row[0] = tick;
    for (int g = 0; g < ngroups; g++) {
      int read = 0, failed = 0;
      for (; f < group_ends[g]; f++) {
        if (due[f] > tick) { len[f] = -2; continue; } /* NOT_READ of collectors/cgroup/files.ts */
        if (every[f] > 0) due[f] = origin + every[f] * ((double)(long)((tick - origin + early) / every[f]) + 1.0) - early;
        long n = pread(fds[f], record + offsets[f], caps[f], 0);
        len[f] = (int)n;
        read++;
        if (n < 0) failed++;
      }
      row[g + 1] = now_ms();
      if (read > 0 && failed == read) gone = 1;
    }
    ticks++;
    if (gone) { reason = 3; break; }
    if (ticks == capacity) { reason = 2; break; }
  }
  sched[3] = ticks;
  return reason;
}
`;

const SYMBOLS = {
  cpost_capture: {
    args: ["ptr", "ptr", "i32", "ptr", "ptr", "ptr", "ptr", "ptr", "i32", "ptr", "ptr", "ptr", "ptr", "i32", "i32"],
    returns: "i32",
  },
  cpost_wake: { args: ["ptr"], returns: "void" },
  cpost_syscall_address: { args: [], returns: "ptr" },
  cpost_futex_wake_number: { args: [], returns: "i32" },
  cpost_now: { args: [], returns: "f64" },
} as const;

/** What the sampling thread hands another thread so that it can wake the loop: libc's syscall() and futex's number. */
export interface LoopWaker {
  syscall: number;
  futex: number;
}

/** One capture run's arrays (all preallocated by the caller; the loop writes times, lengths, data, due and sched). */
export interface CaptureArgs {
  flag: Int32Array;
  sched: Float64Array;
  nfiles: number;
  fds: Int32Array;
  caps: Int32Array;
  offsets: Int32Array;
  every: Float64Array;
  due: Float64Array;
  ngroups: number;
  groupEnds: Int32Array;
  times: Float64Array;
  lengths: Int32Array;
  data: Uint8Array;
  recordBytes: number;
  capacity: number;
}

/** The compiled loop, for the thread that compiled it. */
export interface SamplingLoop {
  /** Samples natively until a JS tick is due, the ring is full, a group is gone or the flag is set; returns a LOOP reason. */
  capture(args: CaptureArgs): number;
  /** performance.now() minus CLOCK_MONOTONIC in ms, measured once (both are the same clock on Linux; this absorbs Bun's origin). */
  readonly monotonicToNow: number;
  readonly waker: LoopWaker;
}

/** Compiles the loop (~20 ms); a string says why it cannot run here. */
export function openSamplingLoop(): SamplingLoop | string {
  let dir: string | undefined;
  let lib: ReturnType<typeof cc<typeof SYMBOLS>>;
  try {
    dir = mkdtempSync(join(tmpdir(), "cpost-loop-"));
    const source = join(dir, "sampling-loop.c");
    writeFileSync(source, SOURCE);
    lib = cc({ source, symbols: SYMBOLS });
  } catch (e) {
    return `TinyCC could not build the native sampling loop: ${e instanceof Error ? e.message : String(e)}`;
  } finally {
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
  const s = lib.symbols;
  const capture = s.cpost_capture;
  // the offset between the two clocks: the reading with the shortest bracket wins
  let best = Infinity;
  let monotonicToNow = 0;
  for (let i = 0; i < 7; i++) {
    const before = performance.now();
    const monotonic = s.cpost_now();
    const after = performance.now();
    if (after - before < best) {
      best = after - before;
      monotonicToNow = (before + after) / 2 - monotonic;
    }
  }
  return {
    capture(a: CaptureArgs): number {
      return capture(
        ptr(a.flag), ptr(a.sched), a.nfiles, ptr(a.fds), ptr(a.caps), ptr(a.offsets), ptr(a.every), ptr(a.due),
        a.ngroups, ptr(a.groupEnds), ptr(a.times), ptr(a.lengths), ptr(a.data), a.recordBytes, a.capacity,
      );
    },
    monotonicToNow,
    waker: { syscall: Number(s.cpost_syscall_address()), futex: s.cpost_futex_wake_number() },
  };
}

let wakeCall: ReturnType<typeof CFunction> | undefined;
/** Wakes the loop sleeping on flag[0] (set it first). Safe from any thread of the process: syscall() lives as long as libc. */
export function wakeSamplingLoop(waker: LoopWaker, flag: Int32Array): void {
  wakeCall ??= CFunction({ ptr: waker.syscall as Pointer, args: ["i64", "ptr", "i32", "i32"], returns: "i64" });
  wakeCall(waker.futex, ptr(flag), 129 /* FUTEX_WAKE_PRIVATE */, 1);
}
