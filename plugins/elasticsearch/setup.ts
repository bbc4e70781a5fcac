/**
 * What `cpost es setup` does to a cluster, and what the es sink does when it
 * finds a cluster without cpost's templates: read `GET /` to tell
 * Elasticsearch from OpenSearch, find the lifecycle tool the cluster has
 * (ILM on Elasticsearch, ISM on OpenSearch when its index-management plugin
 * is installed, else none), put cpost's lifecycle policy and then its
 * templates. Idempotent: what is there in the same version is left alone,
 * and a policy of the same name that cpost did not make is never replaced.
 */
import { CpostError } from "../../core/contracts/errors.ts";
import { checkAuth, errorReason, esRequest, type EsAnswer, type EsConnection } from "./client.ts";
import { LIFECYCLE_POLICY, templateRequests, TEMPLATE_VERSION, type TemplateRequest } from "./templates.ts";

/** Which engine answers, from its `GET /`. */
export interface Engine {
  kind: "elasticsearch" | "opensearch";
  version: string;
  major: number;
  minor: number;
  /** `OpenSearch 2.19.2`, `Elasticsearch 8.15.0`: for messages. */
  label: string;
}

/** The engine of a `GET /` answer body; undefined when the body is not one. */
export function engineOf(body: unknown): Engine | undefined {
  const version = (body as { version?: { number?: unknown; distribution?: unknown } } | undefined)?.version;
  if (typeof version?.number !== "string") return undefined;
  // OpenSearch says so in `distribution`; Elasticsearch has no such field (it has build_flavor).
  const kind = version.distribution === "opensearch" ? "opensearch" : "elasticsearch";
  const [major = 0, minor = 0] = version.number.split(".").map((n) => Number.parseInt(n, 10) || 0);
  return { kind, version: version.number, major, minor, label: `${kind === "opensearch" ? "OpenSearch" : "Elasticsearch"} ${version.number}` };
}

/** How the cluster's backing indices are rolled over and expired. */
export type Lifecycle =
  | { kind: "ilm"; path: string }
  | { kind: "ism"; path: string }
  /** `why`: said to the user, with what to do instead. */
  | { kind: "none"; why: string };

/** What one `setup` did, line by line, for `es setup` to print and the sink to summarise. */
export interface SetupReport {
  engine: Engine;
  lifecycle: Lifecycle;
  /** `  <what>: <outcome>` lines. */
  lines: string[];
  /** Something was created or updated. */
  changed: boolean;
}

/** Options of a setup. */
export interface SetupOptions {
  legacy: boolean;
  force: boolean;
  /** Days after which a rolled-over backing index is deleted; undefined: kept. */
  retentionDays?: number;
}

const NO_HANDLER = /no handler found for uri/;

/** Reads `GET /`; refuses engines without what cpost needs. Throws CpostError. */
export async function detectEngine(conn: EsConnection, legacy: boolean): Promise<Engine> {
  const answer = await esRequest(conn, "GET", "/");
  if (answer.unreachable !== undefined) {
    throw new CpostError("engine", `elasticsearch at ${conn.url} does not answer: ${answer.unreachable}`, { hint: "check --es-url (and --es-ca for https)" });
  }
  checkAuth(conn, answer, "read cluster info");
  const engine = engineOf(answer.body);
  if (!engine) {
    throw new CpostError("engine", `${conn.url} does not answer as Elasticsearch or OpenSearch (GET / gave HTTP ${answer.status} without a version)`, { hint: "check --es-url" });
  }
  const { major, minor } = engine;
  if (engine.kind === "elasticsearch" && (major < 7 || (major === 7 && minor < (legacy ? 8 : 9)))) {
    throw new CpostError("unavailable", `${engine.label} at ${conn.url} has no ${legacy ? "composable index templates" : "data streams"}`, {
      hint: `cpost needs Elasticsearch ${legacy ? "7.8" : "7.9"} or later, or OpenSearch${legacy ? "" : "; --legacy writes plain indices (7.8+)"}`,
    });
  }
  return engine;
}

/** The ILM (Elasticsearch) or ISM (OpenSearch) path of cpost's policy. */
function policyPath(engine: Engine): string {
  return engine.kind === "opensearch" ? `/_plugins/_ism/policies/${LIFECYCLE_POLICY}` : `/_ilm/policy/${LIFECYCLE_POLICY}`;
}

/** Finds the lifecycle tool by asking for cpost's policy: a 404 means the tool is there and the policy is not; "no handler" means no tool. */
async function lifecycleOf(conn: EsConnection, engine: Engine, legacy: boolean): Promise<{ lifecycle: Lifecycle; existing: EsAnswer }> {
  const path = policyPath(engine);
  const existing = await esRequest(conn, "GET", path);
  checkAuth(conn, existing, `read the lifecycle policy ${LIFECYCLE_POLICY}`);
  if (legacy) {
    // Plain indices roll over only through a write alias, which cpumetrics / gpumetrics never had.
    return { lifecycle: { kind: "none", why: "legacy indices (cpumetrics, gpumetrics) are plain indices without a rollover alias: delete old documents yourself" }, existing };
  }
  const missingTool = existing.status === 400 && NO_HANDLER.test(JSON.stringify(existing.body ?? ""));
  if (engine.kind === "opensearch") {
    if (missingTool || existing.status === 405) {
      return { lifecycle: { kind: "none", why: "no index-management plugin (ISM) on this cluster: roll data streams over (POST <stream>/_rollover) and delete old backing indices yourself, or install the plugin and run setup again" }, existing };
    }
    return { lifecycle: { kind: "ism", path }, existing };
  }
  if (missingTool || existing.status === 405) {
    return { lifecycle: { kind: "none", why: "no ILM on this cluster (an OSS build?): roll data streams over and delete old backing indices yourself" }, existing };
  }
  return { lifecycle: { kind: "ilm", path }, existing };
}

/** Elasticsearch and OpenSearch time units: whole days. */
const days = (n: number) => `${n}d`;

/** The policy body cpost puts: roll over at 30 days or 50 GB per primary shard (as Elastic's own metrics policy), and delete after `retentionDays` when given. */
export function lifecyclePolicy(engine: Engine, retentionDays?: number): Record<string, unknown> {
  const purpose = `cpost metrics: roll over at 30 days or 50gb per primary shard${retentionDays ? `, delete ${retentionDays} days after the rollover` : ", keep"}`;
  if (engine.kind === "elasticsearch") {
    return {
      policy: {
        _meta: { managed_by: "cpost", version: TEMPLATE_VERSION, description: purpose },
        phases: {
          hot: { min_age: "0ms", actions: { rollover: { max_age: "30d", max_primary_shard_size: "50gb" } } },
          ...(retentionDays ? { delete: { min_age: days(retentionDays), actions: { delete: {} } } } : {}),
        },
      },
    };
  }
  // ISM has no _meta: the version is kept in the description, which it returns as given. min_primary_shard_size came in 2.4.
  const shardSize = engine.major > 2 || (engine.major === 2 && engine.minor >= 4) ? { min_primary_shard_size: "50gb" } : { min_size: "50gb" };
  return {
    policy: {
      description: `${purpose} (managed by cpost, version ${TEMPLATE_VERSION})`,
      default_state: "hot",
      states: [
        {
          name: "hot",
          actions: [{ rollover: { min_index_age: "30d", ...shardSize } }],
          transitions: retentionDays ? [{ state_name: "delete", conditions: { min_rollover_age: days(retentionDays) } }] : [],
        },
        ...(retentionDays ? [{ name: "delete", actions: [{ delete: {} }], transitions: [] }] : []),
      ],
      // Data stream backing indices match ISM templates by the data stream's name.
      ism_template: [{ index_patterns: ["metrics-cpost.container-*", "metrics-cpost.gpu-*"], priority: 200 }],
    },
  };
}

/** Who made the policy that is there, and in which version. */
function policyOwner(engine: Engine, body: unknown): { cpost: boolean; version?: number; seqNo?: number; primaryTerm?: number } {
  if (engine.kind === "elasticsearch") {
    const meta = (body as Record<string, { policy?: { _meta?: { managed_by?: string; version?: number } } }> | undefined)?.[LIFECYCLE_POLICY]?.policy?._meta;
    return { cpost: meta?.managed_by === "cpost", version: meta?.version };
  }
  const got = body as { _seq_no?: number; _primary_term?: number; policy?: { description?: string } } | undefined;
  const mark = /\(managed by cpost, version (\d+)\)/.exec(got?.policy?.description ?? "");
  return { cpost: mark !== null, version: mark ? Number(mark[1]) : undefined, seqNo: got?._seq_no, primaryTerm: got?._primary_term };
}

function refused(conn: EsConnection, what: string, answer: EsAnswer): CpostError {
  const reason = answer.unreachable ?? `HTTP ${answer.status} ${errorReason(answer.body)}`;
  return new CpostError("input", `elasticsearch at ${conn.url} refused ${what}: ${reason}`, {
    hint: /same priority|different priority/.test(reason)
      ? "another template or policy matches the same indices at the same priority: delete it, change its priority, or use --legacy / other names"
      : "see the reason above; `cpost es setup --dry-run` prints what cpost sends",
  });
}

/** Puts cpost's lifecycle policy unless the same version (or someone else's policy of that name) is there. */
async function applyPolicy(conn: EsConnection, engine: Engine, lifecycle: Lifecycle, existing: EsAnswer, options: SetupOptions): Promise<string> {
  if (lifecycle.kind === "none") return `none: ${lifecycle.why}`;
  const tool = lifecycle.kind === "ilm" ? "ILM" : "ISM";
  const found = existing.status === 200;
  const owner = found ? policyOwner(engine, existing.body) : { cpost: false };
  if (found && !owner.cpost) return `${tool} policy ${LIFECYCLE_POLICY}: kept (there already, not made by cpost)`;
  if (found && !options.force && owner.version === TEMPLATE_VERSION) return `${tool} policy ${LIFECYCLE_POLICY}: unchanged (version ${TEMPLATE_VERSION})`;
  if (existing.status !== 200 && existing.status !== 404) throw refused(conn, `to read ${tool} policy ${LIFECYCLE_POLICY}`, existing);
  // ISM refuses to overwrite a policy without the sequence number of the one it replaces (409 otherwise).
  const query = lifecycle.kind === "ism" && found ? `?if_seq_no=${owner.seqNo}&if_primary_term=${owner.primaryTerm}` : "";
  const answer = await esRequest(conn, "PUT", `${lifecycle.path}${query}`, JSON.stringify(lifecyclePolicy(engine, options.retentionDays)));
  checkAuth(conn, answer, `put ${tool} policy ${LIFECYCLE_POLICY}`);
  if (answer.status === 409 && !found) {
    // Another cpost (another host starting at the same moment) created it between the read and the write.
    const again = await esRequest(conn, "GET", lifecycle.path);
    if (again.status === 200 && policyOwner(engine, again.body).cpost) return `${tool} policy ${LIFECYCLE_POLICY}: created meanwhile by another cpost`;
  }
  if (answer.unreachable !== undefined || answer.status >= 300) throw refused(conn, `${tool} policy ${LIFECYCLE_POLICY}`, answer);
  return `${tool} policy ${LIFECYCLE_POLICY}: ${found ? `updated (version ${owner.version ?? "none"} -> ${TEMPLATE_VERSION})` : "created"}`;
}

/** The REST path of a template. */
export const templatePath = (t: TemplateRequest) => `/${t.kind === "component" ? "_component_template" : "_index_template"}/${encodeURIComponent(t.name)}`;

/** Puts one template unless the same version of it is there; returns what happened. */
async function applyTemplate(conn: EsConnection, t: TemplateRequest, force: boolean): Promise<string> {
  const existing = await esRequest(conn, "GET", templatePath(t));
  checkAuth(conn, existing, `read ${t.kind} template ${t.name}`);
  const list = (existing.body as Record<string, Array<Record<string, { version?: number; _meta?: { managed_by?: string } }>>> | undefined)?.[
    t.kind === "component" ? "component_templates" : "index_templates"
  ];
  const current = list?.[0]?.[t.kind === "component" ? "component_template" : "index_template"];
  if (!force && current?.version === TEMPLATE_VERSION && current._meta?.managed_by === "cpost") return `unchanged (version ${TEMPLATE_VERSION})`;
  const answer = await esRequest(conn, "PUT", templatePath(t), JSON.stringify(t.body));
  checkAuth(conn, answer, `put ${t.kind} template ${t.name}`);
  if (answer.unreachable !== undefined || answer.status >= 300) throw refused(conn, `${t.kind} template ${t.name}`, answer);
  return current ? `updated (version ${current.version ?? "none"} -> ${TEMPLATE_VERSION})` : "created";
}

/** The requests setup makes for `engine` (policy first: templates name it), for `--dry-run`. */
export function setupRequests(engine: Engine, options: SetupOptions): Array<{ method: "PUT"; path: string; body: unknown }> {
  const lifecycle = !options.legacy;
  const policy = lifecycle ? [{ method: "PUT" as const, path: policyPath(engine), body: lifecyclePolicy(engine, options.retentionDays) }] : [];
  const templates = templateRequests(options.legacy, { ilm: lifecycle && engine.kind === "elasticsearch" });
  return [...policy, ...templates.map((t) => ({ method: "PUT" as const, path: templatePath(t), body: t.body }))];
}

/** Sets up the cluster for cpost's data: engine, lifecycle policy, templates. Throws CpostError on refusal. */
export async function setupCluster(conn: EsConnection, options: SetupOptions, engine?: Engine): Promise<SetupReport> {
  engine ??= await detectEngine(conn, options.legacy);
  const { lifecycle, existing } = await lifecycleOf(conn, engine, options.legacy);
  const lines = [`  lifecycle: ${await applyPolicy(conn, engine, lifecycle, existing, options)}`];
  for (const t of templateRequests(options.legacy, { ilm: lifecycle.kind === "ilm" })) {
    lines.push(`  ${t.kind} template ${t.name}: ${await applyTemplate(conn, t, options.force)}`);
  }
  return { engine, lifecycle, lines, changed: lines.some((l) => /: (created|updated)/.test(l)) };
}

/** Whether cpost's index template for the sink's documents is on the cluster: true, false, or the answer that did not say. */
export async function templatesPresent(conn: EsConnection, legacy: boolean): Promise<boolean | EsAnswer> {
  const index = templateRequests(legacy, { ilm: false }).find((t) => t.kind === "index")!;
  const answer = await esRequest(conn, "GET", templatePath(index));
  if (answer.status === 200) return true;
  if (answer.status === 404) return false;
  return answer;
}
