/**
 * The one driver of the sink call sequence, used by the runner, the
 * monitor and replay: start, then per operator operatorStart / write /
 * operatorDone, then end. Each sink gets the hooks one at a time, in order,
 * never concurrently; sinks are independent of each other.
 *
 * Live mode (runner, monitor): each sink has its own queue and its own
 * chain, so one slow sink never holds the others or the sampler. A queue is
 * bounded (QUEUE_BYTES of batches, MAX_LAG_MS behind): past the bound a
 * sink drops its oldest batches, says so once with its name, and the drops
 * are counted and reported. Durable sinks (csv, msgpack: files that must
 * hold every sample) are never dropped from; one that falls behind is told
 * once and slows nothing else. `end` waits for each sink to catch up at
 * most the end timeout (a durable one as long as it makes progress), then
 * at most as long again for its end hook, and says what a sink did not get.
 * A control hook (start, operatorStart, operatorDone) is awaited only for a
 * bounded time, so a hook that never resolves cannot hang the run.
 *
 * Replay mode: every call awaited on every sink, nothing dropped, no time
 * limits (a replay must give each sink everything).
 *
 * The error rule, both modes: a throwing sink is reported once (a
 * CpostError naming the sink and the hook) and then left out, but `end`
 * still reaches it so it can close.
 */
import { CpostError, pluginError } from "../contracts/errors.ts";
import type { SampleBatch, Sink, SinkLoss } from "../contracts/types.ts";

/** Sinks that must keep every batch (their output is the record of the run): never dropped from. */
export const DURABLE_SINKS: readonly string[] = ["csv", "msgpack", "sizing"];
/** Default of `--sink-end-timeout`: how long the end of a run waits for a sink to catch up, and again for its end hook. */
export const DEFAULT_SINK_END_TIMEOUT_MS = 15_000;
/** Bytes of batches a sink may have queued before it drops its oldest. */
export const QUEUE_BYTES = 16 * 1024 * 1024;
/** How far behind (age of its oldest queued batch) a sink may fall before it drops its oldest batches. */
export const MAX_LAG_MS = 10_000;
/** How long a live call waits for one sink's operatorStart or operatorDone before going on without it (it still gets it, in order). */
const HOOK_WAIT_MS = 1000;

/** How a session drives its sinks. */
export interface SinkSessionOptions {
  /** Hears each failing sink once. */
  onError(error: CpostError): void;
  /** Warnings: a sink behind, a sink left out, what a sink did not get. */
  warn?(message: string): void;
  /** "live" (default): bounded per-sink queues; "replay": every call awaited, nothing dropped. */
  mode?: "live" | "replay";
  /** See DEFAULT_SINK_END_TIMEOUT_MS. */
  endTimeoutMs?: number;
  /** See QUEUE_BYTES. */
  queueBytes?: number;
  /** See MAX_LAG_MS. */
  maxLagMs?: number;
  /** Names of sinks never dropped from (default DURABLE_SINKS). */
  durable?: readonly string[];
}

/** Sinks driven as one. */
export interface SinkSession {
  /**
   * Queues `hook` for every sink still in the session. Replay mode: resolves
   * when it has reached them all. Live mode: `write` resolves at once;
   * `start` when every sink has done it or the end timeout passed;
   * operatorStart/operatorDone likewise within a second (a sink behind is
   * not waited for); `end` as described above. Pass the batch of a `write`
   * so its size counts against the sink's queue.
   */
  call(hook: string, fn: (sink: Sink) => unknown, batch?: SampleBatch): Promise<void>;
  /** Reports, through the session's warning, how many calls each failed sink missed. */
  reportSuppressed(): void;
  /** What each sink lost so far (dropped, or not delivered when the end gave up on it); only sinks that lost something. */
  losses(): SinkLoss[];
  /** The sinks that failed, each with its first error. */
  readonly failures: ReadonlyMap<Sink, CpostError>;
}

interface Item {
  hook: string;
  fn: ((sink: Sink) => unknown) | undefined;
  bytes: number;
  rows: number;
  atMs: number;
  done: () => void;
  finished: Promise<void>;
}

/** One sink's queue and chain. */
interface Lane {
  sink: Sink;
  durable: boolean;
  queue: Item[];
  queuedBytes: number;
  running: boolean;
  /** The end gave up on it: nothing more runs. */
  abandoned: boolean;
  /** Warned that it is behind; not waited for until its queue empties. */
  behind: boolean;
  /** The hook in flight and since when. */
  current: { hook: string; sinceMs: number } | undefined;
  /** Items finished, and who waits for the next one. */
  completed: number;
  progress: Set<() => void>;
  loss: SinkLoss;
}

/** A session over `sinks`. */
export function defineSinkSession(sinks: Sink[], options: SinkSessionOptions | ((error: CpostError) => void), legacyWarn?: (message: string) => void): SinkSession {
  const o: SinkSessionOptions = typeof options === "function" ? { onError: options, warn: legacyWarn } : options;
  const warn = o.warn ?? (() => {});
  const endTimeoutMs = o.endTimeoutMs ?? DEFAULT_SINK_END_TIMEOUT_MS;
  const queueBytes = o.queueBytes ?? QUEUE_BYTES;
  const maxLagMs = o.maxLagMs ?? MAX_LAG_MS;
  const durable = new Set(o.durable ?? DURABLE_SINKS);
  const failures = new Map<Sink, CpostError>();
  const skipped = new Map<Sink, number>();
  const lanes: Lane[] = sinks.map((sink) => ({
    sink, durable: durable.has(sink.name), queue: [], queuedBytes: 0, running: false, abandoned: false, behind: false, current: undefined, completed: 0, progress: new Set(),
    loss: { sink: sink.name, droppedBatches: 0, droppedRows: 0, undeliveredBatches: 0, undeliveredRows: 0 },
  }));

  const fail = (sink: Sink, hook: string, thrown: unknown) => {
    if (failures.has(sink)) return;
    // A plugin's boundary already named the plugin and the hook.
    const error = thrown instanceof CpostError && thrown.plugin ? thrown : pluginError(sink.name, hook, thrown);
    failures.set(sink, error);
    o.onError(error);
  };
  const leftOut = (sink: Sink, hook: string) => {
    if (failures.has(sink) && hook !== "end") {
      skipped.set(sink, (skipped.get(sink) ?? 0) + 1);
      return true;
    }
    return false;
  };

  /** Runs one hook; a result other than nothing or a promise is the plugin's contract broken. */
  async function invoke(sink: Sink, hook: string, fn: (sink: Sink) => unknown): Promise<void> {
    try {
      const result = fn(sink);
      if (result !== null && typeof result === "object" && typeof (result as PromiseLike<unknown>).then === "function") await result;
    } catch (thrown) {
      fail(sink, hook, thrown);
    }
  }

  // ------------------------------------------------------------ replay mode
  if (o.mode === "replay") {
    let tail: Promise<void> = Promise.resolve();
    return {
      failures,
      losses: () => [],
      call(hook, fn) {
        tail = tail.then(async () => {
          for (const sink of sinks) if (!leftOut(sink, hook)) await invoke(sink, hook, fn);
        });
        return tail;
      },
      reportSuppressed: () => reportSkipped(),
    };
  }

  // ------------------------------------------------------------ live mode
  async function pump(lane: Lane): Promise<void> {
    if (lane.running) return;
    lane.running = true;
    while (lane.queue.length > 0 && !lane.abandoned) {
      const item = lane.queue.shift()!;
      lane.queuedBytes -= item.bytes;
      if (!leftOut(lane.sink, item.hook) && item.fn) {
        lane.current = { hook: item.hook, sinceMs: performance.now() };
        await invoke(lane.sink, item.hook, item.fn);
        lane.current = undefined;
      }
      item.fn = undefined;
      lane.completed++;
      item.done();
      for (const wake of [...lane.progress]) wake();
      if (lane.queue.length === 0) lane.behind = false;
    }
    lane.running = false;
  }

  function enqueue(lane: Lane, hook: string, fn: (sink: Sink) => unknown, batch?: SampleBatch): Item {
    let done!: () => void;
    const finished = new Promise<void>((resolve) => (done = resolve));
    const bytes = batch ? batch.values.byteLength + batch.timestampMs.byteLength + batch.monotonicMs.byteLength : 0;
    const item: Item = { hook, fn, bytes, rows: batch?.rows ?? 0, atMs: performance.now(), done, finished };
    lane.queue.push(item);
    lane.queuedBytes += bytes;
    if (batch) bound(lane);
    void pump(lane);
    return item;
  }

  /** Age of the oldest queued batch, ms. */
  const lagOf = (lane: Lane) => {
    const oldest = lane.queue.find((i) => i.bytes > 0);
    return oldest ? performance.now() - oldest.atMs : 0;
  };

  /** Past the bound, a sink drops its oldest queued batches (a durable one is only told). */
  function bound(lane: Lane): void {
    const over = () => lane.queuedBytes > queueBytes || lagOf(lane) > maxLagMs;
    if (!over()) return;
    const seconds = Math.round(lagOf(lane) / 1000);
    if (lane.durable) {
      if (!lane.behind) warn(`sink ${lane.sink.name} is ${seconds} s behind (${mib(lane.queuedBytes)} queued); it keeps every batch, so its queue grows, and the other sinks go on`);
      lane.behind = true;
      return;
    }
    if (!lane.behind) warn(`sink ${lane.sink.name} is ${seconds} s behind; dropping its oldest batches (the other sinks get everything)`);
    lane.behind = true;
    // Oldest first, never the newest batch (the one just queued), never a control hook.
    for (let i = 0; i < lane.queue.length - 1 && over(); ) {
      const item = lane.queue[i]!;
      if (item.bytes === 0) {
        i++;
        continue;
      }
      lane.queue.splice(i, 1);
      lane.queuedBytes -= item.bytes;
      lane.loss.droppedBatches++;
      lane.loss.droppedRows += item.rows;
      item.fn = undefined;
      item.done();
    }
  }

  /** Resolves with true when `item` finished, false when `limitMs` passed (for a durable sink: with no item finished in that time). */
  function waitFor(lane: Lane, item: Item, limitMs: number, whileProgressing: boolean): Promise<boolean> {
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout>;
      const settle = (ok: boolean) => {
        clearTimeout(timer);
        lane.progress.delete(wake);
        resolve(ok);
      };
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => settle(false), Math.max(0, limitMs));
      };
      const wake = () => {
        if (whileProgressing) arm();
      };
      void item.finished.then(() => settle(true));
      lane.progress.add(wake);
      arm();
    });
  }

  function abandon(lane: Lane, what: "catch up" | "end"): void {
    lane.abandoned = true;
    let batches = 0;
    let rows = 0;
    const hooks = new Set<string>();
    for (const item of lane.queue) {
      if (item.bytes > 0) {
        batches++;
        rows += item.rows;
      } else hooks.add(item.hook);
      item.fn = undefined;
      item.done();
    }
    lane.queue.length = 0;
    lane.queuedBytes = 0;
    lane.loss.undeliveredBatches += batches;
    lane.loss.undeliveredRows += rows;
    const inEnd = lane.current?.hook === "end";
    hooks.delete("end");
    const stuck = lane.current ? `; its ${lane.current.hook} has not returned for ${((performance.now() - lane.current.sinceMs) / 1000).toFixed(0)} s` : "";
    const missed = [batches > 0 ? `${batches} batch(es) (${rows} rows)` : "", ...[...hooks].map((h) => `its ${h}`), inEnd ? "" : "its end"].filter(Boolean);
    warn(`sink ${lane.sink.name} did not ${inEnd ? "finish its end" : "catch up"} within ${seconds(endTimeoutMs)} ${what === "end" ? "more " : ""}at the run's end (--sink-end-timeout)${stuck}${missed.length ? `; it did not get ${missed.join(", ")}` : ""}`);
  }

  async function end(fn: (sink: Sink) => unknown): Promise<void> {
    // 1. Each sink catches up with its backlog, so the figures handed to `end` are final.
    const start = performance.now();
    await Promise.all(
      lanes.map(async (lane) => {
        if (lane.abandoned || lane.queue.length === 0) return;
        const last = lane.queue.at(-1)!;
        const ok = await waitFor(lane, last, lane.durable ? endTimeoutMs : endTimeoutMs - (performance.now() - start), lane.durable);
        if (!ok) abandon(lane, "catch up");
      }),
    );
    // 2. Their end hooks, each bounded again.
    await Promise.all(
      lanes.map(async (lane) => {
        if (lane.abandoned) return;
        // An idle lane still running means a hook never returned (a write abandoned by none): bounded the same.
        const item = enqueue(lane, "end", fn);
        if (!(await waitFor(lane, item, endTimeoutMs, lane.durable))) abandon(lane, "end");
      }),
    );
    for (const loss of losses()) {
      const dropped = loss.droppedBatches > 0 ? `dropped ${loss.droppedBatches} batch(es) (${loss.droppedRows} rows) it could not keep up with` : "";
      const undelivered = loss.undeliveredBatches > 0 ? `did not get ${loss.undeliveredBatches} batch(es) (${loss.undeliveredRows} rows) when the run ended` : "";
      warn(`sink ${loss.sink} ${[dropped, undelivered].filter(Boolean).join(" and ")}; the other sinks got every batch`);
    }
  }

  function losses(): SinkLoss[] {
    return lanes.filter((l) => l.loss.droppedBatches + l.loss.undeliveredBatches > 0).map((l) => ({ ...l.loss }));
  }

  function reportSkipped(): void {
    for (const [sink, calls] of skipped) {
      if (calls > 0) warn(`sink ${sink.name} was left out of ${calls} later call(s) after it failed`);
    }
  }

  return {
    failures,
    losses,
    reportSuppressed: reportSkipped,
    async call(hook, fn, batch) {
      if (hook === "end") return end(fn);
      const waits: Array<Promise<boolean>> = [];
      for (const lane of lanes) {
        if (lane.abandoned) continue;
        if (leftOut(lane.sink, hook)) continue;
        const item = enqueue(lane, hook, fn, hook === "write" ? batch : undefined);
        if (hook === "write" || lane.behind) continue;
        waits.push(waitFor(lane, item, hook === "start" ? endTimeoutMs : HOOK_WAIT_MS, false));
      }
      await Promise.all(waits);
    },
  };
}

const mib = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`;
const seconds = (ms: number) => `${Number((ms / 1000).toFixed(3))} s`;

/** A live session whose errors and suppressed calls are warnings: the runner's and the monitor's. */
export function defineSinkFanout(sinks: Sink[], warn: (message: string) => void, options: Omit<SinkSessionOptions, "onError" | "warn"> = {}): SinkSession {
  return defineSinkSession(sinks, { ...options, onError: (error) => warn(error.message), warn });
}
