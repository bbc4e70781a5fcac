/**
 * `--sinks elasticsearch` (alias `es`): every sample into Elasticsearch with
 * `_bulk`, never blocking the run and never losing a document silently.
 * `write` only encodes and queues; a background flusher sends by size or
 * time; what Elasticsearch cannot take now goes to a disk spool that this
 * and later runs send when it answers. Deterministic `_id`s make a resend
 * after an ambiguous failure a 409, not a duplicate.
 */
import { createHash } from "node:crypto";
import { homedir } from "node:os";
import { join } from "node:path";
import { CpostError } from "../core/errors.ts";
import type { RunInfo, SampleBatch, Sink, SinkFactory } from "../core/types.ts";
import { bulk, checkAuth, esConnection, esRequest, type BulkOutcome } from "./elasticsearch-client.ts";
import { defineEncoder, type DocumentEncoder } from "./elasticsearch-documents.ts";
import { openSpool } from "./elasticsearch-spool.ts";

/** `10s`, `500ms`, `2m`; a bare number is milliseconds. */
export function parseDuration(text: string | undefined, fallbackMs: number, option: string): number {
  if (text === undefined) return fallbackMs;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m)?$/.exec(text.trim());
  if (!m) throw new CpostError("input", `--${option} ${JSON.stringify(text)} is not a duration`, { hint: "e.g. 500ms, 10s, 2m" });
  return Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000 }[m[2] ?? "ms"] ?? 1);
}

/** `1G`, `512M`, `64KiB`, plain bytes. */
export function parseSize(text: string | undefined, fallback: number, option: string): number {
  if (text === undefined) return fallback;
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(text.trim());
  if (!m) throw new CpostError("input", `--${option} ${JSON.stringify(text)} is not a size`, { hint: "e.g. 1G, 512M, 100000000" });
  return Math.floor(Number(m[1]) * 1024 ** "_kmgt".indexOf((m[2] || "_").toLowerCase()));
}

const flag = (v: string | undefined) => v !== undefined && v !== "false" && v !== "0";

const elasticsearch: SinkFactory = ({ options: given, out }) => {
  // `--es-x` and `--elasticsearch-x` are the same option.
  const options: Record<string, string | undefined> = { ...given };
  for (const [key, value] of Object.entries(given)) if (key.startsWith("elasticsearch-")) options[`es-${key.slice(14)}`] ??= value;
  const conn = esConnection(options);
  conn.timeoutMs = parseDuration(options["es-timeout"], 30_000, "es-timeout");
  const batchDocs = Math.max(1, Number(options["es-batch-docs"] ?? 5000));
  const batchBytes = parseSize(options["es-batch-bytes"], 5 * 2 ** 20, "es-batch-bytes");
  const flushMs = parseDuration(options["es-flush"], 1000, "es-flush");
  const endMs = parseDuration(options["es-end-timeout"], 10_000, "es-end-timeout");
  const retry = { retries: Number(options["es-retries"] ?? 5), backoffMs: 200, backoffMaxMs: parseDuration(options["es-backoff-max"], 10_000, "es-backoff-max") };
  const cache = process.env.XDG_CACHE_HOME || join(homedir(), ".cache");
  // One spool per cluster, so documents held for one are never sent to another.
  const cluster = `${new URL(conn.url).host.replace(/[^\w.-]/g, "_")}-${createHash("sha256").update(conn.url).digest("hex").slice(0, 8)}`;
  const spool = openSpool(join(options["es-spool-dir"] ?? join(cache, "cpost", "es-spool"), cluster), parseSize(options["es-spool-max"], 2 ** 30, "es-spool-max"));
  const print = (line: string) => (out ?? process.stderr).write(`${line}\n`);
  const said = new Set<string>();
  const once = (key: string, line: string) => said.has(key) || (said.add(key), print(`elasticsearch: ${line}`));

  let encoder: DocumentEncoder | undefined;
  let queue: string[] = [];
  let queuedBytes = 0;
  let oldestQueuedAt = 0;
  const counts = { sent: 0, fromSpool: 0, rejected: 0, lost: 0 };
  let down = false;
  let downFor = 0;
  let probeAt = 0;
  let closing = false;
  let deadline = Infinity;
  const abort = new AbortController();
  let wakeUp = () => {};
  const wake = () => wakeUp();
  // Unref'd: a flusher with nothing to do must not keep cpost alive (end() holds it while it matters).
  const nap = (ms: number) => new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    timer.unref();
    wakeUp = () => (clearTimeout(timer), resolve());
  });
  let spoolMayHold = true; // a cheap check per loop; other processes' new files are found at the next start

  function toSpool(items: string[]): void {
    if (spool.put(items)) return void (spoolMayHold = true);
    counts.lost += items.length;
    once("full", `SPOOL FULL (${spool.dir}, --es-spool-max ${spool.maxBytes} bytes): documents are being DROPPED; free space or raise --es-spool-max`);
  }

  function account(outcome: BulkOutcome, viaSpool: boolean): void {
    counts.sent += outcome.sent;
    if (viaSpool) counts.fromSpool += outcome.sent;
    for (const [reason, n] of outcome.rejected) {
      counts.rejected += n;
      once(`rejected ${reason}`, `documents rejected: ${reason}${/pars|mapp/.test(reason) ? " (the index mapping disagrees with cpost's documents: run `cpost es setup`, then roll the data stream over, or use another --es-namespace)" : ""}`);
    }
    if (outcome.unreachable) {
      const what = outcome.unreachable.startsWith("HTTP") ? "failing" : "not answering";
      if (!down) once(`down ${outcome.unreachable}`, `${conn.url} ${what} (${outcome.unreachable}); documents go to the spool ${spool.dir} and are sent when it answers`);
      down = true;
      downFor = Math.min(retry.backoffMaxMs, Math.max(retry.backoffMs, downFor * 2));
      probeAt = performance.now() + downFor;
    } else if (outcome.sent > 0 || outcome.rejected.size > 0) {
      down = false;
      downFor = 0;
    }
  }

  async function send(items: string[], viaSpool: boolean): Promise<string[]> {
    const policy = { ...retry, retries: down ? 0 : retry.retries, deadline: closing ? deadline : undefined, signal: abort.signal };
    try {
      const outcome = await bulk(conn, items, policy);
      if (abort.signal.aborted) outcome.unreachable = undefined; // cut off by end()'s deadline, not an outage
      account(outcome, viaSpool);
      return outcome.unsent;
    } catch (error) {
      once("auth", (error as Error).message); // bad credentials: hold everything until they are fixed
      down = true;
      probeAt = Infinity;
      return items;
    }
  }

  function take(): string[] {
    let n = 0;
    let bytes = 0;
    while (n < queue.length && n < batchDocs && bytes < batchBytes) bytes += queue[n++]!.length;
    const items = n === queue.length ? queue : queue.slice(0, n);
    queue = n === queue.length ? [] : queue.slice(n);
    queuedBytes -= bytes;
    oldestQueuedAt = performance.now();
    return items;
  }

  async function flusher(): Promise<void> {
    for (;;) {
      const now = performance.now();
      const pastDeadline = now >= deadline || abort.signal.aborted;
      const canSend = (!down || now >= probeAt) && !pastDeadline;
      if (queue.length > 0 && (closing || queue.length >= batchDocs || queuedBytes >= batchBytes || now - oldestQueuedAt >= flushMs)) {
        const items = take();
        toSpool(canSend ? await send(items, false) : items);
      } else if (canSend && spoolMayHold) {
        const file = spool.claim();
        if (file) file.release(await send(file.items, true));
        else spoolMayHold = false;
      } else if (closing && (queue.length === 0 || pastDeadline)) {
        return;
      } else {
        const due = queue.length > 0 ? flushMs - (now - oldestQueuedAt) : flushMs;
        await nap(Math.max(1, Math.min(due, down ? probeAt - now : due)));
      }
    }
  }
  let flushing: Promise<void> = Promise.resolve();

  const sink: Sink = {
    name: "elasticsearch",
    async start(run: RunInfo) {
      encoder = defineEncoder(run, { namespace: options["es-namespace"] ?? "default", legacy: flag(options["es-legacy"]) });
      const answer = await esRequest({ ...conn, timeoutMs: Math.min(conn.timeoutMs, 2000) }, "GET", "/");
      const waiting = spool.pending();
      if (waiting.docs > 0) once("backlog", `${waiting.docs} documents from earlier runs wait in ${spool.dir}; sending them in the background`);
      oldestQueuedAt = performance.now();
      flushing = flusher();
      if (answer.unreachable !== undefined) account({ sent: 0, rejected: new Map(), unsent: [], unreachable: answer.unreachable }, false);
      else checkAuth(conn, answer, "read cluster info");
    },
    write(batch: SampleBatch) {
      if (!encoder) throw new CpostError("internal", "elasticsearch: write before start");
      if (queue.length === 0) oldestQueuedAt = performance.now();
      const from = queue.length;
      encoder.encode(batch, queue);
      for (let i = from; i < queue.length; i++) queuedBytes += queue[i]!.length;
      // Elasticsearch slower than the samples: keep memory bounded, the disk holds the rest.
      while (queuedBytes > 8 * batchBytes) toSpool(take());
      if (queue.length >= batchDocs || queuedBytes >= batchBytes) wake();
    },
    operatorDone() {},
    async end() {
      closing = true;
      deadline = performance.now() + endMs;
      probeAt = Math.min(probeAt, performance.now()); // one last try if it was down; a failure sends the rest to the spool
      wake();
      const stop = setTimeout(() => (abort.abort(), wake()), endMs);
      await flushing;
      clearTimeout(stop);
      if (queue.length > 0) toSpool(take());
      const left = spool.pending();
      print(`elasticsearch: ${counts.sent} sent${counts.fromSpool ? ` (${counts.fromSpool} from the spool)` : ""}, ${left.docs} spooled${left.docs ? ` in ${spool.dir}` : ""}, ${counts.rejected} rejected${counts.lost ? `, ${counts.lost} LOST (spool full)` : ""}`);
      if (counts.lost > 0) {
        throw new CpostError("io", `${counts.lost} documents were dropped: the spool ${spool.dir} was full`, { hint: "raise --es-spool-max or free disk space" });
      }
    },
  };
  return sink;
};

export default elasticsearch;
