/**
 * The only door to the container engine: the Docker Engine HTTP API over its
 * Unix socket (`DOCKER_HOST=unix://…` honoured, which also serves Podman's
 * Docker-compatible socket), spoken with `fetch(…, { unix })`. No docker CLI,
 * no child processes. Every engine refusal becomes a CpostError that says
 * what to do.
 */
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { CpostError } from "../contracts/errors.ts";

/** The API version cpost speaks (Docker 20.10); older engines lack DeviceRequests. */
const API_VERSION = "1.41";
const MIN_API_VERSION = "1.40";
/** Default deadline of a plain request; streamed and long-poll requests have none. */
const REQUEST_TIMEOUT_MS = 30_000;
const DEFAULT_SOCKET = "/var/run/docker.sock";
/** How long waiting on a container keeps asking an engine that went away (a dockerd restart takes seconds; minutes with many stale containers). */
const RECONNECT_MS = 5 * 60_000;
const RECONNECT_POLL_MS = 250;
const SOCKET_HINT = "start the Docker engine (or `podman system service`), or set DOCKER_HOST=unix:///path/to/engine.sock";

/** Where the engine listens, as cpost reaches it. */
export interface EngineEndpoint {
  /** Unix socket path; absent for tcp://. */
  socketPath?: string;
  /** Base URL requests are built on. */
  baseUrl: string;
  /** How messages name it, e.g. `unix:///var/run/docker.sock`. */
  display: string;
}

/** Facts about the engine, read once when connecting. */
export interface EngineInfo {
  engine: "docker" | "podman";
  version: string;
  /** The API version cpost uses with it (min of the engine's and cpost's). */
  apiVersion: string;
  cgroupDriver: "cgroupfs" | "systemd";
  cgroupVersion: 1 | 2;
  /** OCI runtimes the engine knows (e.g. runc, nvidia). */
  runtimes: string[];
  hostname: string;
}

/** One bind mount of a container. */
export interface BindMount {
  source: string;
  target: string;
  readOnly: boolean;
}

/** What cpost asks the engine to create. */
export interface ContainerSpec {
  name?: string;
  /** `image:tag`. */
  image: string;
  /** argv; absent = the image's default. */
  cmd?: string[];
  env: Record<string, string>;
  labels: Record<string, string>;
  mounts: BindMount[];
  /** A user-defined network to join (e.g. cpost_net); absent = the engine's default. */
  network?: string;
  /** GPUs to request through the nvidia driver (DeviceRequests). */
  gpus?: number;
  /** Memory limit in bytes (HostConfig.Memory; swap is held to the same, so the limit is real). */
  memoryBytes?: number;
  /** CPU limit in billionths of a CPU (HostConfig.NanoCpus, a CFS quota). */
  nanoCpus?: number;
}

/** A container's state as inspect reports it. */
export interface ContainerState {
  id: string;
  name: string;
  status: string;
  running: boolean;
  /** Host pid of its init process; 0 when not running. */
  pid: number;
  exitCode: number;
  oomKilled: boolean;
  /** The engine's error for a container that failed to start. */
  error: string;
  labels: Record<string, string>;
  /** IP address per network name. */
  ipAddresses: Record<string, string>;
}

/** A container as the list endpoint reports it. */
export interface ContainerListing {
  id: string;
  names: string[];
  state: string;
  labels: Record<string, string>;
}

/** A network as the engine reports it. */
export interface NetworkInfo {
  id: string;
  name: string;
  labels: Record<string, string>;
}

/** One frame of a container's output, or a piece of a long one. */
export interface LogChunk {
  stream: "stdout" | "stderr";
  data: Uint8Array;
  /** Set on every piece of a long frame but its first (so a reader knows where the engine's timestamp is). */
  continued?: true;
}

/** Which of a container's output to read. */
export interface LogOptions {
  /** Keep the request open and stream new output until the container stops (from its first line all the same). */
  follow?: boolean;
  /** Prefix each frame with the engine's RFC 3339 timestamp (nanoseconds) and a space. */
  timestamps?: boolean;
  /** Only the last N lines the engine kept. */
  tail?: number;
  signal?: AbortSignal;
}

/** Progress of an image pull, one engine status line. */
export interface PullProgress {
  status: string;
  id?: string;
  progress?: string;
}

/** A connected engine. Methods throw CpostError("engine") with a hint on refusal. */
export interface DockerClient {
  readonly endpoint: EngineEndpoint;
  readonly info: EngineInfo;
  /** Times the engine stopped answering since connecting (requests wait for it to come back). */
  readonly outages?: number;
  ping(signal?: AbortSignal): Promise<void>;
  /** True when `image:tag` is present locally. */
  imageExists(image: string, signal?: AbortSignal): Promise<boolean>;
  /** Pulls `image:tag`, with registry credentials from ~/.docker/config.json where present. */
  pullImage(image: string, options?: { signal?: AbortSignal; onProgress?: (p: PullProgress) => void }): Promise<void>;
  createNetwork(name: string, labels: Record<string, string>, signal?: AbortSignal): Promise<string>;
  /** The network of that exact name, or undefined. */
  findNetwork(name: string, signal?: AbortSignal): Promise<NetworkInfo | undefined>;
  /** Networks carrying every `key=value` (or `key`) label given. */
  listNetworks(labels: string[], signal?: AbortSignal): Promise<NetworkInfo[]>;
  /** Removes a network; one already gone is not an error. */
  removeNetwork(id: string, signal?: AbortSignal): Promise<void>;
  createContainer(spec: ContainerSpec, signal?: AbortSignal): Promise<string>;
  startContainer(id: string, signal?: AbortSignal): Promise<void>;
  /** Waits until the container stops; its exit code. Survives idle connection drops. */
  waitContainer(id: string, signal?: AbortSignal): Promise<{ exitCode: number; error?: string }>;
  inspectContainer(id: string, signal?: AbortSignal): Promise<ContainerState>;
  /** The container's stdout and stderr, demultiplexed; `follow` streams until it exits. */
  containerLogs(id: string, options?: LogOptions): AsyncIterable<LogChunk>;
  /**
   * The same, as it arrives: one array per read from the engine (what that read
   * completed), read no further than the consumer has taken, so memory stays
   * bounded whatever the volume. Breaking out of the loop stops the request.
   */
  logStream(id: string, options?: LogOptions): AsyncIterable<LogChunk[]>;
  /** Sends a signal (default SIGKILL); a container not running is not an error. */
  killContainer(id: string, signal?: string, abort?: AbortSignal): Promise<void>;
  /** Removes a container (force: kill first); one already gone is not an error. */
  removeContainer(id: string, options?: { force?: boolean; signal?: AbortSignal }): Promise<void>;
  /** Containers, running or not, carrying every `key=value` (or `key`) label given. */
  listContainers(labels: string[], signal?: AbortSignal): Promise<ContainerListing[]>;
}

// ---------------------------------------------------------------- connecting

/** Reads DOCKER_HOST (unix:// or plain tcp://); the default socket otherwise. */
export function engineEndpoint(host: string | undefined = process.env.DOCKER_HOST): EngineEndpoint {
  if (host === undefined || host === "") return unixEndpoint(DEFAULT_SOCKET);
  if (host.startsWith("unix://")) return unixEndpoint(host.slice("unix://".length));
  if (host.startsWith("/")) return unixEndpoint(host);
  if (host.startsWith("tcp://") || host.startsWith("http://")) {
    if (process.env.DOCKER_TLS_VERIFY) {
      throw new CpostError("usage", `DOCKER_HOST=${host} with DOCKER_TLS_VERIFY: cpost does not speak TLS to the engine`, {
        hint: "use the engine's Unix socket: DOCKER_HOST=unix:///var/run/docker.sock",
      });
    }
    const url = new URL(host.replace(/^tcp:/, "http:"));
    return { baseUrl: `http://${url.host}`, display: host };
  }
  throw new CpostError("usage", `DOCKER_HOST=${host} is not a unix:// or tcp:// address`, { hint: SOCKET_HINT });
}

function unixEndpoint(path: string): EngineEndpoint {
  return { socketPath: path, baseUrl: "http://docker", display: `unix://${path}` };
}

/**
 * Connects to the engine: checks it answers, negotiates the API version and
 * reads which engine it is and how it lays out cgroups.
 */
export async function connectDocker(options: { host?: string; signal?: AbortSignal; warn?: (message: string) => void } = {}): Promise<DockerClient> {
  const endpoint = engineEndpoint(options.host ?? process.env.DOCKER_HOST);
  const raw = rawRequester(endpoint);
  const version = (await raw("GET", "/version", { signal: options.signal, context: "engine version" }).then(json)) as VersionAnswer;
  const apiVersion = minVersion(version.ApiVersion ?? API_VERSION, API_VERSION);
  if (compareVersions(apiVersion, MIN_API_VERSION) < 0) {
    throw new CpostError("engine", `the engine at ${endpoint.display} speaks API ${apiVersion}; cpost needs ${MIN_API_VERSION} or later`, {
      hint: "upgrade to Docker 20.10 or later (or Podman 3.4 or later)",
    });
  }
  const podman = (version.Components ?? []).some((c) => /podman/i.test(c.Name ?? ""));
  const info = (await raw("GET", `/v${apiVersion}/info`, { signal: options.signal, context: "engine info" }).then(json)) as InfoAnswer;
  const engineInfo: EngineInfo = {
    engine: podman ? "podman" : "docker",
    version: version.Version ?? "unknown",
    apiVersion,
    cgroupDriver: info.CgroupDriver === "systemd" ? "systemd" : "cgroupfs",
    cgroupVersion: info.CgroupVersion === "2" ? 2 : info.CgroupVersion === "1" ? 1 : existsSync("/sys/fs/cgroup/cgroup.controllers") ? 2 : 1,
    runtimes: Object.keys(info.Runtimes ?? {}),
    hostname: info.Name ?? "",
  };
  return defineClient(endpoint, engineInfo, raw, options.warn);
}

interface VersionAnswer {
  Version?: string;
  ApiVersion?: string;
  Components?: Array<{ Name?: string }>;
}
interface InfoAnswer {
  CgroupDriver?: string;
  CgroupVersion?: string;
  Runtimes?: Record<string, unknown>;
  Name?: string;
}

// ---------------------------------------------------------------- requests

interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** 0 = no deadline (long polls, streams). */
  timeoutMs?: number;
  /** What was being done, for messages: "create container for operator x". */
  context: string;
  /** Statuses that are not errors for this call (e.g. 304, 404 on remove). */
  accept?: number[];
}

type Requester = (method: string, path: string, options: RequestOptions) => Promise<Response>;

function rawRequester(endpoint: EngineEndpoint): Requester {
  return async (method, path, options) => {
    const url = new URL(endpoint.baseUrl + path);
    for (const [k, v] of Object.entries(options.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
    const signals = [options.signal, timeoutMs > 0 ? AbortSignal.timeout(timeoutMs) : undefined].filter((s): s is AbortSignal => s !== undefined);
    const headers: Record<string, string> = { ...options.headers };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    let response: Response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        signal: signals.length === 0 ? undefined : AbortSignal.any(signals),
        unix: endpoint.socketPath,
      });
    } catch (cause) {
      throw transportError(endpoint, options, cause);
    }
    if (response.ok || options.accept?.includes(response.status)) return response;
    const message = await engineMessage(response);
    throw new CpostError("engine", `${options.context}: the engine answered ${response.status}: ${message}`, {
      cause: { status: response.status, message },
      hint: hintFor(response.status, message, path),
    });
  };
}

function transportError(endpoint: EngineEndpoint, options: RequestOptions, cause: unknown): CpostError {
  if (options.signal?.aborted) {
    const reason: unknown = options.signal.reason;
    return reason instanceof CpostError ? reason : new CpostError("interrupted", `${options.context}: interrupted`, { cause });
  }
  const error = cause as { name?: string; code?: string; message?: string };
  if (error.name === "TimeoutError") {
    return new CpostError("engine", `${options.context}: the engine at ${endpoint.display} did not answer within ${(options.timeoutMs ?? REQUEST_TIMEOUT_MS) / 1000} s`, {
      cause,
      hint: "check that the engine is healthy (`docker info`), then run cpost again",
    });
  }
  const why =
    error.code === "ENOENT"
      ? "no such socket"
      : error.code === "ECONNREFUSED"
        ? "nothing listens there"
        : error.code === "EACCES"
          ? "permission denied"
          : (error.message ?? String(cause));
  return new CpostError("engine", `cannot reach the container engine at ${endpoint.display} (${why})`, {
    cause,
    hint: error.code === "EACCES" ? "run cpost as a user in the docker group, or as root" : SOCKET_HINT,
  });
}

async function engineMessage(response: Response): Promise<string> {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text) as { message?: string; cause?: string };
    return body.message ?? body.cause ?? text.trim();
  } catch {
    return text.trim() || response.statusText;
  }
}

/** `path`: the endpoint asked; the image hint is only for image endpoints (pull, inspect, create from an image), not any 404 (a wrong DOCKER_HOST answers 404 on /version). */
function hintFor(status: number, message: string, path = "/images/"): string | undefined {
  if (/unauthorized|authentication required|denied|no basic auth credentials/i.test(message)) {
    return "`docker login <registry>` or `docker load` the image locally, then run cpost again";
  }
  const imageEndpoint = /\/images\/|\/containers\/create/.test(path);
  if (/No such image|manifest unknown|not found|does not exist/i.test(message) && status === 404 && imageEndpoint) {
    return "check the image name and tag in the pipeline, or `docker load` the image";
  }
  return undefined;
}

async function json(response: Response): Promise<unknown> {
  return response.json();
}

/** Splits `name:tag` (a registry port's colon is not a tag). */
export function splitImage(image: string): { name: string; tag: string } {
  const at = image.lastIndexOf(":");
  if (at > image.lastIndexOf("/")) return { name: image.slice(0, at), tag: image.slice(at + 1) };
  return { name: image, tag: "latest" };
}

/** The registry host an image is pulled from (`docker.io` for short names). */
export function registryOf(image: string): string {
  const first = image.split("/")[0]!;
  return image.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost") ? first : "docker.io";
}

const HUB_KEYS = ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"];

/**
 * Credentials for a registry from the Docker client config (DOCKER_CONFIG or
 * ~/.docker/config.json), as the X-Registry-Auth header wants them. Helpers
 * (credsStore, credHelpers) are programs cpost does not run: `helper` names
 * one so messages can say so.
 */
export function registryAuth(registry: string, configDir = process.env.DOCKER_CONFIG ?? join(homedir(), ".docker")): { header?: string; helper?: string } {
  let config: { auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>; credsStore?: string; credHelpers?: Record<string, string> };
  try {
    config = JSON.parse(readFileSync(join(configDir, "config.json"), "utf8"));
  } catch {
    return {};
  }
  const wanted = registry === "docker.io" ? HUB_KEYS : [registry];
  const entry = Object.entries(config.auths ?? {}).find(([key]) => wanted.includes(key) || wanted.includes(key.replace(/^https?:\/\//, "").replace(/\/.*$/, "")));
  const helper = config.credHelpers?.[registry] ?? config.credsStore;
  if (!entry) return { helper };
  const [serveraddress, value] = entry;
  let username = value.username;
  let password = value.password;
  if (value.auth) {
    const decoded = Buffer.from(value.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon > 0) {
      username = decoded.slice(0, colon);
      password = decoded.slice(colon + 1);
    }
  }
  const auth = value.identitytoken ? { identitytoken: value.identitytoken, serveraddress } : { username, password, serveraddress };
  if (!value.identitytoken && (username === undefined || password === undefined)) return { helper };
  // URL-safe alphabet with padding: Docker 20.10 decodes with Go's base64.URLEncoding, which wants the padding.
  return { header: Buffer.from(JSON.stringify(auth)).toString("base64").replace(/\+/g, "-").replace(/\//g, "_") };
}

// ---------------------------------------------------------------- logs

/** The most payload the demuxer holds before handing a piece on: whole frames up to this size, longer ones in pieces. */
export const LOG_PIECE_BYTES = 64 * 1024;

/**
 * Parses the engine's multiplexed log stream (no TTY) incrementally: frames
 * of an 8-byte header [stream, 0, 0, 0, size (u32 big-endian)] and `size`
 * bytes, split across chunks anywhere. Stream 0 (stdin) and 1 are stdout, 2
 * is stderr. It holds at most one header and `maxPiece` bytes of payload,
 * whatever the frames' sizes: a frame up to `maxPiece` is handed on whole, a
 * longer one in pieces (all but the first marked `continued`).
 */
export function defineLogDemuxer(onFrame: (chunk: LogChunk) => void, maxPiece = LOG_PIECE_BYTES): { push(bytes: Uint8Array): void; end(): void } {
  const header = new Uint8Array(8);
  let headerBytes = 0;
  let stream: LogChunk["stream"] = "stdout";
  /** Payload of the current frame not yet received. */
  let remaining = 0;
  let inFrame = false;
  let continued = false;
  const piece = new Uint8Array(maxPiece);
  let pieceBytes = 0;
  const emit = (data: Uint8Array) => {
    onFrame(continued ? { stream, data, continued: true } : { stream, data });
    continued = true;
  };
  return {
    push(bytes) {
      let at = 0;
      while (at < bytes.length) {
        if (!inFrame) {
          const take = Math.min(8 - headerBytes, bytes.length - at);
          header.set(bytes.subarray(at, at + take), headerBytes);
          headerBytes += take;
          at += take;
          if (headerBytes < 8) return;
          headerBytes = 0;
          stream = header[0] === 2 ? "stderr" : "stdout";
          remaining = new DataView(header.buffer).getUint32(4);
          inFrame = true;
          continued = false;
          if (remaining > 0) continue;
        }
        const take = Math.min(remaining, bytes.length - at, maxPiece - pieceBytes);
        if (pieceBytes === 0 && take === remaining) {
          emit(bytes.slice(at, at + take)); // the whole rest of the frame is here: no copy through the piece buffer
        } else {
          piece.set(bytes.subarray(at, at + take), pieceBytes);
          pieceBytes += take;
          if (pieceBytes === maxPiece || take === remaining) {
            emit(piece.slice(0, pieceBytes));
            pieceBytes = 0;
          }
        }
        at += take;
        remaining -= take;
        if (remaining === 0) inFrame = false;
      }
    },
    end() {
      // A truncated last frame (the engine went away) is still output the user wants.
      if (pieceBytes > 0) emit(piece.slice(0, pieceBytes));
      pieceBytes = 0;
      headerBytes = 0;
      inFrame = false;
    },
  };
}

// ---------------------------------------------------------------- the client

function defineClient(endpoint: EngineEndpoint, info: EngineInfo, raw: Requester, warn?: (message: string) => void): DockerClient {
  const v = `/v${info.apiVersion}`;
  /** Since when the engine has not answered (NaN: it answers); outages counts the times it went away. */
  let downSince = NaN;
  let outages = 0;
  // Once connected, an engine that stops answering is being restarted: wait for it (a request it never received is safe to send again).
  const request: Requester = async (method, path, options) => {
    for (;;) {
      try {
        const res = await raw(method, v + path, options);
        if (!Number.isNaN(downSince)) {
          warn?.(`the engine at ${endpoint.display} answers again after ${((Date.now() - downSince) / 1000).toFixed(1)} s`);
          downSince = NaN;
        }
        return res;
      } catch (error) {
        // While it starts again, dockerd accepts connections long before it serves them: a timeout then means "still away".
        const stillAway = !Number.isNaN(downSince) && (error as { cause?: { name?: string } }).cause?.name === "TimeoutError";
        if (options.signal?.aborted || !(neverReached(error) || stillAway)) throw error;
        if (Number.isNaN(downSince)) {
          downSince = Date.now();
          outages++;
          warn?.(`the engine at ${endpoint.display} does not answer (${(error as Error).message.replace(/^.*\(|\)$/g, "")}): waiting up to ${RECONNECT_MS / 60_000} min for it to come back`);
        }
        if (Date.now() - downSince > RECONNECT_MS) throw error;
        await Bun.sleep(RECONNECT_POLL_MS);
      }
    }
  };
  const labelFilters = (labels: string[]) => JSON.stringify({ label: labels });
  const id = (s: string) => encodeURIComponent(s);
  const imagePath = (image: string) => image.split("/").map(encodeURIComponent).join("/");

  const client: DockerClient = {
    endpoint,
    info,
    get outages() {
      return outages;
    },

    async ping(signal) {
      await request("GET", "/_ping", { signal, context: "ping" });
    },

    async imageExists(image, signal) {
      const res = await request("GET", `/images/${imagePath(image)}/json`, { signal, context: `inspect image ${image}`, accept: [404] });
      await res.body?.cancel();
      return res.status !== 404;
    },

    async pullImage(image, options = {}) {
      const { name, tag } = splitImage(image);
      const registry = registryOf(name);
      const auth = registryAuth(registry);
      const headers: Record<string, string> = auth.header ? { "X-Registry-Auth": auth.header } : {};
      const context = `pull image ${image}`;
      const helperHint = !auth.header && auth.helper ? ` (your Docker config keeps ${registry} credentials in docker-credential-${auth.helper}, which cpost does not run: \`docker pull ${image}\` first)` : "";
      let res: Response;
      try {
        res = await request("POST", "/images/create", { query: { fromImage: name, tag }, headers, signal: options.signal, timeoutMs: 0, context });
      } catch (error) {
        throw withPullHint(error, image, helperHint);
      }
      // Errors after the 200 arrive inside the JSON-lines progress stream.
      let failure: string | undefined;
      await readLines(res, (line) => {
        let event: { status?: string; id?: string; progress?: string; error?: string; errorDetail?: { message?: string } };
        try {
          event = JSON.parse(line);
        } catch {
          return;
        }
        if (event.error || event.errorDetail) failure ??= event.errorDetail?.message ?? event.error;
        else if (event.status) options.onProgress?.({ status: event.status, id: event.id, progress: event.progress });
      });
      if (failure !== undefined) {
        throw withPullHint(new CpostError("engine", `${context}: ${failure}`, { cause: { status: 200, message: failure }, hint: hintFor(404, failure) }), image, helperHint);
      }
    },

    async createNetwork(name, labels, signal) {
      const res = await request("POST", "/networks/create", {
        body: { Name: name, Labels: labels, CheckDuplicate: true, Driver: "bridge" },
        signal,
        context: `create network ${name}`,
      });
      return ((await res.json()) as { Id: string }).Id;
    },

    async findNetwork(name, signal) {
      const res = await request("GET", "/networks", { query: { filters: JSON.stringify({ name: [name] }) }, signal, context: "list networks" });
      const all = (await res.json()) as NetworkAnswer[];
      // The engine's name filter matches substrings.
      const found = all.find((n) => n.Name === name);
      return found && toNetwork(found);
    },

    async listNetworks(labels, signal) {
      const res = await request("GET", "/networks", { query: { filters: labelFilters(labels) }, signal, context: "list networks" });
      return ((await res.json()) as NetworkAnswer[]).map(toNetwork);
    },

    async removeNetwork(networkId, signal) {
      const res = await request("DELETE", `/networks/${id(networkId)}`, { signal, context: `remove network ${networkId}`, accept: [404] });
      await res.body?.cancel();
    },

    async createContainer(spec, signal) {
      const body: Record<string, unknown> = {
        Image: spec.image,
        Env: Object.entries(spec.env).map(([k, val]) => `${k}=${val}`),
        Labels: spec.labels,
        AttachStdout: false,
        AttachStderr: false,
        Tty: false,
        HostConfig: {
          Mounts: spec.mounts.map((m) => ({ Type: "bind", Source: m.source, Target: m.target, ReadOnly: m.readOnly })),
          NetworkMode: spec.network,
          DeviceRequests: spec.gpus ? [{ Driver: "nvidia", Count: spec.gpus, Capabilities: [["gpu"]] }] : undefined,
          Memory: spec.memoryBytes,
          MemorySwap: spec.memoryBytes,
          NanoCpus: spec.nanoCpus,
        },
      };
      if (spec.cmd) body.Cmd = spec.cmd;
      const res = await request("POST", "/containers/create", {
        query: { name: spec.name },
        body,
        signal,
        context: `create container ${spec.name ?? spec.image}`,
      });
      return ((await res.json()) as { Id: string }).Id;
    },

    async startContainer(containerId, signal) {
      const res = await request("POST", `/containers/${id(containerId)}/start`, { signal, context: `start container ${short(containerId)}`, accept: [304] });
      await res.body?.cancel();
    },

    async waitContainer(containerId, signal) {
      for (;;) {
        try {
          const res = await request("POST", `/containers/${id(containerId)}/wait`, { signal, timeoutMs: 0, context: `wait for container ${short(containerId)}` });
          const answer = (await res.json()) as { StatusCode: number; Error?: { Message?: string } | null };
          return { exitCode: answer.StatusCode, error: answer.Error?.Message || undefined };
        } catch (error) {
          if (signal?.aborted || engineAnswer(error)) throw error;
          // An idle long poll can be dropped by the transport, or the engine restarted: the container tells the truth (once the engine answers again).
          const state = await client.inspectContainer(containerId, signal);
          if (!state.running) return { exitCode: state.exitCode, error: state.error || undefined };
        }
      }
    },

    async inspectContainer(containerId, signal) {
      const res = await request("GET", `/containers/${id(containerId)}/json`, { signal, context: `inspect container ${short(containerId)}` });
      const c = (await res.json()) as ContainerAnswer;
      const ipAddresses: Record<string, string> = {};
      for (const [net, settings] of Object.entries(c.NetworkSettings?.Networks ?? {})) ipAddresses[net] = settings.IPAddress ?? "";
      return {
        id: c.Id,
        name: (c.Name ?? "").replace(/^\//, ""),
        status: c.State?.Status ?? "unknown",
        running: c.State?.Running ?? false,
        pid: c.State?.Pid ?? 0,
        exitCode: c.State?.ExitCode ?? -1,
        oomKilled: c.State?.OOMKilled ?? false,
        error: c.State?.Error ?? "",
        labels: c.Config?.Labels ?? {},
        ipAddresses,
      };
    },

    async *containerLogs(containerId, options = {}) {
      for await (const chunks of client.logStream(containerId, options)) yield* chunks;
    },

    async *logStream(containerId, options = {}) {
      const context = `logs of container ${short(containerId)}`;
      const res = await request("GET", `/containers/${id(containerId)}/logs`, {
        query: { stdout: 1, stderr: 1, follow: options.follow ? 1 : undefined, timestamps: options.timestamps ? 1 : undefined, tail: options.tail },
        signal: options.signal,
        timeoutMs: options.follow ? 0 : REQUEST_TIMEOUT_MS,
        context,
      });
      if (!res.body) return;
      let ready: LogChunk[] = [];
      const demux = defineLogDemuxer((chunk) => ready.push(chunk));
      const reader = res.body.getReader();
      try {
        for (;;) {
          let read: Awaited<ReturnType<typeof reader.read>>;
          try {
            read = await reader.read();
          } catch (error) {
            if (options.signal?.aborted) return;
            throw transportError(endpoint, { context }, error);
          }
          if (read.done) break;
          demux.push(read.value);
          if (ready.length === 0) continue;
          const batch = ready;
          ready = [];
          yield batch;
        }
        demux.end();
        if (ready.length > 0) yield ready;
      } finally {
        // Stopped early (the consumer broke off, or an error): close the request rather than leave the engine sending.
        await reader.cancel().catch(() => undefined);
      }
    },

    async killContainer(containerId, signalName = "SIGKILL", abort) {
      // 409: not running; 404: gone. Both mean there is nothing left to kill.
      const res = await request("POST", `/containers/${id(containerId)}/kill`, { query: { signal: signalName }, signal: abort, context: `kill container ${short(containerId)}`, accept: [404, 409, 500] });
      if (res.status === 500) {
        const message = await engineMessage(res);
        if (!/not running|is not running|no such/i.test(message)) {
          throw new CpostError("engine", `kill container ${short(containerId)}: ${message}`);
        }
      } else await res.body?.cancel();
    },

    async removeContainer(containerId, options = {}) {
      const res = await request("DELETE", `/containers/${id(containerId)}`, {
        query: { force: options.force ? 1 : undefined, v: 1 },
        signal: options.signal,
        context: `remove container ${short(containerId)}`,
        accept: [404, 409],
      });
      if (res.status === 409) {
        // Someone else (`docker rm -f` from outside) is already removing it: it is going away all the same.
        const message = await engineMessage(res);
        if (!/already in progress/i.test(message)) throw new CpostError("engine", `remove container ${short(containerId)}: the engine answered 409: ${message}`, { cause: { status: 409, message } });
      } else await res.body?.cancel();
    },

    async listContainers(labels, signal) {
      const res = await request("GET", "/containers/json", { query: { all: 1, filters: labelFilters(labels) }, signal, context: "list containers" });
      return ((await res.json()) as ContainerListAnswer[]).map((c) => ({ id: c.Id, names: (c.Names ?? []).map((n) => n.replace(/^\//, "")), state: c.State ?? "", labels: c.Labels ?? {} }));
    },
  };
  return client;
}

interface NetworkAnswer {
  Id: string;
  Name: string;
  Labels?: Record<string, string> | null;
}
interface ContainerAnswer {
  Id: string;
  Name?: string;
  State?: { Status?: string; Running?: boolean; Pid?: number; ExitCode?: number; OOMKilled?: boolean; Error?: string };
  Config?: { Labels?: Record<string, string> | null };
  NetworkSettings?: { Networks?: Record<string, { IPAddress?: string }> | null };
}
interface ContainerListAnswer {
  Id: string;
  Names?: string[];
  State?: string;
  Labels?: Record<string, string> | null;
}

function toNetwork(n: NetworkAnswer): NetworkInfo {
  return { id: n.Id, name: n.Name, labels: n.Labels ?? {} };
}

function short(containerId: string): string {
  return /^[0-9a-f]{64}$/.test(containerId) ? containerId.slice(0, 12) : containerId;
}

function withPullHint(error: unknown, image: string, helperHint: string): unknown {
  if (!(error instanceof CpostError) || error.code !== "engine") return error;
  const why = engineAnswer(error)?.message ?? error.message;
  const unreachable = /dial tcp|no such host|i\/o timeout|connection refused|network is unreachable|TLS handshake/i.test(why);
  const base =
    error.hint ??
    (unreachable
      ? `the engine cannot reach the registry of ${image}: \`docker load\` the image (\`docker save\` it where the registry is reachable), or fix the engine's network or proxy`
      : `\`docker login <registry>\` if ${image} is private, or \`docker load\` the image locally`);
  return new CpostError("engine", `image ${image} is not on this machine and pulling it failed: ${why}`, {
    cause: error,
    hint: base + helperHint,
  });
}

/** True for a request the engine never received: its socket is missing or refuses connections (stopped, restarting). */
function neverReached(error: unknown): boolean {
  const code = (error instanceof CpostError ? (error.cause as { code?: string } | undefined)?.code : undefined) ?? "";
  return code === "ENOENT" || code === "ECONNREFUSED";
}

/** The engine's own status and message behind an error, when it answered at all. */
export function engineAnswer(error: unknown): { status: number; message: string } | undefined {
  if (!(error instanceof CpostError)) return undefined;
  const cause = error.cause as { status?: unknown; message?: unknown } | undefined;
  return typeof cause?.status === "number" && typeof cause.message === "string" ? { status: cause.status, message: cause.message } : undefined;
}

async function readLines(res: Response, onLine: (line: string) => void): Promise<void> {
  if (!res.body) return;
  const decoder = new TextDecoder();
  let rest = "";
  for await (const bytes of res.body) {
    rest += decoder.decode(bytes, { stream: true });
    let nl: number;
    while ((nl = rest.indexOf("\n")) >= 0) {
      const line = rest.slice(0, nl).trim();
      rest = rest.slice(nl + 1);
      if (line) onLine(line);
    }
  }
  if (rest.trim()) onLine(rest.trim());
}

function compareVersions(a: string, b: string): number {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function minVersion(a: string, b: string): string {
  return compareVersions(a, b) <= 0 ? a : b;
}
