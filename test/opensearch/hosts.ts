/**
 * Several "hosts" on one machine for the many-hosts test: a network
 * namespace per host with a veth pair to the root namespace and its own
 * address, and one more address in the root namespace for the cluster's
 * nodes to listen on. Traffic stays on these links (no default route, no
 * forwarding): a host reaches the cluster's address and nothing else.
 *
 *   10.N.0.1/32   the cluster (on the root end of a veth whose peer idles in <prefix>-os)
 *   10.N.i.1/30   root end of host i's veth      10.N.i.2/30   host i (in netns <prefix>-h<i>)
 *
 * A host's processes run under `nsenter --net` (not `ip netns exec`, which
 * remounts /sys and would hide the cgroup files cpost reads) and `unshare
 * --uts` with their own hostname, so each cpost names its host. The Docker
 * socket is a file, reachable from every namespace.
 */
import { existsSync, readdirSync } from "node:fs";

/** One host: its namespace, addresses and the root end of its link. */
export interface NetHost {
  name: string;
  netns: string;
  address: string;
  /** The root namespace's end of its veth: `ip link set <link> down` cuts the host off. */
  link: string;
  /** Prefix for a command run on this host with hostname `name`. */
  wrap: string[];
}

export interface NetLab {
  /** Where the cluster's nodes listen. */
  clusterAddress: string;
  hosts: NetHost[];
  cut(host: NetHost): Promise<void>;
  restore(host: NetHost): Promise<void>;
  /** Removes every namespace and link it made; safe to call twice. */
  close(): Promise<void>;
}

/** Why namespaces cannot be made here, or undefined. */
export function netLabUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "network namespaces need root";
  for (const tool of ["ip", "nsenter", "unshare"]) if (!Bun.which(tool)) return `no ${tool} here (iproute2, util-linux)`;
  return undefined;
}

async function sh(argv: string[], allowFail = false): Promise<string> {
  const proc = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0 && !allowFail) throw new Error(`${argv.join(" ")}: exit ${code}: ${err.trim()}`);
  return out;
}

const LAB = /^cpost-c(\d+)-(os|h\d+)$/;
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Removes namespaces and links of labs whose test process is gone (one that was killed before its cleanup). */
export async function removeDeadLabs(): Promise<void> {
  const spaces = existsSync("/var/run/netns") ? readdirSync("/var/run/netns") : [];
  for (const ns of spaces) {
    const m = LAB.exec(ns);
    if (m && !alive(Number(m[1]))) await sh(["ip", "netns", "del", ns], true);
  }
  for (const line of (await sh(["ip", "-o", "link", "show"], true)).split("\n")) {
    const m = /^\d+: (cpc(\d+)[a-z0-9]+)[@:]/.exec(line);
    if (m && !alive(Number(m[2]))) await sh(["ip", "link", "del", m[1]!], true);
  }
}

/** Makes the cluster address and `count` hosts. Throws (after removing what it made) when the kernel refuses. */
export async function startNetLab(count: number): Promise<NetLab> {
  await removeDeadLabs();
  const tag = process.pid;
  const used = await sh(["ip", "-o", "addr", "show"]);
  // A /16 this machine does not use; picked by pid so two labs at once do not collide.
  const octet = [...Array(40).keys()].map((i) => 200 + ((tag + i) % 40)).find((n) => !used.includes(` 10.${n}.`));
  if (octet === undefined) throw new Error("no free 10.x.0.0/16 for the network lab");
  const net = `10.${octet}`;
  const made = { netns: [] as string[], links: [] as string[] };
  const close = async () => {
    for (const link of made.links.splice(0)) await sh(["ip", "link", "del", link], true);
    for (const ns of made.netns.splice(0)) await sh(["ip", "netns", "del", ns], true);
  };
  try {
    const clusterNs = `cpost-c${tag}-os`;
    const clusterLink = `cpc${tag}os`;
    await sh(["ip", "netns", "add", clusterNs]);
    made.netns.push(clusterNs);
    await sh(["ip", "link", "add", clusterLink, "type", "veth", "peer", "name", "eth0", "netns", clusterNs]);
    made.links.push(clusterLink);
    await sh(["ip", "-n", clusterNs, "link", "set", "eth0", "up"]);
    await sh(["ip", "link", "set", clusterLink, "up"]);
    await sh(["ip", "addr", "add", `${net}.0.1/32`, "dev", clusterLink]);
    const hosts: NetHost[] = [];
    for (let i = 1; i <= count; i++) {
      const name = `h${i}`;
      const netns = `cpost-c${tag}-${name}`;
      const link = `cpc${tag}${name}`;
      await sh(["ip", "netns", "add", netns]);
      made.netns.push(netns);
      await sh(["ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns]);
      made.links.push(link);
      await sh(["ip", "addr", "add", `${net}.${i}.1/30`, "dev", link]);
      await sh(["ip", "link", "set", link, "up"]);
      await sh(["ip", "-n", netns, "addr", "add", `${net}.${i}.2/30`, "dev", "eth0"]);
      await sh(["ip", "-n", netns, "link", "set", "eth0", "up"]);
      await sh(["ip", "-n", netns, "link", "set", "lo", "up"]);
      // Only the cluster's address is routed; there is no default route out of a host.
      await sh(["ip", "-n", netns, "route", "add", `${net}.0.1/32`, "via", `${net}.${i}.1`]);
      hosts.push({
        name, netns, address: `${net}.${i}.2`, link,
        wrap: ["nsenter", `--net=/var/run/netns/${netns}`, "unshare", "--uts", "sh", "-c", `hostname ${name} && exec "$0" "$@"`],
      });
    }
    return {
      clusterAddress: `${net}.0.1`,
      hosts,
      cut: async (host) => void (await sh(["ip", "link", "set", host.link, "down"])),
      restore: async (host) => void (await sh(["ip", "link", "set", host.link, "up"])),
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
