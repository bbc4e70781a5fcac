/**
 * Live progress on the terminal: one line on stderr, redrawn in place, with
 * the operator running, its elapsed time, current CPU and memory, and the
 * samples taken; cleared when the operator is done. Silent when stderr is
 * not a terminal. The runner adds it on a TTY unless --quiet.
 */
import { CPU_KEY, MEMORY_KEY } from "../core/sizing/summary.ts";
import { defineSink } from "../core/contracts/plugin-sdk.ts";
import type { MetricColumn, Operator, RunInfo, SampleBatch, Sink } from "../core/contracts/types.ts";

/** Where the line is drawn: a terminal stream (process.stderr). */
export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/** Options of the progress sink. */
export interface ProgressOptions {
  stream?: ProgressStream;
  /** Redraws per second at most, also while no batch arrives (elapsed keeps moving). */
  fps?: number;
}

const CLEAR = "\r\x1b[2K";

/** A progress sink drawing on `options.stream` (default process.stderr). */
export function defineProgressSink(options: ProgressOptions = {}): Sink {
  const stream = options.stream ?? process.stderr;
  const live = stream.isTTY === true;
  const frameMs = 1000 / (options.fps ?? 8);
  let total = 0;
  let position = 0;
  let name = "";
  let startedAt = 0;
  let samples = 0;
  let cpu = NaN;
  let memoryBytes = NaN;
  let columnsSeen: readonly MetricColumn[] | undefined;
  let cpuAt = -1;
  let memoryAt = -1;
  let timer: ReturnType<typeof setInterval> | undefined;
  let drawnAt = 0;
  let shown = false;

  function line(): string {
    const elapsed = (performance.now() - startedAt) / 1000;
    const minutes = Math.floor(elapsed / 60);
    const clock = `${String(minutes).padStart(2, "0")}:${(elapsed - minutes * 60).toFixed(1).padStart(4, "0")}`;
    const cpuText = Number.isFinite(cpu) ? `${cpu.toFixed(1)} %` : "-";
    const memText = Number.isFinite(memoryBytes) ? `${(memoryBytes / 1e6).toFixed(1)} MB` : "-";
    const text = `▶ [${position}/${total}] ${name}  ${clock}  CPU ${cpuText}  memory ${memText}  ${samples.toLocaleString("en")} samples`;
    const width = stream.columns ?? 0;
    // A line wider than the terminal wraps, and \r then no longer returns to its start.
    return width > 1 && text.length >= width ? text.slice(0, width - 1) : text;
  }

  // Our own frames bypass the guard below.
  const drawRaw = stream.write.bind(stream);
  const guarded = new Map<NodeJS.WriteStream, NodeJS.WriteStream["write"]>();

  function draw(): void {
    drawnAt = performance.now();
    shown = true;
    drawRaw(`${CLEAR}${line()}`);
  }

  // Anything else printed on the terminal meanwhile (the table sink, the runner)
  // first erases the line instead of being glued to it; the next frame redraws it.
  function guard(): void {
    for (const tty of [process.stdout, process.stderr]) {
      if (!tty.isTTY || guarded.has(tty)) continue;
      const original = tty.write;
      guarded.set(tty, original);
      tty.write = ((...args: unknown[]) => {
        if (shown) {
          drawRaw(CLEAR);
          shown = false;
        }
        return (original as (...a: unknown[]) => boolean).apply(tty, args);
      }) as NodeJS.WriteStream["write"];
    }
  }

  function clear(): void {
    if (timer !== undefined) clearInterval(timer);
    timer = undefined;
    if (shown) drawRaw(CLEAR);
    shown = false;
    for (const [tty, original] of guarded) tty.write = original;
    guarded.clear();
  }

  function begin(operator: string): void {
    clear();
    position++;
    name = operator;
    startedAt = performance.now();
    samples = 0;
    cpu = memoryBytes = NaN;
    guard();
    draw();
    timer = setInterval(draw, frameMs);
    timer.unref?.();
  }

  if (!live) return { name: "progress", start() {}, write() {}, operatorDone() {}, end() {} };

  return {
    name: "progress",
    start(run: RunInfo) {
      total = run.pipeline.order.length;
    },
    operatorStart(operator: Operator) {
      begin(operator.name);
    },
    write(batch: SampleBatch) {
      if (batch.operator !== name) begin(batch.operator);
      if (batch.columns !== columnsSeen) {
        columnsSeen = batch.columns;
        cpuAt = batch.columns.findIndex((c) => c.key === CPU_KEY);
        memoryAt = batch.columns.findIndex((c) => c.key === MEMORY_KEY);
      }
      samples += batch.rows;
      // The latest measured value of each: a probe may leave the last row's slot NaN.
      const width = batch.columns.length;
      const latest = (at: number, fallback: number): number => {
        for (let r = batch.rows - 1; at >= 0 && r >= 0; r--) {
          const v = batch.values[r * width + at]!;
          if (v === v) return v;
        }
        return fallback;
      };
      cpu = latest(cpuAt, cpu);
      memoryBytes = latest(memoryAt, memoryBytes);
      if (performance.now() - drawnAt >= frameMs) draw();
    },
    operatorDone() {
      clear();
    },
    end() {
      clear();
    },
  };
}

/** `--sinks progress`: draws on stderr when it is a terminal. */
export default defineSink({
  name: "progress",
  description: "a live progress line on the terminal (added on a TTY unless --quiet)",
  create: () => defineProgressSink(),
});
