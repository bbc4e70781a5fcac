/**
 * `cpost monitor serve|start|stop|status`: the host monitor (the Clara
 * Monitoring Platform's server) and its client. The client is one HTTP
 * request, small enough to be the command of a pipeline stage
 * (`cpost monitor start --job spleen` as the first operator,
 * `cpost monitor stop` as the last).
 */
import { defineCommand, type ArgsDef } from "citty";
import { readFileSync } from "node:fs";
import { builtinCollectors, DEFAULT_COLLECTORS, loadCollectors } from "../../../collectors/index.ts";
import { loadSinkFactories } from "../../../plugins/index.ts";
import { connectDocker } from "../../engine/docker.ts";
import { CpostError } from "../../contracts/errors.ts";
import { parseListen } from "../../contracts/listen.ts";
import { requireAvailable } from "../../run/execute.ts";
import { needsToken, startMonitor } from "../../run/monitor.ts";
import type { Sink } from "../../contracts/types.ts";
import { parseDuration } from "../../contracts/units.ts";
import { commaList, parseArgs, valueOf, type FlagsDef } from "../flags.ts";
import { checkSinkOptions, parseInterval, sinkPrefixesOf } from "./run.ts";
import { warn } from "../console.ts";

/** Where the client looks for the monitor unless --url or CPOST_MONITOR_URL says otherwise. */
export const DEFAULT_MONITOR_URL = "http://127.0.0.1:8686";



function readToken(file: string | undefined): string | undefined {
  if (file === undefined) return process.env.CPOST_MONITOR_TOKEN || undefined;
  let token: string;
  try {
    token = readFileSync(file, "utf8").trim();
  } catch (cause) {
    throw new CpostError("input", `cannot read the token file: ${(cause as Error).message}`, { file, cause, hint: "create it, e.g. `head -c 24 /dev/urandom | base64 > token; chmod 600 token`" });
  }
  if (token.length < 8 || /\s/.test(token)) {
    throw new CpostError("input", "the token file must hold one token of at least 8 characters without spaces", { file, line: 1 });
  }
  return token;
}

function parseLabels(values: string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const v of values) {
    const eq = v.indexOf("=");
    if (eq <= 0) throw new CpostError("usage", `--label ${v}: expected key=value`, { hint: "e.g. --label site=lab1 --label run=42" });
    labels[v.slice(0, eq)] = v.slice(eq + 1);
  }
  return labels;
}

const serveArgs = {
  listen: { type: "string", description: "control API address (default 127.0.0.1:8686); beyond loopback it needs --token-file", valueHint: "host:port" },
  interval: { type: "string", description: "sampling interval: 1s (default), 10ms, 1ms", valueHint: "1s" },
  sinks: { type: "string", description: "sinks, comma-separated (default prometheus); options: --<sink>-<option> VALUE, e.g. --es-url, --prometheus-listen", valueHint: "es,prometheus" },
  collectors: { type: "string", description: `collectors for containers (default ${DEFAULT_COLLECTORS.join(",")},nvml where built in)`, valueHint: "cgroup,blkio,nvml" },
  "host-collectors": { type: "string", description: "collectors for the host (default host,nvml where built in; \"\" for none)", valueHint: "host,nvml" },
  label: { type: "string", repeated: true, description: "watch only containers with this engine label (key or key=value; repeat: all must match)", valueHint: "key=value" },
  name: { type: "string", repeated: true, description: "watch only containers whose name matches (* wildcard; repeat: any may match)", valueHint: "pattern" },
  "token-file": { type: "string", description: "file holding the bearer token clients must send (or CPOST_MONITOR_TOKEN)", valueHint: "file" },
  poll: { type: "string", description: "how often to look for new and gone containers (default: the interval, within 250ms–1s)", valueHint: "1s" },
} satisfies FlagsDef;

const serve = defineCommand({
  meta: { name: "serve", description: "Run the host monitor: an HTTP control API; between POST /start and POST /stop it samples the host, its GPUs and running containers into the sinks." },
  args: serveArgs,
  async run({ rawArgs }) {
    const { positionals, flags, sinkOptions, lists } = parseArgs(rawArgs, serveArgs, { sinkPrefixes: sinkPrefixesOf() });
    const str = valueOf(flags);
    if (positionals.length > 0) throw new CpostError("usage", `unexpected argument ${positionals[0]}`, { hint: "see `cpost monitor serve --help`" });
    const listen = parseListen(str("listen") ?? "127.0.0.1:8686", "--listen");
    const token = readToken(str("token-file"));
    if (needsToken(listen, token)) {
      throw new CpostError("usage", `--listen ${str("listen")} accepts connections from other machines, so the control API needs a token`, {
        hint: "give --token-file FILE (clients send it as a bearer token), or listen on 127.0.0.1",
      });
    }
    // Collectors that depend on the host (an available() hook: GPUs through NVML) join the defaults where
    // they answer; otherwise that is said once, not once per target. Named ones must answer (exit 2).
    const hostDependent: string[] = [];
    if (flags.collectors === undefined || flags["host-collectors"] === undefined) {
      for (const [name, load] of Object.entries(builtinCollectors)) {
        const collector = (await load()).default;
        if (!collector.available || DEFAULT_COLLECTORS.includes(name)) continue;
        const state = collector.available();
        collector.dispose?.();
        if (state.ok) hostDependent.push(name);
        else process.stderr.write(`cpost monitor: ${name} not used: ${state.reason}\n`);
      }
    }
    const containerCollectors = await loadCollectors(flags.collectors !== undefined ? commaList(str("collectors")) : [...DEFAULT_COLLECTORS.filter((n) => n in builtinCollectors), ...hostDependent]);
    const hostCollectors = await loadCollectors(flags["host-collectors"] !== undefined ? commaList(str("host-collectors")) : ["host", ...hostDependent]);
    if (flags.collectors !== undefined) requireAvailable(containerCollectors, "--collectors");
    if (flags["host-collectors"] !== undefined) requireAvailable(hostCollectors, "--host-collectors");
    const sinkNames = flags.sinks !== undefined ? commaList(str("sinks")) : ["prometheus"];
    if (sinkNames.length === 0) throw new CpostError("usage", "--sinks is empty: a monitor with no sinks records nothing", { hint: "e.g. --sinks es,prometheus" });
    checkSinkOptions(sinkOptions, sinkNames, []);
    const factories = await loadSinkFactories(sinkNames);
    const makeSinks = async (): Promise<Sink[]> => Promise.all(factories.map(({ factory }) => factory({ options: sinkOptions, out: process.stderr })));
    const intervalMs = parseInterval(str("interval") ?? "1s");
    const pollText = str("poll");
    const engine = await connectDocker();
    const log = (line: string) => process.stderr.write(`cpost monitor: ${line}\n`);
    const monitor = await startMonitor({
      listen, token, intervalMs, containerCollectors, hostCollectors, makeSinks, sinkNames, engine, log,
      pollMs: pollText === undefined ? undefined : parseDuration(pollText, { flag: "--poll", minMs: 10, maxMs: 60_000 }),
      filters: { labels: lists?.label ?? [], names: lists?.name ?? [] },
      warn,
    });
    const signal = await new Promise<string>((resolve) => {
      const on = (name: string) => () => resolve(name);
      process.once("SIGTERM", on("SIGTERM"));
      process.once("SIGINT", on("SIGINT"));
    });
    log(`${signal}: stopping (the active session is ended and its sinks flushed)`);
    await monitor.close();
    log("stopped");
    return 0;
  },
});

const clientArgs = {
  url: { type: "string", description: `the monitor's address (default $CPOST_MONITOR_URL or ${DEFAULT_MONITOR_URL})`, valueHint: "url" },
  "token-file": { type: "string", description: "file holding the monitor's token (or CPOST_MONITOR_TOKEN)", valueHint: "file" },
  timeout: { type: "string", description: "how long to wait for the answer (default 60s: stopping waits for the sinks to flush)", valueHint: "60s" },
  json: { type: "boolean", description: "print the monitor's JSON answer" },
} satisfies ArgsDef;

interface ClientArgs {
  url?: string;
  "token-file"?: string;
  timeout?: string;
  json?: boolean;
}

/** One request to the monitor; a refusal becomes a CpostError carrying the monitor's own message. */
async function ask(args: ClientArgs, method: "GET" | "POST", path: string, body?: unknown): Promise<Record<string, unknown>> {
  const base = (args.url ?? process.env.CPOST_MONITOR_URL ?? DEFAULT_MONITOR_URL).replace(/\/+$/, "");
  if (!/^https?:\/\/[^/]+$/.test(base)) throw new CpostError("usage", `--url ${base}: expected http://host:port`);
  const token = readToken(args["token-file"]);
  const timeoutMs = parseDuration(args.timeout ?? "60s", { flag: "--timeout", minMs: 100, maxMs: 3_600_000 });
  let res: Response;
  try {
    res = await fetch(`${base}${path}`, {
      method,
      headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (cause) {
    const why = (cause as { code?: string }).code ?? (cause as Error).name;
    throw new CpostError("unavailable", `no cpost monitor answers at ${base} (${why === "TimeoutError" ? `no answer within ${timeoutMs} ms` : why})`, {
      cause,
      hint: "start one with `cpost monitor serve`, or point --url (or CPOST_MONITOR_URL) at it",
    });
  }
  const answer = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  if (!res.ok) {
    throw new CpostError(res.status >= 500 ? "internal" : "usage", `monitor at ${base}: ${String(answer.error ?? res.statusText)}`, {
      hint: typeof answer.hint === "string" ? answer.hint : undefined,
    });
  }
  if (args.json) process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
  return answer;
}

interface SessionAnswer {
  id: string;
  job: string;
  startedAtMs: number;
  endedAtMs?: number;
  samples: number;
  containers: unknown[];
}

const startArgs = {
  ...clientArgs,
  job: { type: "string", description: "job or pipeline name the session's data carries (default monitor)", valueHint: "name" },
  label: { type: "string", repeated: true, description: "key=value attached to every document and series of the session (repeat for more)", valueHint: "key=value" },
} satisfies FlagsDef;

const start = defineCommand({
  meta: { name: "start", description: "Start a monitoring session (what the Clara monitor-start operator did); prints its id." },
  args: startArgs,
  async run({ args, rawArgs }) {
    const labels = parseLabels(parseArgs(rawArgs, startArgs).lists?.label ?? []);
    const answer = await ask(args, "POST", "/start", { ...(args.job ? { job: args.job } : {}), labels });
    const s = answer.session as SessionAnswer;
    if (!args.json) process.stdout.write(`session ${s.id} started: ${s.job} at ${new Date(s.startedAtMs).toISOString()}\n`);
    return 0;
  },
});

const stop = defineCommand({
  meta: { name: "stop", description: "Stop the active monitoring session (what the Clara monitor-stop operator did); returns once the sinks have flushed." },
  args: clientArgs,
  async run({ args }) {
    const answer = await ask(args, "POST", "/stop");
    const s = answer.session as SessionAnswer;
    if (!args.json) {
      process.stdout.write(`session ${s.id} stopped: ${s.job}, ${s.samples} samples of ${s.containers.length} container${s.containers.length === 1 ? "" : "s"} and the host from ${new Date(s.startedAtMs).toISOString()} to ${new Date(s.endedAtMs!).toISOString()}\n`);
    }
    return 0;
  },
});

const status = defineCommand({
  meta: { name: "status", description: "Print the monitor's status (JSON): active session, containers watched, sinks." },
  args: clientArgs,
  async run({ args }) {
    await ask({ ...args, json: true }, "GET", "/status");
    return 0;
  },
});

export default defineCommand({
  meta: { name: "monitor", description: "Host monitor with an HTTP control API (serve), and its client (start, stop, status)." },
  subCommands: { serve, start, stop, status },
});
