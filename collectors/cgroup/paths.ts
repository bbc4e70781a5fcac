/**
 * Where a container's cgroup lives: the host's cgroup layout (v1, v2 or
 * hybrid, detected at run time from the files themselves) and the container's
 * directory in it, from its pid when known, else from its id, engine and the
 * engine's cgroup driver. Roots are configurable so fixture trees stand in
 * for /sys/fs/cgroup and /proc in tests.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Target, Unavailable } from "../../core/contracts/types.ts";

/** Where to look: the cgroup filesystem and /proc. */
export interface CgroupRoots {
  /** Default: env CPOST_CGROUP_ROOT, else /sys/fs/cgroup. */
  cgroupRoot?: string;
  /** Default: env CPOST_PROC_ROOT, else /proc. */
  procRoot?: string;
}

/** The v1 controllers cpost reads. */
export type V1Controller = "cpu" | "cpuacct" | "memory" | "blkio" | "pids";
const V1_CONTROLLERS: readonly V1Controller[] = ["cpu", "cpuacct", "memory", "blkio", "pids"];

/** A container's cgroup directories, absolute. */
export interface ContainerCgroup {
  version: 1 | 2;
  /** v1: one directory per controller found. */
  v1: Partial<Record<V1Controller, string>>;
  /** v2: the container's directory; on a hybrid v1 host, its directory in the unified tree (PSI), if any. */
  unified?: string;
  /** The path inside the hierarchy, e.g. `/docker/<id>`, for messages. */
  relative: string;
}

/** Resolves the roots, filling defaults from the environment. */
export function resolveRoots(roots: CgroupRoots = {}): Required<CgroupRoots> {
  return {
    cgroupRoot: roots.cgroupRoot ?? process.env.CPOST_CGROUP_ROOT ?? "/sys/fs/cgroup",
    procRoot: roots.procRoot ?? process.env.CPOST_PROC_ROOT ?? "/proc",
  };
}

interface Layout {
  version: 1 | 2;
  /** v1 controller -> its mount directory. */
  mounts: Partial<Record<V1Controller, string>>;
  /** The cgroup2 mount: the root on v2, `unified` on a hybrid host. */
  unified?: string;
}

/** Reads the host's cgroup layout under `cgroupRoot`; a string says why there is none. */
export function detectLayout(cgroupRoot: string): Layout | string {
  if (existsSync(join(cgroupRoot, "cgroup.controllers"))) return { version: 2, mounts: {}, unified: cgroupRoot };
  let entries: string[];
  try {
    entries = readdirSync(cgroupRoot);
  } catch {
    return `no cgroup filesystem at ${cgroupRoot}`;
  }
  const mounts: Partial<Record<V1Controller, string>> = {};
  for (const controller of V1_CONTROLLERS) {
    // co-mounted controllers sit in one directory such as "cpu,cpuacct"
    const dir = entries.find((e) => e === controller) ?? entries.find((e) => e.split(",").includes(controller));
    if (dir) mounts[controller] = join(cgroupRoot, dir);
  }
  if (Object.keys(mounts).length === 0) return `no cgroup v1 controllers or cgroup v2 files under ${cgroupRoot}`;
  const unified = join(cgroupRoot, "unified");
  return { version: 1, mounts, unified: existsSync(join(unified, "cgroup.controllers")) ? unified : undefined };
}

/** Where engines put a container's cgroup, relative to a hierarchy's root, most likely first. */
export function candidatePaths(target: Target): string[] {
  const id = target.containerId;
  const docker = { cgroupfs: `/docker/${id}`, systemd: `/system.slice/docker-${id}.scope` };
  const podman = { cgroupfs: `/libpod_parent/libpod-${id}`, systemd: `/machine.slice/libpod-${id}.scope` };
  const byDriver = target.engine === "podman" ? podman : docker;
  const other = target.engine === "podman" ? docker : podman;
  const first = target.cgroupDriver === "systemd" ? [byDriver.systemd, byDriver.cgroupfs] : [byDriver.cgroupfs, byDriver.systemd];
  return [...first, other.cgroupfs, other.systemd];
}

/** The paths a process's /proc/<pid>/cgroup names: v1 controller -> path, and "" for the unified one. */
function pathsOfPid(procRoot: string, pid: number): Map<string, string> {
  const out = new Map<string, string>();
  let text: string;
  try {
    text = readFileSync(join(procRoot, String(pid), "cgroup"), "utf8");
  } catch {
    return out;
  }
  for (const line of text.split("\n")) {
    const first = line.indexOf(":");
    const second = line.indexOf(":", first + 1);
    if (first < 0 || second < 0) continue;
    const path = line.slice(second + 1);
    for (const controller of line.slice(first + 1, second).split(",")) out.set(controller, path);
  }
  return out;
}

/** Finds a container's (or, for a host target, the root) cgroup directories. */
export function findContainerCgroup(target: Target, roots: CgroupRoots = {}): ContainerCgroup | Unavailable {
  const { cgroupRoot, procRoot } = resolveRoots(roots);
  const layout = detectLayout(cgroupRoot);
  if (typeof layout === "string") return { unavailable: layout };
  // the hierarchy that must hold the container: memory on v1, the unified tree on v2
  const anchor = layout.version === 2 ? layout.unified! : layout.mounts.memory ?? Object.values(layout.mounts)[0]!;
  // A pid's own paths serve engines' custom parents, but only paths naming the
  // container: a pid read as its container exits reports "/" (the host's
  // root), and a pid reused by then belongs to someone else's cgroup.
  const named = (path: string): boolean => (target.kind === "host" ? true : path.includes(target.containerId) && target.containerId !== "");
  const fromPid = new Map([...(target.pid > 0 ? pathsOfPid(procRoot, target.pid) : new Map<string, string>())].filter(([, path]) => named(path)));
  const pidPath = layout.version === 2 ? fromPid.get("") : fromPid.get("memory") ?? fromPid.get(V1_CONTROLLERS.find((c) => fromPid.has(c)) ?? "");
  const candidates = target.kind === "host" ? [""] : [...candidatePaths(target), ...(pidPath ? [pidPath] : [])];
  const relative = candidates.find((p) => existsSync(join(anchor, p)));
  if (relative === undefined) {
    // Where the engine will make it, in every hierarchy read here: runc makes one controller's
    // directory after the other, so a probe opened once all exist sees the whole container.
    const expected = candidates[0]!;
    const dirs = layout.version === 2 ? [join(anchor, expected)] : Object.values(layout.mounts).map((mount) => join(mount, expected));
    return {
      unavailable: `no cgroup for container ${target.containerId.slice(0, 12)} under ${anchor}: it has exited already, or its engine put it elsewhere (looked at ${candidates.join(", ")})`,
      ...(target.kind === "container" && target.containerId !== "" ? { waitFor: [...new Set(dirs)] } : {}),
    };
  }
  const v1: Partial<Record<V1Controller, string>> = {};
  if (layout.version === 1) {
    for (const [controller, mount] of Object.entries(layout.mounts) as Array<[V1Controller, string]>) {
      const path = [join(mount, relative), ...(fromPid.has(controller) ? [join(mount, fromPid.get(controller)!)] : [])].find((p) => existsSync(p));
      if (path) v1[controller] = path;
    }
  }
  const unified = layout.unified
    ? [join(layout.unified, relative), ...(fromPid.has("") ? [join(layout.unified, fromPid.get("")!)] : [])].find((p) => existsSync(p))
    : undefined;
  return { version: layout.version, v1, unified, relative: relative || "/" };
}

/** Total memory of the host in bytes (what docker stats shows as the limit of an unlimited container). */
export function hostMemoryBytes(procRoot: string): number {
  try {
    const match = /^MemTotal:\s+(\d+) kB/m.exec(readFileSync(join(procRoot, "meminfo"), "utf8"));
    return match ? Number(match[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}
