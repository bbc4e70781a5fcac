/**
 * Which of NVML's GPU processes belong to a container: a pid is the
 * container's when its /proc/<pid>/cgroup names the container id (cgroupfs
 * `/docker/<id>`, systemd `docker-<id>.scope`, Podman `libpod-<id>`, v1 and
 * v2 alike). NVML reports host pids, so cpost must see the host's /proc.
 */
import { readFileSync } from "node:fs";

/**
 * A pid -> owner cache for one container's probe. Each sample is a round:
 * pids are looked up (the cgroup file is read only for a pid not seen
 * before), and at the end of the round pids NVML no longer lists are
 * forgotten, so a reused pid is looked up afresh.
 */
export function defineOwnership(procRoot: string, containerId: string) {
  // pid -> round last seen in, negated for pids of other containers
  const seen = new Map<number, number>();
  let round = 1;
  const forgetStale = (value: number, pid: number) => {
    if (value !== round && value !== -round) seen.delete(pid);
  };
  function lookUp(pid: number): boolean {
    if (containerId === "") return false;
    try {
      return readFileSync(`${procRoot}/${pid}/cgroup`, "utf8").includes(containerId);
    } catch {
      return false; // gone already, or not in this pid namespace
    }
  }
  return {
    nextRound(): void {
      round++;
    },
    owns(pid: number): boolean {
      const last = seen.get(pid);
      const mine = last === undefined ? lookUp(pid) : last > 0;
      seen.set(pid, mine ? round : -round);
      return mine;
    },
    endRound(): void {
      seen.forEach(forgetStale);
    },
  };
}
