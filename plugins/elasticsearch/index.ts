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
import { defineSink } from "../../core/contracts/plugin-sdk.ts";
import type { RunInfo, SampleBatch } from "../../core/contracts/types.ts";
import { checkAuth, errorReason, esConnection, esRequest } from "./client.ts";
import { defineDelivery } from "./delivery.ts";
import { defineEncoder, type DocumentEncoder } from "./documents.ts";
import { engineOf, setupCluster, templatesPresent, type Engine } from "./setup.ts";
import { openSpool } from "./spool.ts";
import { LIFECYCLE_POLICY } from "./templates.ts";

/** A whole number of at least `min`. */
function parseCount(text: string, option: string, min = 0): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) < min) throw new CpostError("input", `--${option} ${JSON.stringify(text)} is not a whole number of at least ${min}`);
  return Number(text);
}

const flag = (v: string | undefined) => v !== undefined && v !== "false" && v !== "0";

/**
 * The sink: options are `--es-<option>` (or `--elasticsearch-<option>`)
 * flags and CPOST_ES_* environment variables.
 */
export default defineSink({
  name: "elasticsearch",
  description: "every sample into Elasticsearch with _bulk, spooled to disk while it is down (see docs/elasticsearch.md)",
  options: {
    url: { description: "the cluster: one node, or several comma-separated to go on to the next when one stops answering (required, here or in CPOST_ES_URL)" },
    "api-key-file": { description: "file holding the API key (or CPOST_ES_API_KEY)" },
    user: { description: "basic auth user (or CPOST_ES_USER)" },
    "password-file": { description: "file holding the password (or CPOST_ES_PASSWORD)" },
    ca: { description: "PEM file to trust for https (or CPOST_ES_CA)" },
    "api-key": { description: "refused: any user can read a command line (ps); use --es-api-key-file" },
    password: { description: "refused: any user can read a command line (ps); use --es-password-file" },
    namespace: { description: "data stream namespace", default: "default" },
    legacy: { description: "`true`: the original's cpumetrics/gpumetrics indices" },
    "spool-dir": { description: "where documents wait while Elasticsearch is down (default $XDG_CACHE_HOME/cpost/es-spool)" },
    "spool-max": { description: "spool size beyond which documents are dropped and counted", default: "1G" },
    "batch-docs": { description: "documents per _bulk request", default: "5000" },
    "batch-bytes": { description: "bytes per _bulk request", default: "5M" },
    flush: { description: "longest wait before a request goes", default: "1s" },
    concurrency: { description: "_bulk requests in flight", default: "2" },
    timeout: { description: "per request", default: "30s" },
    retries: { description: "retries of 429/5xx answers", default: "5" },
    "backoff-max": { description: "longest wait between retries", default: "10s" },
    "end-timeout": { description: "how long the end of a run waits for Elasticsearch", default: "10s" },
  },
  create: ({ options, out }) => createElasticsearchSink(options, out),
});

type Defaulted = "namespace" | "spool-max" | "batch-docs" | "batch-bytes" | "flush" | "concurrency" | "timeout" | "retries" | "backoff-max" | "end-timeout";

function createElasticsearchSink(options: Record<string, string | undefined> & Record<Defaulted, string>, out: { write(text: string): unknown }) {
  const conn = esConnection(options);
  const namespace = options.namespace;
  if (!/^[a-z0-9_]{1,100}$/.test(namespace)) {
    throw new CpostError("input", `--es-namespace ${JSON.stringify(namespace)} cannot be part of a data stream name`, { hint: "lowercase letters, digits and _ only (no -), e.g. --es-namespace lab_3" });
  }
  const duration = (option: Defaulted) => parseDuration(options[option], { flag: `--es-${option}`, code: "input" });
  const size = (option: Defaulted) => parseSize(options[option], `--es-${option}`, "input");
  conn.timeoutMs = duration("timeout");
  const endMs = duration("end-timeout");
  const cache = process.env.XDG_CACHE_HOME || join(homedir(), ".cache");
  // One spool per cluster, so documents held for one are never sent to another.
  const cluster = `${new URL(conn.nodes[0]!).host.replace(/[^\w.-]/g, "_")}-${createHash("sha256").update(conn.url).digest("hex").slice(0, 8)}`;
  const spool = openSpool(join(options["spool-dir"] ?? join(cache, "cpost", "es-spool"), cluster), size("spool-max"));
  const print = (line: string) => out.write(`${line}\n`);
  const said = new Set<string>();
  const legacy = flag(options.legacy);
  let engine: Engine | undefined;

  /**
   * Before the first document: cpost's templates must be there. Without them Elasticsearch's
   * built-in `metrics-*-*` template makes the data streams with guessed field types, and
   * OpenSearch (which has none) makes plain indices whose text fields then block the data
   * streams for good. So the sink puts them as `cpost es setup` does; where it may not, it
   * sends anyway on Elasticsearch and holds the documents in the spool on OpenSearch.
   */
  async function prepare(): Promise<"ready" | "hold" | { later: string }> {
    const quick = { ...conn, timeoutMs: Math.min(conn.timeoutMs, 5000) };
    if (!engine) {
      const answer = await esRequest(quick, "GET", "/");
      if (answer.unreachable !== undefined) return { later: answer.unreachable };
      engine = engineOf(answer.body);
    }
    const present = await templatesPresent(quick, legacy);
    if (present === true) return "ready";
    if (present !== false && present.unreachable !== undefined) return { later: present.unreachable };
    const label = engine?.label ?? "the cluster";
    try {
      if (present !== false) throw new Error(`cannot check for them (HTTP ${present.status} ${errorReason(present.body)})`);
      const report = await setupCluster(quick, { legacy, force: false }, engine);
      const lifecycle = report.lifecycle.kind === "none" ? "no lifecycle policy" : `${report.lifecycle.kind.toUpperCase()} policy ${LIFECYCLE_POLICY}`;
      print(`elasticsearch: ${label} had no cpost templates: put them as \`cpost es setup\` does (${lifecycle})`);
      return "ready";
    } catch (error) {
      const reason = (error as Error).message;
      if (engine?.kind === "opensearch" && !legacy) {
        print(`elasticsearch: ${label} has no cpost templates and cpost could not put them (${reason}); documents wait in the spool ${spool.dir}, since without them OpenSearch would make plain indices that block the data streams: run \`cpost es setup\`, and the next run sends them`);
        return "hold";
      }
      print(`elasticsearch: no cpost templates on ${label} and cpost could not put them (${reason}); documents go to ${legacy ? "plain indices" : "the built-in metrics-*-* data streams"} with guessed field types: run \`cpost es setup\``);
      return "ready";
    }
  }

  const delivery = defineDelivery({
    conn,
    spool,
    retry: { retries: parseCount(options.retries, "es-retries"), backoffMs: 200, backoffMaxMs: duration("backoff-max") },
    batchDocs: parseCount(options["batch-docs"], "es-batch-docs", 1),
    batchBytes: size("batch-bytes"),
    flushMs: duration("flush"),
    concurrency: parseCount(options.concurrency, "es-concurrency", 1),
    say: (key, line) => said.has(key) || (said.add(key), print(`elasticsearch: ${line}`)),
    prepare,
  });
  let encoder: DocumentEncoder | undefined;

  return {
    async start(run: RunInfo) {
      encoder = defineEncoder(run, { namespace, legacy: flag(options.legacy) });
      const waiting = spool.pending();
      if (waiting.docs > 0) print(`elasticsearch: ${waiting.docs} documents from earlier runs wait in ${spool.dir}; sending them in the background`);
      // A short look first: bad credentials should stop the run's use of this sink now, not after the run.
      const answer = await esRequest({ ...conn, timeoutMs: Math.min(conn.timeoutMs, 2000) }, "GET", "/");
      engine = engineOf(answer.body);
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
}
