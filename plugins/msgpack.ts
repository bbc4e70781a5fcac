/**
 * `--sinks msgpack`: the whole run in one `.msgpack` file, for `cpost replay`
 * and `cpost report`. Records (core/recording.ts) are appended as they come
 * and flushed at least every second, so a crash loses at most the last
 * second; samples are stored as raw Float64 bytes, columns once per series.
 *
 * Options: `--msgpack-file PATH` (default `<metrics_dir or .>/<pipeline name>.msgpack`).
 */
import { Encoder } from "@msgpack/msgpack";
import { closeSync, ftruncateSync, mkdirSync, openSync, writeSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { CpostError } from "../core/errors.ts";
import { float64Bytes, RECORDING_VERSION, type RecordingRecord } from "../core/recording.ts";
import type { MetricColumn, Sink, SinkFactory, SinkOptions } from "../core/types.ts";

/** Longest time a record waits in memory before it is written. */
const FLUSH_MS = 1000;
/** Pending bytes that force a write regardless of time. */
const FLUSH_BYTES = 4 << 20;

const msgpack = (options: SinkOptions): Sink => {
  const encoder = new Encoder({ ignoreUndefined: true });
  const seriesIds = new Map<readonly MetricColumn[], number>();
  let pending = new Uint8Array(1 << 20);
  let used = 0;
  let fd: number | undefined;
  let path = "";
  let lastFlush = 0;
  let timer: ReturnType<typeof setInterval> | undefined;
  /** Bytes on disk, all whole records. */
  let written = 0;
  /** Set when a write failed (a full disk): the file keeps its whole records and takes no more. */
  let failed: CpostError | undefined;

  const append = (record: RecordingRecord) => {
    const bytes = encoder.encodeSharedRef(record);
    if (used + bytes.length > pending.length) {
      const grown = new Uint8Array(Math.max(pending.length * 2, used + bytes.length));
      grown.set(pending.subarray(0, used));
      pending = grown;
    }
    pending.set(bytes, used);
    used += bytes.length;
  };
  const flush = () => {
    if (failed) throw failed;
    if (fd === undefined) return;
    lastFlush = performance.now();
    try {
      for (let off = 0; off < used; ) off += writeSync(fd, pending, off, used - off);
      written += used;
      used = 0;
    } catch (cause) {
      // Half a record at the end is what a crash leaves (the reader copes), but later records after it would not be: cut back and stop.
      used = 0;
      try {
        ftruncateSync(fd, written);
      } catch {
        // the records written stay; only the cut failed
      }
      const code = (cause as NodeJS.ErrnoException).code;
      failed = new CpostError("io", `cannot write ${path}: ${code === "ENOSPC" ? "no space left on device" : (cause as Error).message}; it keeps the ${written} bytes of whole records written before (cpost replay reads them), and no more`, {
        file: path,
        cause,
        hint: "free space there, or give --msgpack-file / --metrics_dir on another file system",
      });
      throw failed;
    }
  };
  // A failure in the background flush is thrown by the next hook, so the runner reports it.
  const flushQuietly = () => {
    try {
      flush();
    } catch {
      // kept in `failed`
    }
  };

  return {
    name: "msgpack",
    start(run) {
      const fileName = `${run.pipeline.name.replace(/[^A-Za-z0-9_.-]/g, "_") || "run"}.msgpack`;
      path = resolve(options.options["msgpack-file"] ?? join(options.metricsDir ?? ".", fileName));
      try {
        mkdirSync(dirname(path), { recursive: true });
        fd = openSync(path, "w");
      } catch (cause) {
        throw new CpostError("io", `cannot create recording: ${(cause as Error).message}`, { file: path, cause, hint: "choose a writable --msgpack-file or --metrics_dir" });
      }
      append({ t: "run", v: RECORDING_VERSION, run });
      flush();
      timer = setInterval(flushQuietly, FLUSH_MS);
      timer.unref?.();
    },
    operatorStart(operator) {
      append({ t: "op", operator });
    },
    write(batch) {
      if (failed) throw failed;
      if (fd === undefined) throw new CpostError("internal", "msgpack sink: write before start");
      let id = seriesIds.get(batch.columns);
      if (id === undefined) {
        seriesIds.set(batch.columns, (id = seriesIds.size));
        append({ t: "cols", id, operator: batch.operator, containerId: batch.containerId, columns: [...batch.columns] });
      }
      const n = batch.rows;
      const v = float64Bytes(batch.values, n * batch.columns.length);
      append({ t: "batch", c: id, n, ts: float64Bytes(batch.timestampMs, n), mono: float64Bytes(batch.monotonicMs, n), v });
      if (used >= FLUSH_BYTES || performance.now() - lastFlush >= FLUSH_MS) flush();
    },
    operatorDone(result, summary) {
      append({ t: "done", result, summary });
      flush();
    },
    end(result) {
      if (fd === undefined) return;
      clearInterval(timer);
      append({ t: "end", result });
      try {
        flush();
      } finally {
        closeSync(fd);
        fd = undefined;
      }
      (options.out ?? process.stdout).write(`Run recorded in ${path}\n`);
    },
  };
};

export default msgpack satisfies SinkFactory;
