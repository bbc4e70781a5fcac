/**
 * An output file the csv and msgpack sinks append to that never keeps a
 * partial row or record: a write that fails (a full disk) is cut back to
 * the last whole one, and the file takes no more, every later append
 * throwing the one error that says what it kept.
 */
import { ftruncateSync, writeSync } from "node:fs";
import { CpostError } from "../contracts/errors.ts";

export interface AppendFile {
  readonly path: string;
  readonly fd: number;
  /** Bytes on disk, all whole rows or records. */
  readonly written: number;
  /** Set when a write failed: the file keeps what it had and takes no more. */
  readonly failed: CpostError | undefined;
  /** Writes `bytes[0, length)` whole, or throws (and keeps throwing) the failure. */
  append(bytes: Uint8Array, length?: number): void;
}

/**
 * `kept` completes "it keeps the N bytes of …" in the error ("whole rows
 * written before"); `hint` says where else to write.
 */
export function defineAppendFile(path: string, fd: number, words: { kept: string; hint: string }): AppendFile {
  let written = 0;
  let failed: CpostError | undefined;
  return {
    path,
    fd,
    get written() {
      return written;
    },
    get failed() {
      return failed;
    },
    append(bytes, length = bytes.length) {
      if (failed) throw failed;
      try {
        for (let off = 0; off < length; ) off += writeSync(fd, bytes, off, length - off);
        written += length;
      } catch (cause) {
        // A short write (ENOSPC) would leave half a row or record, and whatever followed it would be unreadable: cut back and stop.
        try {
          ftruncateSync(fd, written);
        } catch {
          // what was written stays; only the cut failed
        }
        const code = (cause as NodeJS.ErrnoException).code;
        failed = new CpostError("io", `cannot write ${path}: ${code === "ENOSPC" ? "no space left on device" : (cause as Error).message}; it keeps the ${written} bytes of ${words.kept}, and no more`, {
          file: path,
          cause,
          hint: words.hint,
        });
        throw failed;
      }
    },
  };
}
