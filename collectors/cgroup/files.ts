/**
 * Reading cgroup and /proc files on the hot path: each file is opened once
 * and re-read from offset 0 (pread) into a buffer of its own, then parsed
 * straight from the bytes. Nothing here allocates after `openStatFile`.
 *
 * A probe may also let the sampler do those re-reads for it (`CapturedReads`):
 * the sampler's native loop reads the files on the ticks between the probe's
 * own reads, and the probe parses the bytes later, from the same buffers.
 */
import { closeSync, openSync, readSync } from "node:fs";
import type { MetricBuffer, Probe } from "../../core/contracts/types.ts";

/** A kernel stat file held open for re-reading. `length` is the size of the last read; negative when it failed (or, captured, was not read). */
export interface StatFile {
  readonly path: string;
  readonly fd: number;
  readonly buf: Buffer;
  length: number;
}

/** Opens a file for re-reading; null when it does not exist or cannot be opened. */
export function openStatFile(path: string, size = 4096): StatFile | null {
  try {
    return { path, fd: openSync(path, "r"), buf: Buffer.allocUnsafe(size), length: 0 };
  } catch {
    return null;
  }
}

/**
 * Re-reads the whole file. False when it is gone: a removed cgroup answers
 * ENODEV, a reaped process ESRCH; either way its series ends there.
 */
export function reread(file: StatFile): boolean {
  try {
    file.length = readSync(file.fd, file.buf, 0, file.buf.length, 0);
    return true;
  } catch {
    file.length = -1;
    return false;
  }
}

/**
 * How early a slower tier counts as due: a tick that wakes a little late
 * (or early) must not push the tier a whole interval further, so at the
 * default 10 ms interval a 10 ms tier is in every row.
 */
export const DUE_EARLY_MS = 2.5;

/**
 * When a tier of `periodMs` read at `nowMs` (MetricBuffer.monotonicMs) is
 * due again: at the next multiple of the period on that clock, less
 * DUE_EARLY_MS. On multiples, not `nowMs + period`: every series of a
 * sampler shares the clock, so their slower tiers fall on the same ticks,
 * and the native loop hands back to JS once for all of them. The native
 * loop (native/sampling-loop.ts) computes the same for captured files.
 */
export function dueAfter(nowMs: number, periodMs: number): number {
  return periodMs * (Math.floor((nowMs + DUE_EARLY_MS) / periodMs) + 1) - DUE_EARLY_MS;
}

/** StatFile.length of a captured file the native loop did not read on that tick (not due). */
export const NOT_READ = -2;

/** A file re-read by the sampler's native loop: every tick (`everyMs` 0), or when due, then due again at dueAfter(tick, everyMs). */
export interface CapturedFile {
  readonly file: StatFile;
  readonly everyMs: number;
  /** MetricBuffer.monotonicMs from which it is next due (ignored when everyMs is 0). */
  dueMs(): number;
}

/**
 * What a probe lets the sampler's native loop read for it. The sampler
 * calls `read` itself on the tick at `liveDueMs()` (and whenever it samples
 * in JS); on the ticks before, the loop re-reads `files` and `decode` turns
 * their bytes, left in each file's `buf` and `length` (negative: failed, or
 * not due on that tick), into the row `read` would have written. decode runs
 * on the sampling thread, later, in tick order; it allocates nothing.
 */
export interface CapturedReads {
  readonly files: readonly CapturedFile[];
  /** MetricBuffer.monotonicMs of the first tick that needs `read` itself. */
  liveDueMs(): number;
  /** Fills the row from the captured bytes; `readMs` is when the loop read them (performance.now() clock). False: the target is gone. */
  decode(out: MetricBuffer, readMs: number): boolean;
}

/** A probe that offers its reads to the native loop. */
export type CapturingProbe = Probe & { readonly captured: CapturedReads };

/** The probe's captured reads, if it offers them. */
export function capturedReadsOf(probe: Probe): CapturedReads | undefined {
  const captured = (probe as Partial<CapturingProbe>).captured;
  return captured && typeof captured.decode === "function" ? captured : undefined;
}

/** Closes a file opened by openStatFile; never throws. */
export function closeStatFile(file: StatFile | null | undefined): void {
  if (!file) return;
  try {
    closeSync(file.fd);
  } catch {
    // already closed or never valid: nothing to release
  }
}

/** The bytes of a key as the parsers compare them. */
export function keyBytes(key: string): Uint8Array {
  return new TextEncoder().encode(key);
}

const SPACE = 32;
const NEWLINE = 10;
const ZERO = 48;
const NINE = 57;
const DOT = 46;

/** True when `buf[at..]` starts with `key`. */
export function startsWith(buf: Uint8Array, at: number, end: number, key: Uint8Array): boolean {
  if (at + key.length > end) return false;
  for (let i = 0; i < key.length; i++) if (buf[at + i] !== key[i]) return false;
  return true;
}

/** Index just past the next newline at or after `at` (or `end`). */
export function nextLine(buf: Uint8Array, at: number, end: number): number {
  while (at < end && buf[at] !== NEWLINE) at++;
  return at < end ? at + 1 : end;
}

/**
 * The unsigned decimal (optionally with a fraction) starting at the first
 * digit at or after `at` on the same line; NaN when the line has none.
 * `max` (cgroup v2 for "no limit") reads as Infinity.
 */
export function numberAt(buf: Uint8Array, at: number, end: number): number {
  while (at < end && buf[at] === SPACE) at++;
  if (at < end && buf[at] === 109 /* m */ && buf[at + 1] === 97 && buf[at + 2] === 120) return Infinity;
  let value = 0;
  let digits = 0;
  while (at < end) {
    const c = buf[at]!;
    if (c < ZERO || c > NINE) break;
    value = value * 10 + (c - ZERO);
    digits++;
    at++;
  }
  if (digits === 0) return NaN;
  if (at < end && buf[at] === DOT) {
    // digits as an integer, divided once: "0.48" reads as exactly the double of 0.48
    let fraction = 0;
    let scale = 1;
    for (at++; at < end; at++) {
      const c = buf[at]!;
      if (c < ZERO || c > NINE) break;
      fraction = fraction * 10 + (c - ZERO);
      scale *= 10;
    }
    value += fraction / scale;
  }
  return value;
}

/** The number a one-value file (memory.usage_in_bytes, pids.current, memory.max) holds. */
export function fileNumber(file: StatFile): number {
  return numberAt(file.buf, 0, file.length);
}

/**
 * Fills `out[i]` with the value of the line `keys[i] value` of a flat keyed
 * file (memory.stat, cpu.stat, memory.events); NaN for keys not present.
 */
export function keyedValues(file: StatFile, keys: readonly Uint8Array[], out: Float64Array): void {
  out.fill(NaN);
  const buf = file.buf;
  const end = file.length;
  for (let at = 0; at < end; at = nextLine(buf, at, end)) {
    for (let k = 0; k < keys.length; k++) {
      const key = keys[k]!;
      if (buf[at + key.length] === SPACE && startsWith(buf, at, end, key)) {
        out[k] = numberAt(buf, at + key.length + 1, end);
        break;
      }
    }
  }
}

/**
 * The value after `field` (e.g. `avg10=`) on the line that starts with
 * `prefix` (e.g. `some`) of a pressure file; NaN when absent.
 */
export function fieldOnLine(file: StatFile, prefix: Uint8Array, field: Uint8Array): number {
  const buf = file.buf;
  const end = file.length;
  for (let at = 0; at < end; at = nextLine(buf, at, end)) {
    if (!startsWith(buf, at, end, prefix)) continue;
    const lineEnd = nextLine(buf, at, end);
    for (let i = at + prefix.length; i < lineEnd; i++) {
      if (startsWith(buf, i, lineEnd, field)) return numberAt(buf, i + field.length, lineEnd);
    }
    return NaN;
  }
  return NaN;
}
