/**
 * The HTTP door to Elasticsearch (8.x, 7.x, OpenSearch) for the es sink and
 * `cpost es setup`: where it is, how to authenticate, and `_bulk` with
 * per-item outcomes, retries with backoff and jitter. Plain `fetch`: the
 * official client does not run under Bun.
 */
import { readFileSync } from "node:fs";
import { CpostError } from "../../core/contracts/errors.ts";

/** Where Elasticsearch is and how to talk to it. Credentials live only in `headers`. */
export interface EsConnection {
  /** The nodes' base URLs without credentials or trailing slash, comma-separated: safe to print. */
  url: string;
  /**
   * Every node given (`--es-url a,b,c`). A request that gets no answer from
   * one (refused, reset, timed out) goes to the next, and later requests
   * stay there (`active`, shared by copies of the connection): a node lost
   * mid-run costs one retry, not the spool.
   */
  nodes: readonly string[];
  active: { index: number };
  headers: Record<string, string>;
  tls?: { ca: string };
  timeoutMs: number;
  /** Where the credentials came from (never their value), for error hints. */
  credentials: string;
}

/** What `_bulk` did with a list of items. */
export interface BulkOutcome {
  /** Created, or already there (409 on create: a resend of a stored document). */
  sent: number;
  /** Refused for good (mapping conflicts, bad documents): `reason -> count`. */
  rejected: Map<string, number>;
  /** Not stored yet (Elasticsearch down, or still 429/5xx after the retries): for the spool. */
  unsent: string[];
  /** Set when Elasticsearch could not be reached or kept failing as a whole. */
  unreachable?: string;
}

/** Retry policy of one `_bulk` call. */
export interface RetryPolicy {
  retries: number;
  backoffMs: number;
  backoffMaxMs: number;
  /** performance.now() after which no retry starts. */
  deadline?: number;
  signal?: AbortSignal;
}

const secret = (file: string | undefined, option: string): string | undefined => {
  if (!file) return undefined;
  try {
    return readFileSync(file, "utf8").trim();
  } catch (error) {
    throw new CpostError("input", `cannot read --${option} ${file}: ${(error as Error).message}`, { file, hint: "give a readable file holding only the secret" });
  }
};

/**
 * Reads URL, credentials and CA from the `--es-<option>` values (keyed by
 * option: `url`, `api-key-file`, …) and CPOST_ES_* environment. Throws
 * CpostError("input"); a secret given inline (`api-key`, `password`) is refused.
 */
export function esConnection(options: Record<string, string | undefined>, env: Record<string, string | undefined> = process.env): EsConnection {
  for (const inline of ["api-key", "password"]) {
    if (options[inline] !== undefined) {
      throw new CpostError("usage", `--es-${inline} takes no secret on the command line (any user can read it with ps)`, {
        hint: `use --es-${inline}-file FILE or CPOST_ES_${inline === "api-key" ? "API_KEY" : "PASSWORD"}`,
      });
    }
  }
  const given = (options.url ?? env.CPOST_ES_URL ?? "").split(",").map((u) => u.trim()).filter(Boolean);
  if (given.length === 0) throw new CpostError("usage", "the elasticsearch sink needs a URL", { hint: "give --es-url https://host:9200 (or several nodes: a,b,c) or set CPOST_ES_URL" });
  const urls = given.map((text) => {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      throw new CpostError("input", `--es-url ${JSON.stringify(text)} is not a URL`, { hint: "e.g. --es-url https://localhost:9200 (several nodes: comma-separated)" });
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new CpostError("input", `--es-url must be http:// or https://, not ${url.protocol} (${JSON.stringify(text)})`, { hint: "e.g. --es-url https://localhost:9200 (several nodes: comma-separated)" });
    }
    return url;
  });
  // Credentials in a URL are the first node's; the others are stripped of theirs alike.
  const parsed = urls[0]!;
  const headers: Record<string, string> = {};
  let credentials = "none";
  const apiKey = secret(options["api-key-file"], "es-api-key-file") ?? env.CPOST_ES_API_KEY;
  const user = options.user ?? env.CPOST_ES_USER ?? (parsed.username ? decodeURIComponent(parsed.username) : undefined);
  if (apiKey) {
    // An `id:key` pair is encoded here; the `encoded` form Elasticsearch hands out is used as is.
    headers.authorization = `ApiKey ${apiKey.includes(":") ? Buffer.from(apiKey).toString("base64") : apiKey}`;
    credentials = options["api-key-file"] ? `the API key in ${options["api-key-file"]}` : "the API key in CPOST_ES_API_KEY";
  } else if (user) {
    const password = secret(options["password-file"], "es-password-file") ?? env.CPOST_ES_PASSWORD ?? decodeURIComponent(parsed.password);
    headers.authorization = `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
    credentials = `user ${user} with the password from ${options["password-file"] ?? (env.CPOST_ES_PASSWORD ? "CPOST_ES_PASSWORD" : "the URL")}`;
  }
  const nodes = [...new Set(urls.map((url) => {
    url.username = url.password = "";
    return url.href.replace(/\/+$/, "");
  }))];
  const caFile = options.ca ?? env.CPOST_ES_CA;
  const ca = caFile ? secret(caFile, "es-ca") : undefined;
  return { url: nodes.join(","), nodes, active: { index: 0 }, headers, tls: ca ? { ca } : undefined, timeoutMs: 30_000, credentials };
}

/** One answer of Elasticsearch, or why none came. */
export type EsAnswer = { status: number; body: unknown; unreachable?: undefined; enough?: true } | { status: 0; body?: undefined; unreachable: string; enough?: undefined };

/**
 * One request; never throws for network trouble (that is `status: 0`). With
 * several nodes, one that gives no answer hands the request to the next, each
 * tried once, and the connection stays with the one that answered. (cpost's
 * documents carry their own `_id`s, so a request that reached a node before
 * it failed is stored once: the resend is a 409.)
 */
export async function esRequest(
  conn: EsConnection, method: string, path: string, body?: string, contentType = "application/json", signal?: AbortSignal,
  /** Reads a 2xx answer's text first: true when it is enough, and the JSON need not be parsed. */
  enough?: (text: string) => boolean,
): Promise<EsAnswer> {
  const start = conn.active.index;
  let answer = await requestNode(conn, conn.nodes[start]!, method, path, body, contentType, signal, enough);
  for (let k = 1; answer.unreachable !== undefined && k < conn.nodes.length && !signal?.aborted; k++) {
    const index = (start + k) % conn.nodes.length;
    answer = await requestNode(conn, conn.nodes[index]!, method, path, body, contentType, signal, enough);
    if (answer.unreachable === undefined) conn.active.index = index;
  }
  return answer;
}

async function requestNode(
  conn: EsConnection, node: string, method: string, path: string, body: string | undefined, contentType: string, signal: AbortSignal | undefined, enough: ((text: string) => boolean) | undefined,
): Promise<EsAnswer> {
  const timeout = AbortSignal.timeout(conn.timeoutMs);
  try {
    const res = await fetch(`${node}${path}`, {
      method,
      body,
      headers: { ...conn.headers, ...(body === undefined ? {} : { "content-type": contentType }), accept: "application/json" },
      tls: conn.tls,
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    });
    const text = await res.text();
    if (res.ok && enough?.(text)) return { status: res.status, body: undefined, enough: true };
    try {
      return { status: res.status, body: text ? JSON.parse(text) : undefined };
    } catch {
      return res.ok ? { status: 0, unreachable: `unreadable answer (HTTP ${res.status})` } : { status: res.status, body: text };
    }
  } catch (error) {
    const e = error as Error & { code?: string };
    const why = e.name === "TimeoutError" ? `no answer within ${conn.timeoutMs} ms` : (e.code ?? e.message);
    return { status: 0, unreachable: conn.nodes.length > 1 ? `${node}: ${why}` : why };
  }
}

/** `type: reason` of an Elasticsearch error body (or the raw text). */
export function errorReason(body: unknown): string {
  const error = (body as { error?: unknown } | undefined)?.error;
  if (error && typeof error === "object") {
    const e = error as { type?: string; reason?: string; caused_by?: { reason?: string } };
    return `${e.type ?? "error"}: ${e.reason ?? ""}${e.caused_by?.reason ? ` (${e.caused_by.reason})` : ""}`;
  }
  return typeof error === "string" ? error : typeof body === "string" ? body.slice(0, 300) : JSON.stringify(body)?.slice(0, 300) ?? "";
}

/** Turns 401/403 into the error the user needs; other answers pass. */
export function checkAuth(conn: EsConnection, answer: EsAnswer, doing: string): void {
  if (answer.status !== 401 && answer.status !== 403) return;
  const refused = answer.status === 401 ? "refused the credentials" : "denied the credentials the right";
  throw new CpostError("input", `elasticsearch at ${conn.url} ${refused} to ${doing} (HTTP ${answer.status} ${errorReason(answer.body)})`, {
    hint: answer.status === 401
      ? `cpost used ${conn.credentials}; set CPOST_ES_API_KEY or --es-api-key-file, or CPOST_ES_USER with CPOST_ES_PASSWORD or --es-password-file`
      : `${conn.credentials} needs the create_doc and auto_configure index privileges on metrics-cpost.* (manage_index_templates for es setup)`,
  });
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Sends `items` (each `action\nsource\n`) with `_bulk`; retries 429/5xx items and whole failures. Throws only for bad credentials. */
export async function bulk(conn: EsConnection, items: string[], policy: RetryPolicy): Promise<BulkOutcome> {
  const outcome: BulkOutcome = { sent: 0, rejected: new Map(), unsent: [] };
  let pending = items;
  for (let attempt = 0; pending.length > 0; attempt++) {
    if (attempt > 0) {
      // Exponential backoff with equal jitter, so many cpost hosts do not retry in step.
      const ceiling = Math.min(policy.backoffMaxMs, policy.backoffMs * 2 ** (attempt - 1));
      const delay = ceiling / 2 + Math.random() * (ceiling / 2);
      if (attempt > policy.retries || policy.signal?.aborted || (policy.deadline !== undefined && performance.now() + delay > policy.deadline)) break;
      await pause(delay);
    }
    // No item failed (the usual answer): skip parsing thousands of items. `errors` leads the answer in 7.x, 8.x and OpenSearch.
    const allCreated = (text: string) => /^\{[^[]*"errors"\s*:\s*false/.test(text.slice(0, 200));
    const answer = await esRequest(conn, "POST", "/_bulk", pending.join(""), "application/x-ndjson", policy.signal, allCreated);
    checkAuth(conn, answer, "write documents");
    if (answer.enough) {
      outcome.sent += pending.length;
      outcome.unreachable = undefined;
      pending = [];
      break;
    }
    if (answer.unreachable !== undefined || answer.status === 429 || answer.status >= 500) {
      outcome.unreachable = answer.unreachable ?? `HTTP ${answer.status} ${errorReason(answer.body)}`;
      continue;
    }
    outcome.unreachable = undefined;
    if (answer.status === 413 && pending.length > 1) {
      // Too large for Elasticsearch (http.max_content_length) or a proxy in front: halves, until they fit.
      const half = Math.ceil(pending.length / 2);
      for (const part of [pending.slice(0, half), pending.slice(half)]) {
        const sub = await bulk(conn, part, policy);
        outcome.sent += sub.sent;
        for (const [reason, n] of sub.rejected) outcome.rejected.set(reason, (outcome.rejected.get(reason) ?? 0) + n);
        outcome.unsent.push(...sub.unsent);
        outcome.unreachable ??= sub.unreachable;
      }
      return outcome;
    }
    const items = (answer.body as { items?: Array<Record<string, { status: number; error?: unknown }>> } | undefined)?.items;
    if (answer.status >= 400 || !items || items.length !== pending.length) {
      const reason = answer.status >= 400 ? `HTTP ${answer.status} ${errorReason(answer.body)}` : "bulk answer does not list every item";
      outcome.rejected.set(reason, (outcome.rejected.get(reason) ?? 0) + pending.length);
      pending = [];
      break;
    }
    const retry: string[] = [];
    items.forEach((item, i) => {
      const result = item.create ?? item.index ?? Object.values(item)[0]!;
      if (result.status < 300 || result.status === 409) outcome.sent++;
      else if (result.status === 429 || result.status >= 500) retry.push(pending[i]!);
      else {
        const reason = `${result.status} ${errorReason({ error: result.error })}`
          .replace(/\[\d+:\d+\] /g, "") // per-document parts, so one cause is reported once
          .replace(/ in document with id '[^']*'/, "")
          .replace(/\. Preview of field's value: .*$/, "");
        outcome.rejected.set(reason, (outcome.rejected.get(reason) ?? 0) + 1);
      }
    });
    pending = retry;
  }
  outcome.unsent = pending;
  return outcome;
}
