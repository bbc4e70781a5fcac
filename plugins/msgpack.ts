/**
 * `--sinks msgpack`: the whole run in one `.msgpack` file, for `cpost replay`
 * and `cpost report`. Records (core/sinks/recording.ts) are appended as they come
 * and flushed at least every second, so a crash loses at most the last
 * second; samples are stored as raw Float64 bytes, columns once per series.
 *
 * Options: `--msgpack-file PATH` (default `<metrics_dir or .>/<pipeline name>.msgpack`).
 */
import { Encoder } from "@msgpack/msgpack";
import { closeSync, mkdirSync, openSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { CpostError } from "../core/contracts/errors.ts";
import { float64Bytes, RECORDING_VERSION, type RecordingRecord } from "../core/sinks/recording.ts";
import { defineSink } from "../core/contracts/plugin-sdk.ts";
import type { MetricColumn } from "../core/contracts/types.ts";
import { defineAppendFile, type AppendFile } from "../core/sinks/append-file.ts";

/** Longest time a record waits in memory before it is written. */
const FLUSH_MS = 1000;
/** Pending bytes that force a write regardless of time. */
const FLUSH_BYTES = 4 << 20;

const MSGPACK_WORDS = {
  kept: "whole records written before (cpost replay reads them)",
  hint: "free space there, or give --msgpack-file / --metrics_dir on another file system",
};

export default defineSink({
  name: "msgpack",
  description: "the whole run in one .msgpack file, for cpost replay and cpost report",
  options: {
    file: { description: "the recording to write (default <metrics_dir or .>/<pipeline name>.msgpack)" },
  },
  create({ options, metricsDir, out }) {
    const encoder = new Encoder({ ignoreUndefined: true });
    const seriesIds = new Map<readonly MetricColumn[], number>();
    let pending = new Uint8Array(1 << 20);
    let used = 0;
    /** The recording on disk, whole records only; undefined before start and after end. */
    let file: AppendFile | undefined;
    let lastFlush = 0;
    let timer: ReturnType<typeof setInterval> | undefined;

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
      if (file === undefined) return;
      lastFlush = performance.now();
      const length = used;
      used = 0;
      file.append(pending, length);
    };
    // A failure in the background flush is thrown by the next hook, so the runner reports it.
    const flushQuietly = () => {
      try {
        flush();
      } catch {
        // kept in file.failed
      }
    };

    return {
      start(run) {
        const fileName = `${run.pipeline.name.replace(/[^A-Za-z0-9_.-]/g, "_") || "run"}.msgpack`;
        const path = resolve(options.file ?? join(metricsDir ?? ".", fileName));
        try {
          mkdirSync(dirname(path), { recursive: true });
          file = defineAppendFile(path, openSync(path, "w"), MSGPACK_WORDS);
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
        if (file === undefined) throw new CpostError("internal", "msgpack sink: write before start");
        if (file.failed) throw file.failed;
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
        if (file === undefined) return;
        const { fd, path } = file;
        clearInterval(timer);
        append({ t: "end", result });
        try {
          flush();
        } finally {
          closeSync(fd);
          file = undefined;
        }
        out.write(`Run recorded in ${path}\n`);
      },
    };
  },
});
