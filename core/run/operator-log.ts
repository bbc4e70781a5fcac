/**
 * An operator's output, read from the engine as it comes and never held
 * whole: shown live with `-v`, kept in `<metrics_dir>/<operator>.log`, and
 * the last lines of a failed operator shown with its failure. `--quiet`
 * without `--metrics_dir` reads none of it.
 *
 * The log file holds both streams in the engine's order, one record a line
 * in the Kubernetes CRI log format (what `kubectl logs`' files, fluent-bit's
 * and promtail's `cri` parsers read):
 *
 *     2024-05-01T10:00:00.123456789Z stdout F a whole line
 *     2024-05-01T10:00:00.123457001Z stderr P the first 64 KiB of a longer line…
 *
 * with the engine's own timestamps; `P` marks a piece of a line longer than
 * MAX_LINE_CHARS, continued by the next record of that stream. cpost's own
 * notes (a cut, a retried attempt) are records of stream `cpost`.
 */
import { open, type FileHandle } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { DockerClient, LogChunk } from "../engine/docker.ts";
import type { OperatorResult } from "../contracts/types.ts";

/** A log file stops taking output at this size (1 GiB), with a marker saying so; the run and its measurements go on. */
export const LOG_LIMIT_BYTES = 1024 ** 3;
/**
 * Once the container has exited, how long its log stream may stay silent
 * before cpost stops reading: an engine that keeps a follow stream open
 * after the container is gone must not hold the run (a Podman run here
 * once hung until its test's 120 s limit in a loaded full-suite run, cause
 * not pinned down; an open stream is one way to hang there). A stream
 * still delivering output is never cut by this.
 */
export const LOG_IDLE_AFTER_EXIT_MS = 5000;
/** Lines of a failed operator's output printed with its failure (when `-v` has not shown them all already). */
export const FAILURE_TAIL_LINES = 20;
/** A longer line is kept (and shown) in pieces of this many characters: memory stays bounded whatever an operator writes. */
const MAX_LINE_CHARS = 64 * 1024;
/** A line printed with a failure is cut to this many characters. */
const TAIL_LINE_CHARS = 2000;

/** Where `-v` output goes: a stream whose `write` returns false when full is waited on (`drain`), so a slow reader slows cpost's reading, not its memory. */
export interface OutputTarget {
  write(text: string): unknown;
  isTTY?: boolean;
  once?(event: "drain" | "close" | "error", listener: () => void): unknown;
  off?(event: "drain" | "close" | "error", listener: () => void): unknown;
}

export interface OperatorOutputOptions {
  engine: DockerClient;
  /** Logs are kept here when given. */
  metricsDir?: string;
  /** Show output live (`-v`, not `--quiet`). */
  live: boolean;
  /** `--quiet`: no failure lines either. */
  quiet: boolean;
  out: OutputTarget;
  /** Operator names of the pipeline: live lines on a terminal are prefixed with the name, padded to the longest. */
  operators: string[];
  warn(message: string): void;
  limitBytes?: number;
}

/** What the run notes about an operator's output (OperatorResult's `logFile`, `logCut`). */
export type KeptOutput = Pick<OperatorResult, "logFile" | "logCut">;

/** One container's output being read. */
export interface FollowedOutput {
  /**
   * Call once the container has exited. Resolves when all of it was read and
   * the log is closed (or the stream stayed silent LOG_IDLE_AFTER_EXIT_MS
   * after the exit); never rejects (trouble is warned about).
   */
  finish(): Promise<KeptOutput>;
  /** After a failure, while the container still exists: the lines to print with it, or undefined (`--quiet`, or `-v` showed them). */
  failureLines(signal?: AbortSignal): Promise<string | undefined>;
}

/** One run's operator output: per run, so a retried operator's second attempt is appended to its first's log. */
export interface OperatorOutput {
  /** Starts reading a started container's output; reads nothing when it is neither shown nor kept. */
  follow(operator: string, containerId: string, signal: AbortSignal): FollowedOutput;
}

export function defineOperatorOutput(options: OperatorOutputOptions): OperatorOutput {
  const limitBytes = options.limitBytes ?? LOG_LIMIT_BYTES;
  const tty = options.out.isTTY === true;
  const width = Math.max(0, ...options.operators.map((name) => name.length));
  const opened = new Set<string>();

  return {
    follow(operator, containerId, signal) {
      const file = options.metricsDir === undefined ? undefined : resolve(join(options.metricsDir, `${operator}.log`));
      const prefix = tty ? `${operator.padEnd(width)} | ` : "| ";
      const attempt = opened.has(operator) ? "append" : "fresh";
      opened.add(operator);
      const stop = new AbortController();
      let lastActivityMs = performance.now();
      let idleAfterExit = false;
      const reading = options.live || file !== undefined ? pump() : Promise.resolve<KeptOutput>({});

      async function pump(): Promise<KeptOutput> {
        const log = file === undefined ? undefined : await openLog(file, attempt, containerId, options.warn);
        if (!log && !options.live) return {};
        let kept = 0;
        let cut = false;
        let fileText = "";
        let shown = "";
        const lines = defineLineReader(true, (ts, stream, whole, text) => {
          if (options.live) shown += `${prefix}${text}\n`;
          if (!log || cut) return;
          const record = `${ts} ${stream} ${whole ? "F" : "P"} ${text}\n`;
          const bytes = Buffer.byteLength(record);
          if (kept + bytes > limitBytes) {
            cut = true;
            fileText += note(`log cut: it reached cpost's limit of ${formatBytes(limitBytes)}; the rest of ${operator}'s output is not kept`);
            return;
          }
          kept += bytes;
          fileText += record;
        });
        try {
          for await (const batch of options.engine.logStream(containerId, { follow: true, timestamps: true, signal: AbortSignal.any([signal, stop.signal]) })) {
            lastActivityMs = performance.now();
            for (const chunk of batch) lines.push(chunk);
            if (fileText !== "") await log!.write(fileText);
            fileText = "";
            if (shown !== "") await show(shown);
            shown = "";
            // Nothing left to show or keep: stop reading rather than fetch what would be dropped.
            if (!options.live && cut) break;
          }
          lines.end();
          if (fileText !== "") await log!.write(fileText);
          if (shown !== "") await show(shown);
        } catch (error) {
          if (idleAfterExit) options.warn(`the engine kept operator ${operator}'s output stream open after it exited; stopped reading after ${LOG_IDLE_AFTER_EXIT_MS / 1000} s of silence`);
          else if (!signal.aborted) options.warn(`output of operator ${operator}: ${(error as Error).message}${log ? ` (${file} has what came before)` : ""}`);
        } finally {
          stop.abort();
          await log?.close().catch((e: unknown) => options.warn(`closing ${file}: ${(e as Error).message}`));
        }
        if (cut) options.warn(`operator ${operator} wrote more than ${formatBytes(limitBytes)} of output: its log ${file} is cut there (marked in the file)`);
        return log ? { logFile: file, ...(cut ? { logCut: true } : {}) } : {};
      }

      return {
        async finish() {
          lastActivityMs = performance.now(); // silence is counted from the exit
          const watchdog = setInterval(() => {
            if (performance.now() - lastActivityMs < LOG_IDLE_AFTER_EXIT_MS) return;
            idleAfterExit = true;
            stop.abort();
          }, 250);
          try {
            return await reading;
          } finally {
            clearInterval(watchdog);
          }
        },
        async failureLines(abort) {
          if (options.quiet || options.live) return undefined;
          const kept = await reading;
          const tail: string[] = [];
          const lines = defineLineReader(false, (_ts, _stream, _whole, text) => tail.push(text.length > TAIL_LINE_CHARS ? `${text.slice(0, TAIL_LINE_CHARS)}…` : text));
          try {
            for await (const batch of options.engine.logStream(containerId, { tail: FAILURE_TAIL_LINES, signal: abort })) for (const chunk of batch) lines.push(chunk);
            lines.end();
          } catch (error) {
            options.warn(`last lines of operator ${operator}: ${(error as Error).message}`);
            return undefined;
          }
          const where = kept.logFile ? ` (all of it in ${kept.logFile})` : "";
          if (tail.length === 0) return `Operator ${operator} wrote no output${where}`;
          const shownLines = tail.slice(-FAILURE_TAIL_LINES);
          return `Last ${shownLines.length} lines of the output of operator ${operator}${where}:\n${shownLines.map((line) => `| ${line}`).join("\n")}`;
        },
      };
    },
  };

  async function show(text: string): Promise<void> {
    const clear = tty ? "\r\x1b[2K" : "";
    const out = options.out;
    if (out.write(clear + text) === false && out.once) {
      // A reader that went away (EPIPE) never drains: its close or error ends the wait too.
      await new Promise<void>((done) => {
        const events = ["drain", "close", "error"] as const;
        const settle = () => {
          for (const event of events) out.off?.(event, settle);
          done();
        };
        for (const event of events) out.once!(event, settle);
      });
    }
  }
}

/** A cpost record in a log file, in the file's format. */
function note(text: string): string {
  return `${new Date().toISOString()} cpost F ${text}\n`;
}

async function openLog(file: string, attempt: "fresh" | "append", containerId: string, warn: (message: string) => void): Promise<FileHandle | undefined> {
  try {
    const handle = await open(file, attempt === "fresh" ? "w" : "a", 0o644);
    if (attempt === "append") await handle.write(note(`another attempt follows, in container ${containerId.slice(0, 12)}`));
    return handle;
  } catch (error) {
    warn(`cannot keep the operator's output in ${file}: ${(error as Error).message}`);
    return undefined;
  }
}

type LineHandler = (timestamp: string, stream: LogChunk["stream"], whole: boolean, text: string) => void;

/**
 * Turns demultiplexed frames into lines, per stream: a line split across
 * frames (the engine cuts lines at 16 KiB, each piece with its own
 * timestamp) is joined again under its first timestamp; UTF-8 split across
 * frames is decoded whole; a line longer than MAX_LINE_CHARS is handed on
 * in pieces (`whole` false) so nothing grows without bound.
 */
function defineLineReader(timestamps: boolean, onLine: LineHandler) {
  const ascii = new TextDecoder("latin1");
  const state = {
    stdout: { decoder: new TextDecoder(), open: "", lineTs: "", mid: false },
    stderr: { decoder: new TextDecoder(), open: "", lineTs: "", mid: false },
  };
  const flushLong = (stream: LogChunk["stream"]) => {
    const s = state[stream];
    while (s.open.length > MAX_LINE_CHARS) {
      onLine(s.lineTs, stream, false, s.open.slice(0, MAX_LINE_CHARS));
      s.open = s.open.slice(MAX_LINE_CHARS);
    }
  };
  return {
    push(chunk: LogChunk) {
      const s = state[chunk.stream];
      let data = chunk.data;
      if (timestamps && !chunk.continued) {
        const space = data.subarray(0, 48).indexOf(0x20);
        const ts = space > 0 ? ascii.decode(data.subarray(0, space)) : "";
        if (/^\d{4}-\d\d-\d\dT/.test(ts)) {
          data = data.subarray(space + 1);
          if (!s.mid) s.lineTs = ts;
        } else if (!s.mid) s.lineTs = new Date().toISOString();
      } else if (!timestamps && !s.mid) s.lineTs = "";
      const text = s.decoder.decode(data, { stream: true });
      let from = 0;
      for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n", from)) {
        onLine(s.lineTs, chunk.stream, true, s.open + text.slice(from, nl));
        s.open = "";
        from = nl + 1;
        s.mid = false;
      }
      if (from < text.length) {
        s.open += text.slice(from);
        s.mid = true;
        flushLong(chunk.stream);
      }
    },
    /** The stream ended: what is left of a line without its newline is a line all the same. */
    end() {
      for (const stream of ["stdout", "stderr"] as const) {
        const s = state[stream];
        s.open += s.decoder.decode();
        if (s.open !== "") onLine(s.lineTs, stream, true, s.open);
        s.open = "";
        s.mid = false;
      }
    },
  };
}

function formatBytes(bytes: number): string {
  if (bytes >= 1024 ** 3 && bytes % 1024 ** 3 === 0) return `${bytes / 1024 ** 3} GiB`;
  if (bytes >= 1024 ** 2 && bytes % 1024 ** 2 === 0) return `${bytes / 1024 ** 2} MiB`;
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes / 1024} KiB`;
  return `${bytes} bytes`;
}
