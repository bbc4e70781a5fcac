/** `cpost es setup`: the index templates and mappings of cpost's Elasticsearch data, idempotent. */
import { defineCommand } from "citty";
import { CpostError } from "../../contracts/errors.ts";
import { checkAuth, errorReason, esConnection, esRequest, type EsConnection } from "../../../plugins/elasticsearch/client.ts";
import { templateRequests, TEMPLATE_VERSION, type TemplateRequest } from "../../../plugins/elasticsearch/templates.ts";
import { optionMs } from "../../../plugins/elasticsearch/index.ts";

const connectionArgs = {
  "es-url": { type: "string", description: "Elasticsearch URL (or CPOST_ES_URL)", valueHint: "https://host:9200" },
  "es-api-key-file": { type: "string", description: "file holding an API key (or CPOST_ES_API_KEY)", valueHint: "file" },
  "es-user": { type: "string", description: "user for basic auth (or CPOST_ES_USER)" },
  "es-password-file": { type: "string", description: "file holding the password (or CPOST_ES_PASSWORD)", valueHint: "file" },
  "es-ca": { type: "string", description: "CA certificate (PEM) to trust for https", valueHint: "file" },
  "es-timeout": { type: "string", description: "per-request timeout", default: "30s" },
} as const;

const path = (t: TemplateRequest) => `/${t.kind === "component" ? "_component_template" : "_index_template"}/${encodeURIComponent(t.name)}`;

async function serverVersion(conn: EsConnection, legacy: boolean): Promise<string> {
  const answer = await esRequest(conn, "GET", "/");
  if (answer.unreachable !== undefined) {
    throw new CpostError("engine", `elasticsearch at ${conn.url} does not answer: ${answer.unreachable}`, { hint: "check --es-url (and --es-ca for https)" });
  }
  checkAuth(conn, answer, "read cluster info");
  const version = (answer.body as { version?: { number?: string; distribution?: string } } | undefined)?.version;
  const [major = 0, minor = 0] = (version?.number ?? "0").split(".").map(Number);
  const opensearch = version?.distribution === "opensearch";
  if (!opensearch && (major < 7 || (major === 7 && minor < (legacy ? 8 : 9)))) {
    throw new CpostError("unavailable", `Elasticsearch ${version?.number ?? "(unknown version)"} at ${conn.url} has no ${legacy ? "composable index templates" : "data streams"}`, {
      hint: `cpost needs Elasticsearch ${legacy ? "7.8" : "7.9"} or later, or OpenSearch${legacy ? "" : "; --legacy writes plain indices (7.8+)"}`,
    });
  }
  return `${opensearch ? "OpenSearch" : "Elasticsearch"} ${version?.number}`;
}

/** Puts one template unless the same version of it is there; returns what happened. */
async function apply(conn: EsConnection, t: TemplateRequest, force: boolean): Promise<string> {
  const existing = await esRequest(conn, "GET", path(t));
  checkAuth(conn, existing, `read ${t.kind} template ${t.name}`);
  const list = (existing.body as Record<string, Array<Record<string, { version?: number; _meta?: { managed_by?: string } }>>> | undefined)?.[
    t.kind === "component" ? "component_templates" : "index_templates"
  ];
  const current = list?.[0]?.[t.kind === "component" ? "component_template" : "index_template"];
  if (!force && current?.version === TEMPLATE_VERSION && current._meta?.managed_by === "cpost") return `unchanged (version ${TEMPLATE_VERSION})`;
  const answer = await esRequest(conn, "PUT", path(t), JSON.stringify(t.body));
  checkAuth(conn, answer, `put ${t.kind} template ${t.name}`);
  if (answer.unreachable !== undefined || answer.status >= 300) {
    const reason = answer.unreachable ?? `HTTP ${answer.status} ${errorReason(answer.body)}`;
    throw new CpostError("input", `elasticsearch at ${conn.url} refused ${t.kind} template ${t.name}: ${reason}`, {
      hint: /same priority/.test(reason)
        ? "another index template matches the same indices at the same priority: delete it, change its priority, or use --legacy / other names"
        : "see the reason above; `cpost es setup --dry-run` prints what cpost sends",
    });
  }
  return current ? `updated (version ${current.version ?? "none"} -> ${TEMPLATE_VERSION})` : "created";
}

const setup = defineCommand({
  meta: { name: "setup", description: "Create the index templates and mappings for cpost's data streams (or legacy indices). Safe to run again." },
  args: {
    ...connectionArgs,
    legacy: { type: "boolean", description: "templates for the original's `cpumetrics` / `gpumetrics` indices (existing Grafana panels)" },
    "dry-run": { type: "boolean", description: "print the requests as JSON; contact nothing" },
    force: { type: "boolean", description: "put the templates even when the same version is there" },
  },
  async run({ args }) {
    const requests = templateRequests(Boolean(args.legacy));
    if (args["dry-run"]) {
      for (const t of requests) process.stdout.write(`PUT ${path(t)}\n${JSON.stringify(t.body, null, 2)}\n\n`);
      return 0;
    }
    // Every string flag goes through, so a secret given inline (--es-api-key) is refused, not ignored.
    const options = Object.fromEntries(Object.entries(args).filter((e): e is [string, string] => typeof e[1] === "string" && e[0].startsWith("es-")).map(([k, v]) => [k.slice(3), v]));
    const conn = esConnection(options);
    conn.timeoutMs = optionMs(args["es-timeout"], 30_000, "es-timeout");
    process.stdout.write(`${await serverVersion(conn, Boolean(args.legacy))} at ${conn.url}\n`);
    for (const t of requests) {
      process.stdout.write(`  ${t.kind} template ${t.name}: ${await apply(conn, t, Boolean(args.force))}\n`);
    }
    const targets = args.legacy ? "cpumetrics and gpumetrics" : "metrics-cpost.container-* and metrics-cpost.gpu-*";
    process.stdout.write(`ready: new ${targets} get these mappings (existing indices keep theirs until they roll over)\n`);
    return 0;
  },
});

export default defineCommand({
  meta: { name: "es", description: "Elasticsearch: index templates for cpost's data" },
  subCommands: { setup },
});
