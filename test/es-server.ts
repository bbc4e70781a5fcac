/**
 * An Elasticsearch-protocol test server (Elasticsearch cannot run here).
 * It speaks the public REST API cpost uses, as Elasticsearch 8.x / 7.x or
 * OpenSearch answer it: `GET /`, `POST /_bulk` (NDJSON framing, content
 * type, auth, op types, data streams, `_id` conflicts, dynamic and template
 * mappings with their conflicts), component and composable index templates,
 * and the lifecycle APIs: ILM policies (`/_ilm/policy`) on Elasticsearch,
 * ISM policies (`/_plugins/_ism/policies`, with the sequence numbers an
 * update must name) on OpenSearch when told its plugin is installed, and
 * OpenSearch's refusal of `index.lifecycle.*` settings.
 * It stores what it accepted so a test can count every document, and can be
 * told to answer 429s, per-item errors, 500s, slow answers or to drop the
 * connection. Bun.serve on 127.0.0.1, random port.
 *
 * Run alone for benchmarks: `bun test/es-server.ts [--ids-only]` prints `{"url":…}`
 * and serves `GET /_test/stats`.
 */
import { existsSync, readdirSync } from "node:fs";

/** How the server authenticates and what it claims to be. */
export interface EsServerOptions {
  /** When set, every request must carry `ApiKey <apiKey>` or Basic user:password. */
  auth?: { apiKey?: string; user?: string; password?: string };
  tls?: { cert: string; key: string };
  distribution?: "elasticsearch" | "opensearch";
  version?: string;
  /** false: keep only `_id`s, not sources (benchmarks with millions of documents). */
  keepSources?: boolean;
  /** Larger request bodies get 413, as with Elasticsearch's http.max_content_length (or a proxy's limit). */
  maxContentLength?: number;
  /** The lifecycle tool is there: ILM on Elasticsearch (default true), the ISM plugin on OpenSearch (default false, as the minimal engine). */
  lifecycle?: boolean;
  /** The credentials may write documents but not templates or policies: those PUTs get the security plugin's 403. */
  denyTemplates?: boolean;
}

/** Misbehaviour to play on the next `_bulk` requests (`times` requests, default 1). */
export type Fault =
  | { kind: "status"; status: number; times?: number } // whole request fails, nothing stored
  | { kind: "items"; status: number; every?: number; times?: number; type?: string } // every k-th item fails, not stored
  | { kind: "slow"; ms: number; times?: number } // stored, answered `ms` later
  | { kind: "drop"; store?: boolean; times?: number }; // stored (unless store: false), then the connection is dropped unanswered

type Json = Record<string, unknown>;

interface IndexState {
  name: string;
  backing: string;
  dataStream: boolean;
  /** dotted path -> field type ("object" for inner objects) */
  mapping: Map<string, string>;
  dynamicTemplates: Array<{ pathMatch?: RegExp; mappingType?: string; type: string }>;
  docs: Map<string, Json | true>;
  seq: number;
  /** Flat index settings from the templates (`index.lifecycle.name` …). */
  settings: Record<string, unknown>;
}

/** Counters a test reads to prove exactly-once delivery. */
export interface EsServerStats {
  bulkRequests: number;
  itemsReceived: number;
  created: number;
  conflicts: number;
  rejected: number;
  faultsPlayed: number;
}

/** The running server and its controls. */
export interface EsTestServer {
  readonly url: string;
  readonly port: number;
  readonly stats: EsServerStats;
  /** Every request: method, path, status; for asserting headers and order. */
  readonly requests: Array<{ method: string; path: string; status: number; contentType: string | null; authorization: boolean }>;
  /** Protocol violations by the client (bad framing, content type, op type on a data stream…). */
  readonly protocolErrors: string[];
  readonly componentTemplates: Map<string, Json>;
  readonly indexTemplates: Map<string, Json>;
  /** ILM policies (Elasticsearch) or ISM policies (OpenSearch) by name, as stored. */
  readonly policies: Map<string, Json>;
  /** The flat settings an index (or data stream's write index) was made with. */
  settings(index: string): Record<string, unknown> | undefined;
  /** Stored documents of an index or data stream (sources; `true` in ids-only mode), by `_id`. */
  docs(index: string): Map<string, Json | true>;
  /** Documents stored, in one index or all. */
  count(index?: string): number;
  /** Index and data stream names that hold documents. */
  indices(): string[];
  /** The field type an index maps `path` to. */
  fieldType(index: string, path: string): string | undefined;
  inject(...faults: Fault[]): void;
  clearFaults(): void;
  /** Stops listening: clients get "connection refused" (Elasticsearch down). */
  down(): void;
  /** Listens again on the same port. */
  up(): void;
  close(): void;
}

const glob = (pattern: string) => new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*")}$`);
const esError = (status: number, type: string, reason: string, extra: Json = {}) => ({ error: { root_cause: [{ type, reason }], type, reason, ...extra }, status });
const INTEGER_TYPES = new Set(["long", "integer", "short", "byte", "unsigned_long"]);
const FLOAT_TYPES = new Set(["float", "double", "half_float", "scaled_float"]);
const KNOWN_TYPES = new Set([...INTEGER_TYPES, ...FLOAT_TYPES, "keyword", "text", "date", "date_nanos", "boolean", "object", "constant_keyword", "ip", "flattened", "wildcard"]);

/** Starts the server; it serves until close(). */
export function startEsServer(options: EsServerOptions = {}): EsTestServer {
  const distribution = options.distribution ?? "elasticsearch";
  const version = options.version ?? (distribution === "opensearch" ? "2.11.0" : "8.15.0");
  const major = Number(version.split(".")[0]);
  const parseError = distribution === "elasticsearch" && major >= 8 ? "document_parsing_exception" : "mapper_parsing_exception";
  const keepSources = options.keepSources ?? true;
  const indices = new Map<string, IndexState>();
  const componentTemplates = new Map<string, Json>();
  // Elasticsearch 8 ships this one (priority 100): `metrics-*-*` become data streams even without cpost's templates.
  // Elasticsearch 7.9+ ships this one (priority 100); OpenSearch has no built-in templates.
  const builtIn: Json = {
    index_patterns: ["metrics-*-*"], priority: 100, data_stream: {}, composed_of: [],
    template: { mappings: { dynamic_templates: [{ strings_as_keyword: { match_mapping_type: "string", mapping: { type: "keyword", ignore_above: 1024 } } }], properties: { "@timestamp": { type: "date" } } } },
  };
  const indexTemplates = new Map<string, Json>(distribution === "elasticsearch" ? [["metrics", builtIn]] : []);
  const lifecycle = options.lifecycle ?? distribution === "elasticsearch";
  const policies = new Map<string, Json>();
  let policySeq = 0;
  const faults: Array<Fault & { left: number }> = [];
  const stats: EsServerStats = { bulkRequests: 0, itemsReceived: 0, created: 0, conflicts: 0, rejected: 0, faultsPlayed: 0 };
  const requests: EsTestServer["requests"] = [];
  const protocolErrors: string[] = [];

  function authorized(req: Request): boolean {
    if (!options.auth) return true;
    const header = req.headers.get("authorization") ?? "";
    const { apiKey, user, password } = options.auth;
    if (apiKey && header === `ApiKey ${apiKey}`) return true;
    return user !== undefined && header === `Basic ${Buffer.from(`${user}:${password ?? ""}`).toString("base64")}`;
  }

  function flatten(properties: Json, prefix: string, into: Map<string, string>): void {
    for (const [name, raw] of Object.entries(properties)) {
      const field = raw as { type?: string; properties?: Json };
      const path = `${prefix}${name}`;
      if (field.properties) {
        into.set(path, "object");
        flatten(field.properties, `${path}.`, into);
      } else into.set(path, field.type ?? "object");
    }
  }

  function templateFor(index: string): Json | undefined {
    let best: Json | undefined;
    for (const t of indexTemplates.values()) {
      const patterns = ([] as string[]).concat(t.index_patterns as string[]);
      if (patterns.some((p) => glob(p).test(index)) && (best === undefined || (t.priority as number ?? 0) > (best.priority as number ?? 0))) best = t;
    }
    return best;
  }

  function openIndex(name: string): IndexState {
    const existing = indices.get(name);
    if (existing) return existing;
    const template = templateFor(name);
    const state: IndexState = { name, backing: name, dataStream: false, mapping: new Map(), dynamicTemplates: [], docs: new Map(), seq: 0, settings: {} };
    if (template) {
      const parts = [...((template.composed_of as string[]) ?? []).map((c) => (componentTemplates.get(c)?.template ?? {}) as Json), (template.template ?? {}) as Json];
      for (const part of parts) {
        Object.assign(state.settings, flatSettings((part.settings ?? {}) as Json));
        const mappings = (part.mappings ?? {}) as { properties?: Json; dynamic_templates?: Array<Record<string, Json>> };
        flatten(mappings.properties ?? {}, "", state.mapping);
        for (const entry of mappings.dynamic_templates ?? []) {
          const rule = Object.values(entry)[0]!;
          state.dynamicTemplates.push({
            pathMatch: rule.path_match ? glob(rule.path_match as string) : undefined,
            mappingType: rule.match_mapping_type as string | undefined,
            type: ((rule.mapping as Json).type as string) ?? "keyword",
          });
        }
      }
      if (template.data_stream) {
        state.dataStream = true;
        state.backing = `.ds-${name}-${new Date().toISOString().slice(0, 10).replace(/-/g, ".")}-000001`;
        state.mapping.set("@timestamp", state.mapping.get("@timestamp") ?? "date");
      }
    }
    indices.set(name, state);
    return state;
  }

  /** Checks a source against the mapping like Elasticsearch does; returns the error or the new fields to map. */
  function check(state: IndexState, source: Json, id: string): { error?: { type: string; reason: string }; added: Map<string, string> } {
    const added = new Map<string, string>();
    const typeOf = (path: string) => state.mapping.get(path) ?? (added.size > 0 ? added.get(path) : undefined);
    const fail = (reason: string) => ({ error: { type: parseError, reason }, added });
    const preview = (v: unknown) => (typeof v === "object" ? `{${Object.entries(v as Json).map(([k, x]) => `${k}=${x}`).join(", ")}}` : String(v));
    const parseFailure = (path: string, type: string, value: unknown) =>
      fail(`failed to parse field [${path}] of type [${type}] in document with id '${id}'. Preview of field's value: '${preview(value)}'`).error;
    const item = (path: string, key: string, value: unknown): { type: string; reason: string } | undefined => {
      if (value === null) return undefined;
      const type = typeOf(path);
      if (typeof value === "object") {
        if (type !== undefined && type !== "object" && type !== "flattened") return parseFailure(path, type, value);
        if (type === undefined) added.set(path, "object");
        return type === "flattened" ? undefined : walk(value as Json, `${path}.`);
      }
      if (type === "object") return fail(`object mapping for [${path}] tried to parse field [${key}] as object, but found a concrete value`).error;
      if (type === undefined) {
        const mappingType = typeof value === "number" ? (Number.isInteger(value) ? "long" : "double") : typeof value === "boolean" ? "boolean" : "string";
        const rule = state.dynamicTemplates.find((r) => (!r.pathMatch || r.pathMatch.test(path)) && (!r.mappingType || r.mappingType === "*" || r.mappingType === mappingType));
        const dateLike = typeof value === "string" && /^\d{4}-\d\d-\d\dT/.test(value) && !Number.isNaN(Date.parse(value));
        // Without a rule, a string is `text` (with a `keyword` sub-field), as both engines map it.
        added.set(path, rule?.type ?? (mappingType === "double" ? "float" : mappingType === "string" ? (dateLike ? "date" : "text") : mappingType));
        return undefined;
      }
      const numeric = typeof value === "number" || (typeof value === "string" && value.trim() !== "" && !Number.isNaN(Number(value)));
      const ok = INTEGER_TYPES.has(type) || FLOAT_TYPES.has(type) ? numeric
        : type === "date" || type === "date_nanos" ? typeof value === "number" || !Number.isNaN(Date.parse(String(value)))
        : type === "boolean" ? value === true || value === false || value === "true" || value === "false"
        : true;
      return ok ? undefined : parseFailure(path, type, value);
    };
    const walk = (object: Json, prefix: string): { type: string; reason: string } | undefined => {
      for (const key in object) {
        const value = object[key];
        const path = prefix + key;
        if (key.includes(".")) {
          // Dotted keys are object paths, as in Elasticsearch: every parent must be (or become) an object.
          const parts = path.split(".");
          for (let i = 1; i < parts.length; i++) {
            const parent = parts.slice(0, i).join(".");
            const t = typeOf(parent);
            if (t !== undefined && t !== "object") return parseFailure(parent, t, { [parts.slice(i).join(".")]: value });
            if (t === undefined) added.set(parent, "object");
          }
        }
        if (Array.isArray(value)) {
          for (const v of value) {
            const error = item(path, key, v);
            if (error) return error;
          }
        } else {
          const error = item(path, key, value);
          if (error) return error;
        }
      }
      return undefined;
    };
    const error = walk(source, "");
    if (error) return { error, added };
    if (state.dataStream && (source["@timestamp"] === undefined || typeof source["@timestamp"] === "object")) {
      return fail("data stream timestamp field [@timestamp] is missing");
    }
    return { added };
  }

  function bulk(text: string, defaultIndex: string | undefined, fault: Fault | undefined): { status: number; body: Json } {
    if (text.length === 0) return { status: 400, body: esError(400, "parse_exception", "request body is required") };
    if (!text.endsWith("\n")) {
      protocolErrors.push("bulk body not terminated by a newline");
      return { status: 400, body: esError(400, "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]") };
    }
    const lines = text.split("\n");
    lines.pop();
    const items: Json[] = [];
    let errors = false;
    let position = 0;
    for (let i = 0; i < lines.length; i++) {
      let action: Json;
      try {
        action = JSON.parse(lines[i]!) as Json;
      } catch {
        protocolErrors.push(`malformed action line ${i + 1}`);
        return { status: 400, body: esError(400, "x_content_parse_exception", `[1:1] Malformed action/metadata line [${i + 1}], expected START_OBJECT`) };
      }
      const op = Object.keys(action)[0];
      if (Object.keys(action).length !== 1 || !["create", "index", "update", "delete"].includes(op ?? "")) {
        protocolErrors.push(`bad action on line ${i + 1}`);
        return { status: 400, body: esError(400, "illegal_argument_exception", `Malformed action/metadata line [${i + 1}], expected field [create], [delete], [index] or [update] but found [${op}]`) };
      }
      const meta = action[op!] as { _index?: string; _id?: string };
      const hasSource = op !== "delete";
      const sourceLine = hasSource ? lines[++i] : undefined;
      if (hasSource && sourceLine === undefined) {
        protocolErrors.push(`action line ${i} has no source line`);
        return { status: 400, body: esError(400, "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]") };
      }
      stats.itemsReceived++;
      position++;
      const indexName = meta._index ?? defaultIndex;
      const reply = (status: number, fields: Json) => {
        if (status >= 300) errors = true;
        items.push({ [op!]: { _index: indexName, status, ...fields } });
      };
      if (fault?.kind === "items" && position % (fault.every ?? 1) === 0) {
        const type = fault.type ?? (fault.status === 429 ? "es_rejected_execution_exception" : "unavailable_shards_exception");
        reply(fault.status, { _id: meta._id, error: { type, reason: `injected ${fault.status} for item ${position}` } });
        continue;
      }
      if (!indexName || indexName !== indexName.toLowerCase() || /[\\/*?"<>| ,#:]/.test(indexName)) {
        reply(400, { error: { type: "invalid_index_name_exception", reason: `Invalid index name [${indexName}]` } });
        stats.rejected++;
        continue;
      }
      const state = openIndex(indexName);
      if (state.dataStream && op !== "create") {
        protocolErrors.push(`${op} on data stream ${indexName}`);
        reply(400, { error: { type: "illegal_argument_exception", reason: "only write ops with an op_type of create are allowed in data streams" } });
        stats.rejected++;
        continue;
      }
      if (op !== "create" && op !== "index") {
        reply(400, { error: { type: "illegal_argument_exception", reason: `${op} is not supported by this test server` } });
        continue;
      }
      const id = meta._id ?? `auto-${++state.seq}`;
      if (op === "create" && state.docs.has(id)) {
        stats.conflicts++;
        reply(409, { _id: id, error: { type: "version_conflict_engine_exception", reason: `[${id}]: version conflict, document already exists (current version [1])`, index: state.backing } });
        continue;
      }
      let source: Json;
      try {
        source = JSON.parse(sourceLine!) as Json;
        if (typeof source !== "object" || source === null || Array.isArray(source)) throw new Error("not an object");
      } catch {
        stats.rejected++;
        reply(400, { _id: id, error: { type: parseError, reason: "failed to parse", caused_by: { type: "x_content_parse_exception", reason: "not a JSON object" } } });
        continue;
      }
      const checked = check(state, source, id);
      if (checked.error) {
        stats.rejected++;
        reply(400, { _id: id, error: { ...checked.error, index: state.backing } });
        continue;
      }
      for (const [path, type] of checked.added) state.mapping.set(path, type);
      state.docs.set(id, keepSources ? source : true);
      stats.created++;
      reply(201, { _index: state.backing, _id: id, _version: 1, result: "created", _shards: { total: 1, successful: 1, failed: 0 }, _seq_no: state.docs.size - 1, _primary_term: 1 });
    }
    // Key order as each answers: "errors" first in Elasticsearch 8, "took" first in 7.x and OpenSearch.
    return { status: 200, body: major >= 8 && distribution === "elasticsearch" ? { errors, took: 1, items } : { took: 1, errors, items } };
  }

  function putIndexTemplate(name: string, body: Json): { status: number; body: Json } {
    const patterns = ([] as unknown[]).concat(body.index_patterns ?? []);
    if (patterns.length === 0 || patterns.some((p) => typeof p !== "string")) {
      return { status: 400, body: esError(400, "action_request_validation_exception", "Validation Failed: 1: index patterns are missing;") };
    }
    const missing = ((body.composed_of as string[]) ?? []).filter((c) => !componentTemplates.has(c));
    if (missing.length) return { status: 400, body: esError(400, "invalid_index_template_exception", `index_template [${name}] invalid, cause [index template [${name}] specifies component templates [${missing.join(", ")}] that do not exist]`) };
    const priority = (body.priority as number | undefined) ?? 0;
    for (const [other, t] of indexTemplates) {
      if (other === name || ((t.priority as number | undefined) ?? 0) !== priority) continue;
      const theirs = ([] as string[]).concat(t.index_patterns as string[]);
      const overlap = (patterns as string[]).some((p) => theirs.some((q) => glob(p).test(q.replace(/\*/g, "x")) || glob(q).test(p.replace(/\*/g, "x"))));
      if (overlap) {
        return { status: 400, body: esError(400, "illegal_argument_exception", `index template [${name}] has index patterns [${patterns.join(", ")}] matching patterns from existing templates [${other}] with patterns (${other} => [${theirs.join(", ")}]) that have the same priority [${priority}], multiple index templates may not match during index creation, please use a different priority`) };
      }
    }
    indexTemplates.set(name, body);
    return { status: 200, body: { acknowledged: true } };
  }

  /** ILM: PUT creates or replaces (no sequence numbers), GET answers `{name: {version, modified_date, policy, in_use_by}}`. */
  function putIlmPolicy(name: string, body: Json): { status: number; body: Json } {
    const policy = body.policy as { phases?: Json } | undefined;
    if (!policy || typeof policy.phases !== "object" || policy.phases === null) {
      return { status: 400, body: esError(400, "x_content_parse_exception", "[1:2] [put_lifecycle_request] failed to parse field [policy]", { caused_by: { type: "illegal_argument_exception", reason: "required [phases]" } }) };
    }
    const phase = Object.keys(policy.phases).find((p) => !["hot", "warm", "cold", "frozen", "delete"].includes(p));
    if (phase) return { status: 400, body: esError(400, "illegal_argument_exception", `Timeseries lifecycle does not support phase [${phase}]`) };
    const before = policies.get(name);
    policies.set(name, { version: ((before?.version as number | undefined) ?? 0) + 1, modified_date: new Date().toISOString(), policy });
    return { status: 200, body: { acknowledged: true } };
  }

  function getIlmPolicy(name: string): { status: number; body: Json } {
    const stored = policies.get(name);
    if (!stored) return { status: 404, body: esError(404, "resource_not_found_exception", `Lifecycle policy not found: ${name}`) };
    return { status: 200, body: { [name]: { ...stored, in_use_by: { indices: [], data_streams: [], composable_templates: [] } } } };
  }

  /** ISM: a PUT without `if_seq_no`/`if_primary_term` only creates (409 when the policy is there), as the plugin indexes it with op_type create. */
  function putIsmPolicy(id: string, body: Json, query: URLSearchParams): { status: number; body: Json } {
    const policy = body.policy as { default_state?: string; states?: Array<{ name?: string }>; ism_template?: unknown } | undefined;
    if (!policy || !Array.isArray(policy.states) || typeof policy.default_state !== "string") {
      return { status: 400, body: esError(400, "illegal_argument_exception", "Invalid policy: default_state and states are required") };
    }
    if (!policy.states.some((st) => st.name === policy.default_state)) {
      return { status: 400, body: esError(400, "illegal_argument_exception", `Policy default state [${policy.default_state}] does not exist`) };
    }
    const before = policies.get(id) as { _seq_no: number; _primary_term: number; _version: number } | undefined;
    const seqNo = query.get("if_seq_no");
    const term = query.get("if_primary_term");
    if (seqNo === null || term === null) {
      if (before) return { status: 409, body: esError(409, "version_conflict_engine_exception", `[${id}]: version conflict, document already exists (current version [${before._version}])`, { index: ".opendistro-ism-config", shard: "0" }) };
    } else if (!before || Number(seqNo) !== before._seq_no || Number(term) !== before._primary_term) {
      return { status: 409, body: esError(409, "version_conflict_engine_exception", `[${id}]: version conflict, required seqNo [${seqNo}], primary term [${term}]. ${before ? `current document has seqNo [${before._seq_no}] and primary term [${before._primary_term}]` : "but no document was found"}`) };
    }
    const stored = { _id: id, _version: (before?._version ?? 0) + 1, _seq_no: policySeq++, _primary_term: 1, policy: { policy_id: id, last_updated_time: Date.now(), schema_version: 21, error_notification: null, ...policy } };
    policies.set(id, stored);
    return { status: before ? 200 : 201, body: { _id: id, _version: stored._version, _primary_term: 1, _seq_no: stored._seq_no, policy: { policy: stored.policy } } };
  }

  function getIsmPolicy(id: string): { status: number; body: Json } {
    const stored = policies.get(id);
    if (!stored) return { status: 404, body: esError(404, "status_exception", "Policy not found") };
    return { status: 200, body: stored };
  }

  function putComponentTemplate(name: string, body: Json): { status: number; body: Json } {
    const template = body.template as { mappings?: { properties?: Json } } | undefined;
    if (!template || typeof template !== "object") return { status: 400, body: esError(400, "action_request_validation_exception", "Validation Failed: 1: template is missing;") };
    const fields = new Map<string, string>();
    flatten(template.mappings?.properties ?? {}, "", fields);
    for (const [path, type] of fields) {
      if (!KNOWN_TYPES.has(type)) return { status: 400, body: esError(400, "mapper_parsing_exception", `No handler for type [${type}] declared on field [${path}]`) };
    }
    const unknown = Object.keys(flatSettings(((template as Json).settings ?? {}) as Json)).find((k) => k.startsWith("index.lifecycle.") && !(distribution === "elasticsearch" && lifecycle));
    if (unknown) {
      return { status: 400, body: esError(400, "illegal_argument_exception", `unknown setting [${unknown}] please check that any required plugins are installed, or check the breaking changes documentation for removed settings`) };
    }
    componentTemplates.set(name, body);
    return { status: 200, body: { acknowledged: true } };
  }

  async function handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const path = url.pathname;
    const contentType = req.headers.get("content-type");
    const json = (status: number, body: unknown) => {
      requests.push({ method: req.method, path, status, contentType, authorization: req.headers.has("authorization") });
      const headers: Record<string, string> = { "content-type": "application/json" };
      if (distribution === "elasticsearch") headers["x-elastic-product"] = "Elasticsearch";
      return new Response(JSON.stringify(body), { status, headers });
    };
    if (path === "/_test/stats") return json(200, { ...stats, count: [...indices.values()].reduce((n, s) => n + s.docs.size, 0) });
    if (!authorized(req)) {
      return json(401, esError(401, "security_exception", "unable to authenticate with provided credentials and anonymous access is not allowed for this request", { header: { "WWW-Authenticate": ["Basic realm=\"security\"", "ApiKey"] } }));
    }
    const segments = path.split("/").filter(Boolean).map(decodeURIComponent);
    if (segments.length === 0 && (req.method === "GET" || req.method === "HEAD")) {
      return json(200, {
        name: "cpost-test", cluster_name: "cpost-test", cluster_uuid: "cpost-test",
        version: { number: version, ...(distribution === "opensearch" ? { distribution: "opensearch" } : { build_flavor: "default" }) },
        tagline: distribution === "opensearch" ? "The OpenSearch Project: https://opensearch.org/" : "You Know, for Search",
      });
    }
    if (segments.at(-1) === "_bulk" && segments.length <= 2 && (req.method === "POST" || req.method === "PUT")) {
      stats.bulkRequests++;
      const mediaType = (contentType ?? "").split(";")[0]!.trim().toLowerCase();
      const text = await req.text();
      if (options.maxContentLength !== undefined && Buffer.byteLength(text) > options.maxContentLength) {
        return json(413, esError(413, "content_too_long_exception", `request body is too large: ${Buffer.byteLength(text)} > ${options.maxContentLength} bytes`));
      }
      if (mediaType !== "application/x-ndjson" && mediaType !== "application/vnd.elasticsearch+x-ndjson") {
        protocolErrors.push(`bulk with content-type ${contentType}`);
        return json(406, { error: `Content-Type header [${contentType}] is not supported`, status: 406 });
      }
      const fault = faults[0];
      if (fault && --fault.left <= 0) faults.shift();
      if (fault) stats.faultsPlayed++;
      if (fault?.kind === "status") {
        const type = fault.status === 429 ? "es_rejected_execution_exception" : fault.status === 503 ? "unavailable_shards_exception" : "internal_server_error";
        return json(fault.status, esError(fault.status, type, `injected ${fault.status}`));
      }
      const drop = () => {
        requests.push({ method: req.method, path, status: 0, contentType, authorization: req.headers.has("authorization") });
        return new Response(new ReadableStream({ pull: (c) => c.error() })); // an erroring body resets the connection
      };
      if (fault?.kind === "drop" && fault.store === false) return drop();
      const result = bulk(text, segments.length === 2 ? segments[0] : undefined, fault);
      if (fault?.kind === "drop") return drop();
      if (fault?.kind === "slow") await Bun.sleep(fault.ms);
      return json(result.status, result.body);
    }
    if (options.denyTemplates && req.method === "PUT" && ["_component_template", "_index_template", "_ilm", "_plugins"].includes(segments[0] ?? "")) {
      // The wording of each engine's security layer (x-pack security; the OpenSearch security plugin).
      const action = segments[0] === "_component_template" ? "cluster:admin/component_template/put" : segments[0] === "_index_template" ? "indices:admin/index_template/put" : segments[0] === "_ilm" ? "cluster:admin/ilm/put" : "cluster:admin/opendistro/ism/policy/write";
      const reason = distribution === "opensearch"
        ? `no permissions for [${action}] and User [name=cpost, backend_roles=[], requestedTenant=null]`
        : `action [${action}] is unauthorized for user [cpost] with effective roles [cpost_writer], this action is granted by the cluster privileges [manage_index_templates,manage,all]`;
      return json(403, esError(403, "security_exception", reason));
    }
    const body = req.method === "PUT" ? ((await req.json().catch(() => undefined)) as Json | undefined) : undefined;
    if (req.method === "PUT" && body === undefined) return json(400, esError(400, "parse_exception", "request body is required"));
    if (segments[0] === "_component_template" && segments[1]) {
      if (req.method === "PUT") return respond(putComponentTemplate(segments[1], body!));
      const t = componentTemplates.get(segments[1]);
      return t ? json(200, { component_templates: [{ name: segments[1], component_template: t }] })
        : json(404, esError(404, "resource_not_found_exception", `component template matching [${segments[1]}] not found`));
    }
    if (segments[0] === "_index_template" && segments[1]) {
      if (req.method === "PUT") return respond(putIndexTemplate(segments[1], body!));
      const t = indexTemplates.get(segments[1]);
      return t ? json(200, { index_templates: [{ name: segments[1], index_template: t }] })
        : json(404, esError(404, "resource_not_found_exception", `index template matching [${segments[1]}] not found`));
    }
    if (lifecycle && distribution === "elasticsearch" && segments[0] === "_ilm" && segments[1] === "policy" && segments[2] && (req.method === "GET" || req.method === "PUT")) {
      return respond(req.method === "PUT" ? putIlmPolicy(segments[2], body!) : getIlmPolicy(segments[2]));
    }
    if (lifecycle && distribution === "opensearch" && segments[0] === "_plugins" && segments[1] === "_ism" && segments[2] === "policies" && segments[3] && (req.method === "GET" || req.method === "PUT")) {
      return respond(req.method === "PUT" ? putIsmPolicy(segments[3], body!, url.searchParams) : getIsmPolicy(segments[3]));
    }
    return json(400, { error: `no handler found for uri [${path}] and method [${req.method}]` });

    function respond(r: { status: number; body: Json }): Response {
      return json(r.status, r.body);
    }
  }

  const serve = (port: number) => Bun.serve({ hostname: "127.0.0.1", port, fetch: handle, maxRequestBodySize: 512 * 2 ** 20, tls: options.tls });
  let server: ReturnType<typeof serve> | undefined = serve(0);
  const port = server.port!;

  return {
    url: `${options.tls ? "https" : "http"}://127.0.0.1:${port}`,
    port,
    stats,
    requests,
    protocolErrors,
    componentTemplates,
    indexTemplates,
    policies,
    settings: (index) => indices.get(index)?.settings,
    docs: (index) => indices.get(index)?.docs ?? new Map(),
    count: (index) => (index === undefined ? [...indices.values()].reduce((n, s) => n + s.docs.size, 0) : indices.get(index)?.docs.size ?? 0),
    indices: () => [...indices.values()].filter((s) => s.docs.size > 0).map((s) => s.name),
    fieldType: (index, path) => indices.get(index)?.mapping.get(path),
    inject: (...added) => faults.push(...added.map((f) => ({ ...f, left: f.times ?? 1 }))),
    clearFaults: () => void faults.splice(0),
    down() {
      server?.stop(true);
      server = undefined;
    },
    up() {
      server ??= serve(port);
    },
    close() {
      server?.stop(true);
      server = undefined;
    },
  };
}

if (import.meta.main) {
  const server = startEsServer({ keepSources: !process.argv.includes("--ids-only") });
  process.stdout.write(`${JSON.stringify({ url: server.url })}\n`);
}

/** `{index: {lifecycle: {name: x}}}` or `{"index.lifecycle.name": x}` -> `{"index.lifecycle.name": x}`, as the engines read settings. */
function flatSettings(settings: Json, prefix = ""): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(settings)) {
    if (value !== null && typeof value === "object" && !Array.isArray(value)) Object.assign(out, flatSettings(value as Json, `${prefix}${key}.`));
    else out[`${prefix}${key}`] = value;
  }
  return out;
}

/** A stored container document's sample identity: container, `@timestamp` and the run's monotonic ms. */
export function sampleKey(containerId: string, timestampMs: number, monotonicMs: number): string {
  return `${containerId} ${new Date(timestampMs).toISOString()} ${monotonicMs}`;
}

/** How often each sample is stored among `index`'s container documents (exactly once: every count is 1). */
export function storedSamples(server: EsTestServer, index = "metrics-cpost.container-default"): Map<string, number> {
  const seen = new Map<string, number>();
  for (const doc of server.docs(index).values()) {
    const d = doc as { "@timestamp": string; container: { id: string }; cpost: { monotonic_ms: number } };
    const key = sampleKey(d.container.id, Date.parse(d["@timestamp"]), d.cpost.monotonic_ms);
    seen.set(key, (seen.get(key) ?? 0) + 1);
  }
  return seen;
}

/** The spool files (`*.ndjson`) under a sink's spool dir; none when it does not exist. */
export const spoolFiles = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir, { recursive: true }).map(String).filter((f) => f.endsWith(".ndjson")) : []);
