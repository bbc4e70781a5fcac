/**
 * Real OpenSearch nodes for the tests and bench/es.ts: the jars Maven
 * resolves into .cache/opensearch/<version>/ (test/opensearch/prepare.sh,
 * once per version), started by the launcher class CpostOpenSearchNode on
 * 127.0.0.1 (or an address of a network namespace) with small heaps.
 *
 *   const node = await startOpenSearch();      // one node, its own cluster, green
 *   node.url; await node.stop();
 *
 * `openSearchTest` is `test` when the node can be had, a failing test in CI
 * when it cannot (with the reason), and a skipped one locally.
 */
import { test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IN_CI, REPO } from "../support.ts";

/** One running node. */
export interface OpenSearchNode {
  name: string;
  /** `http://host:port` of its REST API. */
  url: string;
  /** `host:port` of its transport (for other nodes' seed hosts). */
  transport: string;
  pid: number;
  /** Its data and logs; removed by stop() unless `keepHome`. */
  home: string;
  /** Milliseconds from spawn to the HTTP port answering. */
  startedInMs: number;
  /** SIGTERM, wait for the exit; removes the home. */
  stop(): Promise<void>;
  /** SIGKILL: a node lost, not shut down; its home is removed unless it was given (`home`, to restart on it). */
  kill(): Promise<void>;
}

export interface NodeOptions {
  name?: string;
  cluster?: string;
  /** Heap in MiB (Xms = Xmx). */
  heapMb?: number;
  /** Extra `key=value` settings; a single-node cluster unless `discovery.seed_hosts` is given. */
  settings?: Record<string, string | number | boolean>;
  /** Command prefix, e.g. `["ip", "netns", "exec", "ns1"]`. */
  wrap?: string[];
  /** Data dir to use (and keep): a node restarted on its own data. */
  home?: string;
  /** "quick" (default): C1 only, the fastest start; "full": the JIT a long run (a benchmark) wants. */
  jit?: "quick" | "full";
  /** Wait for this cluster health (default green) before returning; "none": return once HTTP answers. */
  wait?: "green" | "yellow" | "none";
}

/** Resolves and compiles once per process; the classpath, or why there is none. */
let prepared: Promise<{ classpath?: string; reason?: string }> | undefined;
export function prepareOpenSearch(): Promise<{ classpath?: string; reason?: string }> {
  prepared ??= (async () => {
    const proc = Bun.spawn(["bash", join(REPO, "test/opensearch/prepare.sh")], { stdout: "pipe", stderr: "pipe" });
    const timer = setTimeout(() => proc.kill("SIGKILL"), 360_000);
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    clearTimeout(timer);
    if (code === 0) return { classpath: out.trim() };
    return { reason: err.trim().split("\n")[0] || `test/opensearch/prepare.sh exited ${code}` };
  })();
  return prepared;
}

/** GET `url` as JSON, or undefined when nothing answers. */
async function getJson(url: string, timeoutMs = 2000): Promise<unknown> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    return await res.json();
  } catch {
    return undefined;
  }
}

/** Waits until the cluster at `url` has `status` (green: every replica assigned). */
export async function waitForHealth(url: string, status: "green" | "yellow", timeoutMs = 60_000, nodes?: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  const query = `wait_for_status=${status}&timeout=5s${nodes ? `&wait_for_nodes=${nodes}` : ""}&wait_for_no_initializing_shards=true`;
  for (;;) {
    const health = (await getJson(`${url}/_cluster/health?${query}`, 8000)) as { status?: string; timed_out?: boolean } | undefined;
    if (health && health.timed_out === false) return;
    if (performance.now() > deadline) throw new Error(`cluster at ${url} not ${status} within ${timeoutMs} ms: ${JSON.stringify(health)}`);
    await Bun.sleep(200);
  }
}

/** Starts one node; resolves once its HTTP port answers (and the cluster is green, unless told otherwise). */
export async function startOpenSearch(options: NodeOptions = {}): Promise<OpenSearchNode> {
  const { classpath, reason } = await prepareOpenSearch();
  if (!classpath) throw new Error(`no OpenSearch node: ${reason}`);
  const name = options.name ?? "node-1";
  const keepHome = options.home !== undefined;
  const home = options.home ?? mkdtempSync(join(tmpdir(), "cpost-opensearch-"));
  const settings: Record<string, string | number | boolean> = {
    "path.home": home,
    "cluster.name": options.cluster ?? `cpost-test-${process.pid}`,
    "node.name": name,
    "network.host": "127.0.0.1",
    "http.port": 0,
    "transport.port": 0,
    // Small machines: no disk watermark stops writes because a test disk is nearly full.
    "cluster.routing.allocation.disk.threshold_enabled": false,
    "action.auto_create_index": true,
    ...options.settings,
  };
  if (!("discovery.seed_hosts" in settings)) settings["discovery.type"] = "single-node";
  const heap = options.heapMb ?? 512;
  const java = [
    "java", `-Xms${heap}m`, `-Xmx${heap}m`, "-XX:+UseSerialGC", ...(options.jit === "full" ? [] : ["-XX:TieredStopAtLevel=1"]), "-Xss1m",
    "-Djava.awt.headless=true", "-Dlog4j2.disable.jmx=true", "-Dlog4j.shutdownHookEnabled=false",
    "-cp", classpath, "CpostOpenSearchNode", ...Object.entries(settings).map(([k, v]) => `${k}=${v}`),
  ];
  const started = performance.now();
  const proc = Bun.spawn([...(options.wrap ?? []), ...java], { stdout: "pipe", stderr: "pipe", cwd: home });
  let output = "";
  const decoder = new TextDecoder();
  const reading = (async () => {
    for await (const chunk of proc.stdout) output += decoder.decode(chunk);
  })();
  const stderr = new Response(proc.stderr).text();
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setInterval(() => {
      const m = /^http (\S+) transport (\S+)$/m.exec(output);
      if (m) return clearInterval(timer), resolve(m[0]);
      if (proc.exitCode !== null || performance.now() - started > 90_000) {
        clearInterval(timer);
        proc.kill("SIGKILL");
        void stderr.then((err) => reject(new Error(`OpenSearch node ${name} did not start (exit ${proc.exitCode}): ${(output + err).split("\n").filter((l) => !/^\s+at /.test(l)).slice(-15).join("\n")}`)));
      }
    }, 50);
  });
  void reading;
  const [, http, transport] = /^http (\S+) transport (\S+)$/.exec(line)!;
  const url = `http://${http}`;
  const startedInMs = performance.now() - started;
  const exited = proc.exited;
  const node: OpenSearchNode = {
    name, url, transport: transport!, pid: proc.pid, home, startedInMs,
    async stop() {
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
      await exited;
      clearTimeout(timer);
      if (!keepHome) rmSync(home, { recursive: true, force: true });
    },
    async kill() {
      proc.kill("SIGKILL");
      await exited;
      if (!keepHome) rmSync(home, { recursive: true, force: true });
    },
  };
  if (options.wait !== "none") await waitForHealth(url, options.wait ?? "green");
  return node;
}

/** Why no node can be had here, or undefined: decided once, before the tests are declared. */
export const openSearchUnavailable: string | undefined = (await prepareOpenSearch()).reason;

/** A test that needs a real OpenSearch node: skipped with the reason locally, failed in CI. */
export function openSearchTest(name: string, fn: () => Promise<void> | void, timeoutMs = 120_000): void {
  if (openSearchUnavailable === undefined) test(name, fn, timeoutMs);
  else if (IN_CI) test(name, () => { throw new Error(`no OpenSearch node: ${openSearchUnavailable} (CI requires one; run test/setup.sh)`); });
  else test.skip(`${name} (skipped: ${openSearchUnavailable})`, fn);
}
