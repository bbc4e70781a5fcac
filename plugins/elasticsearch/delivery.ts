/**
 * How the es sink's documents reach Elasticsearch: an in-memory queue that
 * `add` fills without waiting, a background flusher that sends it by size or
 * time (a few `_bulk` requests in flight), and the disk spool for what
 * Elasticsearch cannot take now: while it is down, when it is slower than
 * the samples, and whatever is left at the deadline of `finish`. The spool
 * is sent back whenever Elasticsearch answers, oldest first.
 */
import { bulk, type BulkOutcome, type EsConnection, type RetryPolicy } from "./client.ts";
import type { Spool } from "./spool.ts";

/** What the flusher needs; `say(key, line)` prints a line once per key. */
export interface DeliveryOptions {
  conn: EsConnection;
  spool: Spool;
  retry: Omit<RetryPolicy, "deadline" | "signal">;
  batchDocs: number;
  batchBytes: number;
  flushMs: number;
  concurrency: number;
  say(key: string, line: string): void;
  /**
   * Runs before the first `_bulk` (once it says "ready"): the sink's check that the cluster has
   * cpost's templates. `later`: the cluster did not answer (why), ask again before the next
   * send; "hold": never send in this run (everything goes to the spool, for a later run).
   */
  prepare?(): Promise<"ready" | "hold" | { later: string }>;
}

/** Documents by fate, for the end-of-run line. */
export interface DeliveryCounts {
  sent: number;
  /** Of `sent`, those that went through the spool (this run's outage or earlier runs). */
  fromSpool: number;
  rejected: number;
  /** Dropped because the spool was full. */
  lost: number;
}

/** The queue and its flusher. `add` never waits; `finish` returns within its deadline. */
export function defineDelivery(o: DeliveryOptions) {
  let queue: string[] = [];
  let queuedBytes = 0;
  let oldestQueuedAt = performance.now();
  const counts: DeliveryCounts = { sent: 0, fromSpool: 0, rejected: 0, lost: 0 };
  let down = false;
  let downFor = 0;
  let probeAt = 0;
  let closing = false;
  let refused = false;
  let deadline = Infinity;
  const abort = new AbortController();
  let spoolMayHold = true; // a cheap check per loop; other processes' new files are found at the next start
  let wakeUp = () => {};
  const wake = () => wakeUp();
  // Unref'd: a flusher with nothing to do must not keep cpost alive (finish() holds it while it matters).
  const nap = (ms: number) => new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    timer.unref();
    wakeUp = () => (clearTimeout(timer), resolve());
  });

  function toSpool(items: string[]): void {
    const failure = o.spool.put(items);
    if (failure === undefined) return void (spoolMayHold ||= items.length > 0);
    counts.lost += items.length;
    o.say("lost", `SPOOL ${o.spool.dir} cannot take documents (${failure}): they are being DROPPED; free space or raise --es-spool-max`);
  }

  function unreachable(reason: string): void {
    const what = reason.startsWith("HTTP") ? "failing" : "not answering";
    if (!down) o.say(`down ${reason}`, `${o.conn.url} ${what} (${reason}); documents go to the spool ${o.spool.dir} and are sent when it answers`);
    down = true;
    downFor = Math.min(o.retry.backoffMaxMs, Math.max(o.retry.backoffMs, downFor * 2));
    probeAt = performance.now() + downFor;
  }

  function account(outcome: BulkOutcome, viaSpool: boolean): void {
    counts.sent += outcome.sent;
    if (viaSpool) counts.fromSpool += outcome.sent;
    for (const [reason, n] of outcome.rejected) {
      counts.rejected += n;
      const mapping = /pars|mapp/.test(reason) ? " (the index mapping disagrees with cpost's documents: run `cpost es setup`, then roll the data stream over, or use another --es-namespace)" : "";
      o.say(`rejected ${reason}`, `documents rejected: ${reason}${mapping}`);
    }
    if (outcome.unreachable) unreachable(outcome.unreachable);
    else if (outcome.sent > 0 || outcome.rejected.size > 0) down = false;
    if (!down) downFor = 0;
  }

  let preparing: ReturnType<NonNullable<DeliveryOptions["prepare"]>> | undefined;
  /** True once `prepare` said ready; one check at a time however many sends wait for it. */
  async function prepared(): Promise<boolean> {
    if (!o.prepare) return true;
    preparing ??= o.prepare();
    const state = await preparing;
    if (state === "ready") return true;
    if (state === "hold") {
      refused = true;
      down = true;
      probeAt = Infinity;
    } else {
      preparing = undefined;
      unreachable(state.later);
    }
    return false;
  }

  async function send(items: string[], viaSpool: boolean): Promise<string[]> {
    if (!(await prepared())) return items;
    const policy = { ...o.retry, retries: down ? 0 : o.retry.retries, deadline: closing ? deadline : undefined, signal: abort.signal };
    try {
      const outcome = await bulk(o.conn, items, policy);
      if (abort.signal.aborted) outcome.unreachable = undefined; // cut off by finish()'s deadline, not an outage
      account(outcome, viaSpool);
      return outcome.unsent;
    } catch (error) {
      o.say("auth", (error as Error).message); // bad credentials: hold everything until they are fixed
      down = true;
      probeAt = Infinity;
      return items;
    }
  }

  function take(): string[] {
    let n = 0;
    let bytes = 0;
    while (n < queue.length && (n === 0 || (n < o.batchDocs && bytes < o.batchBytes))) bytes += queue[n++]!.length;
    const items = n === queue.length ? queue : queue.slice(0, n);
    queue = n === queue.length ? [] : queue.slice(n);
    queuedBytes -= bytes;
    oldestQueuedAt = performance.now();
    return items;
  }

  async function flusher(): Promise<void> {
    const running = new Set<Promise<void>>();
    const launch = (work: Promise<void>) => {
      const p = work
        .catch((error: unknown) => o.say(`bug ${error}`, `internal error, documents may stay in the spool: ${error}`))
        .finally(() => (running.delete(p), wake()));
      running.add(p);
    };
    for (;;) {
      const now = performance.now();
      const canSend = (!down || now >= probeAt) && now < deadline && !abort.signal.aborted;
      const slots = down ? 1 : o.concurrency; // while down, one probe at a time
      const ready = queue.length > 0 && (closing || queue.length >= o.batchDocs || queuedBytes >= o.batchBytes || now - oldestQueuedAt >= o.flushMs);
      if (ready && !canSend) toSpool(take());
      else if (ready && running.size < slots) launch(send(take(), false).then(toSpool));
      else if (!ready && canSend && spoolMayHold && running.size < slots) {
        const file = o.spool.claim();
        if (file) launch(send(file.items, true).then(file.release));
        else spoolMayHold = false;
      } else if (closing && running.size === 0 && queue.length === 0) return;
      else {
        // Until the queue is due or a probe is, or add, finish or a finished send wakes it (never a spin while all slots are busy).
        let wait = queue.length > 0 && !ready ? o.flushMs - (now - oldestQueuedAt) : o.flushMs;
        if (down && probeAt > now) wait = Math.min(wait, probeAt - now);
        await nap(Math.max(1, wait));
      }
    }
  }
  let flushing: Promise<void> = Promise.resolve();

  return {
    /** Starts the flusher; `unreachableReason`: the preflight found Elasticsearch not answering. */
    start(unreachableReason?: string): void {
      if (unreachableReason !== undefined) unreachable(unreachableReason);
      flushing = flusher();
    },
    /** Holds credentials back for good (they were refused): everything goes to the spool. */
    refuse(): void {
      refused = true;
      down = true;
      probeAt = Infinity;
    },
    /** Lets `fill` append items to the queue; spills to the spool past 8 bulk requests' worth of memory. */
    add(fill: (queue: string[]) => void): void {
      if (queue.length === 0) oldestQueuedAt = performance.now();
      const from = queue.length;
      fill(queue);
      for (let i = from; i < queue.length; i++) queuedBytes += queue[i]!.length;
      while (queuedBytes > 8 * o.batchBytes) toSpool(take());
      if (queue.length >= o.batchDocs || queuedBytes >= o.batchBytes) wake();
    },
    /** Sends what it can within `withinMs` (one last try if Elasticsearch was down), spools the rest. */
    async finish(withinMs: number): Promise<DeliveryCounts> {
      closing = true;
      deadline = performance.now() + withinMs;
      if (!refused) probeAt = Math.min(probeAt, performance.now());
      wake();
      const stop = setTimeout(() => (abort.abort(), wake()), withinMs);
      await flushing;
      clearTimeout(stop);
      while (queue.length > 0) toSpool(take());
      return counts;
    },
  };
}
