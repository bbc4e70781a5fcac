/**
 * Containers for the collector, sampler and accuracy tests, started straight
 * through the Engine API (fetch over the Unix socket), labelled per test
 * process so afterAll removes exactly its own. Also Docker's own stats
 * endpoint, the comparison the accuracy tests make.
 */
import { TEST_IMAGE } from "./support.ts";
export { until } from "./support.ts";
import type { Target } from "../core/contracts/types.ts";

const SOCKET = "/var/run/docker.sock";
const LABEL = "cpost.test.collectors";
/** This test process's label value. */
export const MINE = `${process.pid}-${Date.now()}`;

async function api(method: string, path: string, body?: unknown): Promise<Response> {
  const res = await fetch(`http://docker/v1.41${path}`, {
    method,
    unix: SOCKET,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok && res.status !== 304) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return res;
}

/** A started test container. */
export interface Started {
  id: string;
  /** performance.now() when the engine's start call returned. */
  startedMs: number;
  target: Target;
}

/** Creates and starts a container of the test image running `cmd`; `memoryBytes` sets a limit, `binds` are `host:container` mounts. */
export async function startContainer(cmd: string[], options: { memoryBytes?: number; operator?: string; binds?: string[] } = {}): Promise<Started> {
  const info = (await (await api("GET", "/info")).json()) as { CgroupDriver: "cgroupfs" | "systemd" };
  const created = (await (
    await api("POST", "/containers/create", {
      Image: TEST_IMAGE,
      Cmd: cmd,
      Labels: { [LABEL]: MINE },
      HostConfig: { Memory: options.memoryBytes ?? 0, Binds: options.binds ?? [] },
    })
  ).json()) as { Id: string };
  await api("POST", `/containers/${created.Id}/start`);
  const startedMs = performance.now();
  // as the runner does: watch right after start, from the id; the pid is optional
  return {
    id: created.Id,
    startedMs,
    target: { kind: "container", containerId: created.Id, pid: 0, engine: "docker", cgroupDriver: info.CgroupDriver, operator: options.operator ?? "test" },
  };
}

/** The host pid of the container's init process, as the engine reports it. */
export async function pidOf(id: string): Promise<number> {
  return ((await (await api("GET", `/containers/${id}/json`)).json()) as { State: { Pid: number } }).State.Pid;
}

/** Waits for the container to exit (the body, not the headers: the engine sends those at once) and returns its exit code. */
export async function waitContainer(id: string): Promise<number> {
  const body = (await (await api("POST", `/containers/${id}/wait`)).json()) as { StatusCode: number };
  return body.StatusCode;
}

/** The container's stdout, demultiplexed from the engine's 8-byte-header frames. */
export async function stdoutOf(id: string): Promise<string> {
  const bytes = new Uint8Array(await (await api("GET", `/containers/${id}/logs?stdout=1&stderr=0`)).arrayBuffer());
  let out = "";
  for (let at = 0; at + 8 <= bytes.length; ) {
    const size = new DataView(bytes.buffer, bytes.byteOffset + at + 4, 4).getUint32(0);
    if (bytes[at] === 1) out += new TextDecoder().decode(bytes.subarray(at + 8, at + 8 + size));
    at += 8 + size;
  }
  return out;
}

/** Docker's own stats endpoint, once (`stream=false&one-shot=true`), with when it was read. */
export interface DockerStats {
  read: string;
  cpu_stats: { cpu_usage: { total_usage: number } };
  memory_stats: { usage?: number; stats?: Record<string, number> };
  blkio_stats: { io_service_bytes_recursive: Array<{ op: string; value: number }> | null };
}
export async function dockerStats(id: string): Promise<DockerStats> {
  return (await (await api("GET", `/containers/${id}/stats?stream=false&one-shot=true`)).json()) as DockerStats;
}

/** Nanoseconds since the epoch of Docker's RFC 3339 `read` time (which carries nanoseconds). */
export function readTimeNs(read: string): number {
  const match = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(read);
  if (!match) throw new Error(`unexpected time ${read}`);
  return Date.parse(`${match[1]}${match[3]}`) * 1e6 + Number((match[2] ?? "0").padEnd(9, "0").slice(0, 9));
}

/** Removes a container (and its cgroup), ignoring one already gone. */
export async function removeContainer(id: string): Promise<void> {
  await fetch(`http://docker/v1.41/containers/${id}?force=true`, { method: "DELETE", unix: SOCKET }).catch(() => undefined);
}

/** Removes every container this test process started. */
export async function removeMine(): Promise<void> {
  const filters = encodeURIComponent(JSON.stringify({ label: [`${LABEL}=${MINE}`] }));
  const res = await fetch(`http://docker/v1.41/containers/json?all=1&filters=${filters}`, { unix: SOCKET }).catch(() => undefined);
  if (!res?.ok) return;
  for (const c of (await res.json()) as Array<{ Id: string }>) await removeContainer(c.Id);
}

