/**
 * `--sinks elasticsearch` (alias `es`): every sample into Elasticsearch with
 * `_bulk`, never blocking the run and never losing a document silently.
 * `write` only encodes and queues (plugins/elasticsearch/delivery.ts sends in
 * the background, and spools to disk what Elasticsearch cannot take now, for
 * this or a later run to send). Deterministic `_id`s make a resend after an
 * ambiguous failure a 409, not a duplicate.
 */
import { createHash } from "node:crypto";
import { homedir } from "node:os";
import { join } from "node:path";
import { parseDuration, parseSize } from "../../core/contracts/units.ts";
import { CpostError } from "../../core/contracts/errors.ts";
import type { RunInfo, SampleBatch, SinkFactory } from "../../core/contracts/types.ts";
import { checkAuth, esConnection, esRequest } from "./client.ts";
import { defineDelivery } from "./delivery.ts";
import { defineEncoder, type DocumentEncoder } from "./documents.ts";
import { openSpool } from "./spool.ts";

/** A duration sink option (`10s`, `500ms`, `2m`, bare ms), or its default. */
export function optionMs(text: string | undefined, fallbackMs: number, option: string): number {
  return text === undefined ? fallbackMs : parseDuration(text, { flag: `--${option}`, code: "input" });
}

/** A size sink option (`1G`, `512M`, plain bytes), or its default. */
function optionBytes(text: string | undefined, fallback: number, option: string): number {
  return text === undefined ? fallback : parseSize(text, `--${option}`, "input");
}

/** A whole number of at least `min`. */
function parseCount(text: string | undefined, fallback: number, option: string, min = 0): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text.trim()) || Number(text) < min) throw new CpostError("input", `--${option} ${JSON.stringify(text)} is not a whole number of at least ${min}`);
  return Number(text);
}

const flag = (v: string | undefined) => v !== undefined && v !== "false" && v !== "0";

/** The sink factory: options are `--es-*` (or `--elasticsearch-*`) flags and CPOST_ES_* environment variables. */
const elasticsearch: SinkFactory = ({ options: given, out }) => {
  // `--es-x` and `--elasticsearch-x` are the same option.
  const options: Record<string, string | undefined> = { ...given };
  for (const [key, value] of Object.entries(given)) if (key.startsWith("elasticsearch-")) options[`es-${key.slice(14)}`] ??= value;
  const conn = esConnection(options);
  const namespace = options["es-namespace"] ?? "default";
  if (!/^[a-z0-9_]{1,100}$/.test(namespace)) {
    throw new CpostError("input", `--es-namespace ${JSON.stringify(namespace)} cannot be part of a data stream name`, { hint: "lowercase letters, digits and _ only (no -), e.g. --es-namespace lab_3" });
  }
  conn.timeoutMs = optionMs(options["es-timeout"], 30_000, "es-timeout");
  const endMs = optionMs(options["es-end-timeout"], 10_000, "es-end-timeout");
  const cache = process.env.XDG_CACHE_HOME || join(homedir(), ".cache");
  // One spool per cluster, so documents held for one are never sent to another.
  const cluster = `${new URL(conn.url).host.replace(/[^\w.-]/g, "_")}-${createHash("sha256").update(conn.url).digest("hex").slice(0, 8)}`;
  const spool = openSpool(join(options["es-spool-dir"] ?? join(cache, "cpost", "es-spool"), cluster), optionBytes(options["es-spool-max"], 2 ** 30, "es-spool-max"));
  const print = (line: string) => (out ?? process.stderr).write(`${line}\n`);
  const said = new Set<string>();
  const delivery = defineDelivery({
    conn,
    spool,
    retry: { retries: parseCount(options["es-retries"], 5, "es-retries"), backoffMs: 200, backoffMaxMs: optionMs(options["es-backoff-max"], 10_000, "es-backoff-max") },
    batchDocs: parseCount(options["es-batch-docs"], 5000, "es-batch-docs", 1),
    batchBytes: optionBytes(options["es-batch-bytes"], 5 * 2 ** 20, "es-batch-bytes"),
    flushMs: optionMs(options["es-flush"], 1000, "es-flush"),
    concurrency: parseCount(options["es-concurrency"], 2, "es-concurrency", 1),
    say: (key, line) => said.has(key) || (said.add(key), print(`elasticsearch: ${line}`)),
  });
  let encoder: DocumentEncoder | undefined;

  return {
    name: "elasticsearch",
    async start(run: RunInfo) {
      encoder = defineEncoder(run, { namespace, legacy: flag(options["es-legacy"]) });
      const waiting = spool.pending();
      if (waiting.docs > 0) print(`elasticsearch: ${waiting.docs} documents from earlier runs wait in ${spool.dir}; sending them in the background`);
      // A short look first: bad credentials should stop the run's use of this sink now, not after the run.
      const answer = await esRequest({ ...conn, timeoutMs: Math.min(conn.timeoutMs, 2000) }, "GET", "/");
      delivery.start(answer.unreachable);
      try {
        checkAuth(conn, answer, "read cluster info");
      } catch (error) {
        delivery.refuse();
        throw error;
      }
    },
    write(batch: SampleBatch) {
      if (!encoder) throw new CpostError("internal", "elasticsearch: write before start");
      const encode = encoder.encode;
      delivery.add((queue) => encode(batch, queue));
    },
    operatorDone() {},
    async end() {
      const counts = await delivery.finish(endMs);
      const left = spool.pending();
      print(`elasticsearch: ${counts.sent} sent${counts.fromSpool ? ` (${counts.fromSpool} from the spool)` : ""}, ${left.docs} spooled${left.docs ? ` in ${spool.dir}` : ""}, ${counts.rejected} rejected${counts.lost ? `, ${counts.lost} LOST (spool full)` : ""}`);
      if (counts.lost > 0) {
        throw new CpostError("io", `${counts.lost} documents were dropped: the spool ${spool.dir} could not take them`, { hint: "raise --es-spool-max or free disk space" });
      }
    },
  };
};

export default elasticsearch;
