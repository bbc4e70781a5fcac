/**
 * `cpost monitor serve`: the Clara Monitoring Platform's server as a part of
 * cpost. A long-running process with an HTTP control API; between POST
 * /start and POST /stop (a session) it samples the host and every running
 * container (or those the filters pick) and writes to its sinks. Outside a
 * session nothing is sampled and nothing is written.
 *
 * Sinks: a fresh set per session (each sees start … end once, as the Sink
 * contract says), made ahead of time so bad sink options fail at startup.
 * Unlike a pipeline run, containers run side by side, so one session's
 * writes of several containers interleave; each container still gets
 * operatorStart before its first write and operatorDone after its last.
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import { availableParallelism, hostname, release, totalmem } from "node:os";
import type { DockerClient } from "../engine/docker.ts";
import { isLoopback, listenHttp, urlOf, type ListenAddress } from "../contracts/listen.ts";
import { Sampler, type Watch } from "../sampling/sampler.ts";
import { defineSinkFanout } from "../sinks/session.ts";
import { SummaryBuilder } from "../sizing/summary.ts";
import { HOST_OPERATOR, type Collector, type Operator, type OperatorResult, type RunInfo, type SampleBatch, type Sink, type Target } from "../contracts/types.ts";

/** A monitor session may last hours: its summaries keep a 100 ms trace (about 17 MB an hour for 20 containers). */
const MONITOR_SIZING = { traceResolutionMs: 100 };
import { VERSION } from "../contracts/version.ts";

const MAX_BODY_BYTES = 64 * 1024;
const LABEL_KEY = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;

/** How `cpost monitor serve` was asked to run. */
export interface MonitorOptions {
  listen: ListenAddress;
  /** Bearer token every request but /healthz must carry; required when listening beyond loopback. */
  token?: string;
  intervalMs: number;
  batchMs?: number;
  containerCollectors: Collector[];
  hostCollectors: Collector[];
  /** Makes one session's sinks. */
  makeSinks(): Promise<Sink[]>;
  sinkNames: string[];
  /** Engine label filters (`key` or `key=value`, all must match) and name patterns (`*` wildcard, any may match). */
  filters: { labels: string[]; names: string[] };
  engine: DockerClient;
  /** How often the engine is asked for new and gone containers (default: the interval, within 250 ms–1 s). */
  pollMs?: number;
  log(line: string): void;
  warn(line: string): void;
}

/** A container watched in a session. */
interface Watched {
  id: string;
  name: string;
  operator: string;
  watch: Watch;
  summary: SummaryBuilder;
  startedAtMs: number;
  done: Promise<void> | undefined;
}

/** The public view of a session (GET /status, the answers of /start and /stop). */
export interface SessionView {
  id: string;
  job: string;
  labels: Record<string, string>;
  startedAtMs: number;
  endedAtMs?: number;
  samples: number;
  containers: Array<{ id: string; name: string; operator: string; samples: number }>;
  /** Achieved sampling intervals of the containers, ms (once the session ended). */
  interval?: { target: number; p50: number; p99: number; samples: number };
}

interface Session extends SessionView {
  info: RunInfo;
  call: SinkCaller;
  host: { sampler: Sampler; watch: Watch | undefined; summary: SummaryBuilder };
  containerSampler: Sampler;
  watched: Map<string, Watched>;
  finished: Watched[];
  /** Summary per container id ("" = the host), fed every batch. */
  builders: Map<string, SummaryBuilder>;
  poller: Timer | undefined;
  polling: Promise<void>;
  stopping: boolean;
}

/** A running monitor. */
export interface Monitor {
  readonly url: string;
  status(): Record<string, unknown>;
  /** Ends the active session (its sinks flushed) and stops serving. */
  close(): Promise<void>;
}

type SinkCaller = (hook: string, fn: (sink: Sink) => unknown, batch?: SampleBatch) => Promise<void>;

/** Starts serving; throws CpostError when the address is taken or a token is missing for a non-loopback address. */
export async function startMonitor(options: MonitorOptions): Promise<Monitor> {
  const pollMs = options.pollMs ?? Math.min(1000, Math.max(250, options.intervalMs));
  const startedAt = Date.now();
  let ready: Promise<Sink[]> | undefined = options.makeSinks();
  // Bad sink options (a busy --prometheus-listen) fail here, before serving.
  const served = (await ready).flatMap((s) => ("url" in s && typeof s.url === "string" ? [`${s.name} at ${s.url}`] : []));
  let session: Session | undefined;
  let last: SessionView | undefined;
  let sessions = 0;
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(work: () => Promise<T>): Promise<T> => {
    const next = queue.then(work, work);
    queue = next.catch(() => undefined);
    return next;
  };

  function view(s: Session | SessionView): SessionView {
    const containers = "watched" in s
      ? [...s.finished, ...s.watched.values()].map((w) => ({ id: w.id, name: w.name, operator: w.operator, samples: w.watch.samples }))
      : s.containers;
    const samples = "watched" in s ? containers.reduce((n, c) => n + c.samples, 0) + (s.host.watch?.samples ?? 0) : s.samples;
    return { id: s.id, job: s.job, labels: s.labels, startedAtMs: s.startedAtMs, ...(s.endedAtMs ? { endedAtMs: s.endedAtMs } : {}), samples, containers };
  }

  async function begin(job: string, labels: Record<string, string>): Promise<Session> {
    const sinks = await (ready ?? options.makeSinks());
    ready = undefined;
    const id = `${new Date().toISOString().replace(/[-:]/g, "").slice(0, 15)}-${randomBytes(3).toString("hex")}`;
    const engine = options.engine.info;
    const info: RunInfo = {
      id,
      pipeline: { file: "", apiVersion: "", name: job, operators: [], order: [] },
      host: { hostname: hostname(), cpus: availableParallelism(), memoryBytes: totalmem(), kernel: release(), arch: process.arch, cgroupVersion: engine.cgroupVersion, engine: engine.engine, engineVersion: engine.version },
      collectors: [...new Set([...options.hostCollectors, ...options.containerCollectors].map((c) => c.name))],
      sinks: options.sinkNames,
      intervalMs: options.intervalMs,
      startedAtMs: Date.now(),
      labels,
      cpostVersion: VERSION,
    };
    const call: SinkCaller = defineSinkFanout(sinks, options.warn).call;
    await call("start", (s) => s.start(info));
    const builders = new Map<string, SummaryBuilder>();
    const onBatch = (batch: SampleBatch) => {
      builders.get(batch.containerId)?.add(batch);
      void call("write", (s) => s.write(batch), batch);
    };
    const sampler = (collectors: Collector[]) =>
      new Sampler({ intervalMs: options.intervalMs, collectors, batchMs: options.batchMs, onBatch, onWarning: (m) => options.warn(m), originMs: performance.now() });
    const hostSummary = new SummaryBuilder(HOST_OPERATOR, { host: MONITOR_SIZING });
    builders.set("", hostSummary);
    const s: Session = {
      id, job, labels, info, call, startedAtMs: info.startedAtMs, samples: 0, containers: [],
      host: { sampler: sampler(options.hostCollectors), watch: undefined, summary: hostSummary },
      containerSampler: sampler(options.containerCollectors),
      watched: new Map(), finished: [], builders, poller: undefined, polling: Promise.resolve(), stopping: false,
    };
    if (options.hostCollectors.length > 0) {
      await call("operatorStart", (k) => k.operatorStart?.(operatorOf(HOST_OPERATOR, "host")));
      s.host.watch = s.host.sampler.watch({ kind: "host", containerId: "", pid: 0, engine: engine.engine, operator: HOST_OPERATOR });
    }
    const tick = () => {
      s.polling = poll(s).finally(() => {
        if (!s.stopping) s.poller = setTimeout(tick, pollMs);
      });
    };
    tick();
    await s.polling;
    sessions++;
    return s;
  }

  async function poll(s: Session): Promise<void> {
    let running: Array<{ id: string; name: string; labels: Record<string, string> }>;
    try {
      running = (await options.engine.listContainers(options.filters.labels))
        .filter((c) => c.state === "running")
        .map((c) => ({ id: c.id, name: c.names[0] ?? c.id.slice(0, 12), labels: c.labels }))
        .filter((c) => options.filters.names.length === 0 || options.filters.names.some((p) => globMatch(p, c.name)));
    } catch (error) {
      options.warn(`monitor: cannot list containers: ${(error as Error).message}`);
      return;
    }
    if (s.stopping) return;
    const seen = new Set(running.map((c) => c.id));
    for (const w of s.watched.values()) {
      if (!seen.has(w.id) && !w.done) w.done = retire(s, w);
    }
    for (const c of running) {
      if (s.watched.has(c.id) || s.finished.some((w) => w.id === c.id)) continue;
      let pid = 0;
      try {
        pid = (await options.engine.inspectContainer(c.id)).pid;
      } catch {
        continue; // gone between list and inspect
      }
      if (s.stopping) return;
      const operator = c.labels["cpost.operator"] ?? c.labels["cpost.service"] ?? c.name;
      const summary = new SummaryBuilder(operator, { host: MONITOR_SIZING });
      s.builders.set(c.id, summary);
      await s.call("operatorStart", (k) => k.operatorStart?.(operatorOf(operator, c.name)));
      const target: Target = { kind: "container", containerId: c.id, pid, engine: options.engine.info.engine, cgroupDriver: options.engine.info.cgroupDriver, operator };
      s.watched.set(c.id, { id: c.id, name: c.name, operator, watch: s.containerSampler.watch(target), summary, startedAtMs: Date.now(), done: undefined });
    }
  }

  /** A container left: sample it to its end, then its operatorDone with how it exited. */
  async function retire(s: Session, w: Watched): Promise<void> {
    await w.watch.finish(1000);
    const state = await options.engine.inspectContainer(w.id).catch(() => undefined);
    const exitCode = state?.running === false ? state.exitCode : null;
    await operatorDone(s, w, exitCode === null ? "interrupted" : exitCode === 0 ? "succeeded" : "failed", exitCode);
    s.watched.delete(w.id);
    s.finished.push(w);
  }

  async function operatorDone(s: Session, w: Watched, status: OperatorResult["status"], exitCode: number | null, reason?: string): Promise<void> {
    const result: OperatorResult = { operator: w.operator, containerId: w.id, status, exitCode, startedAtMs: w.startedAtMs, endedAtMs: Date.now(), ...(reason ? { reason } : {}) };
    const summary = w.summary.build(result);
    await s.call("operatorDone", (k) => k.operatorDone(result, summary));
  }

  async function end(s: Session): Promise<SessionView> {
    s.stopping = true;
    clearTimeout(s.poller);
    await s.polling;
    for (const w of s.watched.values()) if (!w.done) w.watch.stop();
    s.host.watch?.stop();
    await Promise.all([...s.watched.values()].map((w) => w.done));
    s.endedAtMs = Date.now();
    const intervals = s.containerSampler.intervals();
    s.host.sampler.close();
    s.containerSampler.close();
    for (const w of [...s.watched.values()]) {
      await operatorDone(s, w, "interrupted", null, "still running when the monitor session stopped");
      s.finished.push(w);
    }
    s.watched.clear();
    if (s.host.watch) {
      const result: OperatorResult = { operator: HOST_OPERATOR, containerId: "", status: "succeeded", exitCode: 0, startedAtMs: s.startedAtMs, endedAtMs: s.endedAtMs };
      const summary = s.host.summary.build(result);
      await s.call("operatorDone", (k) => k.operatorDone(result, summary));
    }
    const final = { ...view(s), interval: intervals };
    await s.call("end", (k) => k.end({ results: [], summaries: [], endedAtMs: s.endedAtMs!, interval: intervals, interrupted: false }));
    ready = options.makeSinks();
    ready.catch((error: Error) => options.warn(`monitor: cannot prepare the next session's sinks: ${error.message}`));
    return final;
  }

  const json = (status: number, body: unknown) => Response.json(body, { status, headers: { "Cache-Control": "no-store" } });

  async function handle(request: Request): Promise<Response> {
    const path = new URL(request.url).pathname;
    if (path === "/healthz") return new Response("ok\n");
    if (options.token !== undefined && !authorized(request.headers.get("authorization"), options.token)) {
      return json(401, { error: "missing or wrong token", hint: "send Authorization: Bearer <token> (cpost monitor start --token-file FILE)" });
    }
    if (path === "/status" && request.method === "GET") return json(200, status());
    if (path === "/start" && request.method === "POST") {
      const body = await readBody(request);
      if ("error" in body) return json(400, body);
      const job = body.value.pipeline ?? body.value.job ?? "monitor";
      return serial(async () => {
        if (session) return json(409, { error: `session ${session.id} (${session.job}) is already active`, hint: "POST /stop first", session: view(session) });
        session = await begin(job, body.value.labels ?? {});
        options.log(`session ${session.id} started: ${job}${Object.keys(session.labels).length ? ` ${JSON.stringify(session.labels)}` : ""}`);
        return json(200, { session: view(session) });
      });
    }
    if (path === "/stop" && request.method === "POST") {
      return serial(async () => {
        if (!session) return json(409, { error: "no session is active", hint: "POST /start first", ...(last ? { last } : {}) });
        const s = session;
        last = await end(s);
        session = undefined;
        options.log(`session ${s.id} stopped: ${last.samples} samples of ${last.containers.length} container${last.containers.length === 1 ? "" : "s"} and the host in ${((last.endedAtMs! - last.startedAtMs) / 1000).toFixed(1)} s`);
        return json(200, { session: last });
      });
    }
    if (["/status", "/start", "/stop"].includes(path)) return json(405, { error: `${request.method} ${path} is not allowed`, hint: "POST /start, POST /stop, GET /status" });
    return json(404, { error: `no ${path} here`, hint: "POST /start, POST /stop, GET /status, GET /healthz" });
  }

  function status(): Record<string, unknown> {
    return {
      cpost: VERSION,
      url,
      uptimeS: Math.round((Date.now() - startedAt) / 1000),
      intervalMs: options.intervalMs,
      sinks: options.sinkNames,
      collectors: { host: options.hostCollectors.map((c) => c.name), containers: options.containerCollectors.map((c) => c.name) },
      filters: options.filters,
      sessions,
      active: session ? view(session) : null,
      last: last ?? null,
    };
  }

  const server = listenHttp(options.listen, "cpost monitor", "--listen", (request) =>
    handle(request).catch((error: Error) => json(500, { error: error.message })),
  );
  const url = urlOf(options.listen.hostname, server.port ?? options.listen.port);
  options.log(`listening on ${url} (POST /start, POST /stop, GET /status); interval ${options.intervalMs} ms; sinks ${options.sinkNames.join(",")}${served.length ? ` (${served.join(", ")})` : ""}`);

  return {
    url,
    status,
    async close() {
      await serial(async () => {
        if (session) {
          last = await end(session);
          options.log(`session ${session.id} stopped at shutdown: ${last.samples} samples`);
          session = undefined;
        }
      });
      await server.stop(true);
    },
  };
}

/** Refuses to listen beyond loopback without a token; returns nothing when the combination is fine. */
export function needsToken(listen: ListenAddress, token: string | undefined): boolean {
  return token === undefined && !isLoopback(listen.hostname);
}

function authorized(header: string | null, token: string): boolean {
  const given = Buffer.from(header?.replace(/^Bearer\s+/i, "") ?? "");
  const wanted = Buffer.from(token);
  return given.length === wanted.length && timingSafeEqual(given, wanted);
}

async function readBody(request: Request): Promise<{ value: { job?: string; pipeline?: string; labels?: Record<string, string> } } | { error: string; hint?: string }> {
  const text = await request.text();
  if (text.length > MAX_BODY_BYTES) return { error: `body of ${text.length} bytes; at most ${MAX_BODY_BYTES}` };
  if (text.trim() === "") return { value: {} };
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return { error: "body is not JSON", hint: '{"job": "name", "labels": {"key": "value"}}' };
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) return { error: "body must be a JSON object" };
  const { job, pipeline, labels } = body as Record<string, unknown>;
  for (const [key, v] of [["job", job], ["pipeline", pipeline]] as const) {
    if (v !== undefined && (typeof v !== "string" || v.length === 0 || v.length > 255)) return { error: `${key} must be a string of 1 to 255 characters` };
  }
  if (labels !== undefined) {
    if (typeof labels !== "object" || labels === null || Array.isArray(labels)) return { error: "labels must be an object of strings" };
    const entries = Object.entries(labels);
    if (entries.length > 32) return { error: `${entries.length} labels; at most 32` };
    for (const [k, v] of entries) {
      if (!LABEL_KEY.test(k)) return { error: `label name ${JSON.stringify(k)}: use letters, digits, _ . - (64 at most), starting with a letter or _` };
      if (typeof v !== "string" || v.length > 256) return { error: `label ${k}: the value must be a string of at most 256 characters` };
    }
  }
  return { value: { job: job as string | undefined, pipeline: pipeline as string | undefined, labels: labels as Record<string, string> | undefined } };
}

function operatorOf(name: string, container: string): Operator {
  return { name, description: `container ${container}`, image: "", tag: "", variables: {}, inputs: [], outputs: [], requests: {}, services: [], models: [], needsTriton: false, line: 0 };
}

/** `*` matches any run of characters; everything else matches itself. */
function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp(`^${pattern.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`);
  return re.test(name);
}
