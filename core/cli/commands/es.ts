/** `cpost es setup`: the lifecycle policy and index templates of cpost's Elasticsearch / OpenSearch data, idempotent (plugins/elasticsearch/setup.ts does the work). */
import { defineCommand } from "citty";
import { CpostError } from "../../contracts/errors.ts";
import { parseDuration } from "../../contracts/units.ts";
import { esConnection } from "../../../plugins/elasticsearch/client.ts";
import { engineOf, setupCluster, setupRequests } from "../../../plugins/elasticsearch/setup.ts";

const connectionArgs = {
  "es-url": { type: "string", description: "Elasticsearch URL, or several nodes comma-separated (or CPOST_ES_URL)", valueHint: "https://host:9200" },
  "es-api-key-file": { type: "string", description: "file holding an API key (or CPOST_ES_API_KEY)", valueHint: "file" },
  "es-user": { type: "string", description: "user for basic auth (or CPOST_ES_USER)" },
  "es-password-file": { type: "string", description: "file holding the password (or CPOST_ES_PASSWORD)", valueHint: "file" },
  "es-ca": { type: "string", description: "CA certificate (PEM) to trust for https", valueHint: "file" },
  "es-timeout": { type: "string", description: "per-request timeout", default: "30s" },
} as const;

const setup = defineCommand({
  meta: {
    name: "setup",
    description: "Create the lifecycle policy (ILM on Elasticsearch, ISM on OpenSearch when installed) and the index templates for cpost's data streams (or legacy indices). Safe to run again.",
  },
  args: {
    ...connectionArgs,
    legacy: { type: "boolean", description: "templates for the original's `cpumetrics` / `gpumetrics` indices (existing Grafana panels)" },
    "retention-days": { type: "string", description: "delete backing indices this many days after they roll over (default: keep)", valueHint: "days" },
    "dry-run": { type: "boolean", description: "print the requests as JSON; contact nothing" },
    engine: { type: "string", description: "with --dry-run: the engine to print the requests for", default: "elasticsearch", valueHint: "elasticsearch|opensearch" },
    force: { type: "boolean", description: "put the templates and policy even when the same version is there" },
  },
  async run({ args }) {
    const retention = args["retention-days"];
    if (retention !== undefined && !/^[1-9]\d{0,4}$/.test(retention.trim())) {
      throw new CpostError("usage", `--retention-days ${JSON.stringify(retention)} is not a whole number of days`, { hint: "e.g. --retention-days 90" });
    }
    const options = { legacy: Boolean(args.legacy), force: Boolean(args.force), retentionDays: retention === undefined ? undefined : Number(retention) };
    if (args["dry-run"]) {
      if (args.engine !== "elasticsearch" && args.engine !== "opensearch") {
        throw new CpostError("usage", `--engine ${JSON.stringify(args.engine)}: elasticsearch or opensearch`, { hint: "e.g. --dry-run --engine opensearch" });
      }
      // The version only picks OpenSearch's rollover condition (min_primary_shard_size from 2.4).
      const engine = engineOf({ version: { number: args.engine === "opensearch" ? "2.19.0" : "8.15.0", distribution: args.engine } })!;
      for (const r of setupRequests(engine, options)) process.stdout.write(`${r.method} ${r.path}\n${JSON.stringify(r.body, null, 2)}\n\n`);
      return 0;
    }
    // Every string flag goes through, so a secret given inline (--es-api-key) is refused, not ignored.
    const flags = Object.fromEntries(Object.entries(args).filter((e): e is [string, string] => typeof e[1] === "string" && e[0].startsWith("es-")).map(([k, v]) => [k.slice(3), v]));
    const conn = esConnection(flags);
    conn.timeoutMs = parseDuration(args["es-timeout"], { flag: "--es-timeout", code: "input" });
    const report = await setupCluster(conn, options);
    process.stdout.write(`${report.engine.label} at ${conn.url}\n${report.lines.join("\n")}\n`);
    const targets = args.legacy ? "cpumetrics and gpumetrics" : "metrics-cpost.container-* and metrics-cpost.gpu-*";
    process.stdout.write(`ready: new ${targets} get these mappings (existing indices keep theirs until they roll over)\n`);
    return 0;
  },
});

export default defineCommand({
  meta: { name: "es", description: "Elasticsearch: index templates for cpost's data" },
  subCommands: { setup },
});
