/**
 * Shared test support: is a Docker engine here, and the compiled binary.
 * In CI (CI=true) a Docker test never skips: without an engine it fails.
 */
import { test } from "bun:test";
import { chmodSync, utimesSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { connectDocker, type DockerClient } from "../core/engine/docker.ts";
import { compile } from "../scripts/build.ts";

export const REPO = resolve(import.meta.dir, "..");
export const BUN = join(REPO, "node_modules/.bin/bun");
export const TEST_IMAGE = "cpost-test/busybox:1";
export const IN_CI = process.env.CI === "true" || process.env.CI === "1";

/** True when an engine answers `_ping` on that Unix socket within `timeoutMs`. */
export async function pingDocker(socket = "/var/run/docker.sock", timeoutMs = 2000): Promise<boolean> {
  try {
    const res = await fetch("http://docker/_ping", { unix: socket, signal: AbortSignal.timeout(timeoutMs) });
    return res.ok;
  } catch {
    return false;
  }
}

export const hasDocker: boolean = await pingDocker();

let engine: DockerClient | undefined;

/** The engine on /var/run/docker.sock (not DOCKER_HOST), connected on first use and kept. */
export async function docker(): Promise<DockerClient> {
  engine ??= await connectDocker({ host: "unix:///var/run/docker.sock" });
  return engine;
}

/** Containers and networks labelled with that cpost process, and work dirs it left in its TMPDIR. */
export async function leftovers(run: { pid: number; tmp: string }): Promise<string[]> {
  const d = await docker();
  const containers = await d.listContainers([`cpost.pid=${run.pid}`]);
  const networks = await d.listNetworks([`cpost.pid=${run.pid}`]);
  const dirs = existsSync(run.tmp) ? readdirSync(run.tmp).filter((f) => f.startsWith("cpost-")) : [];
  return [...containers.map((c) => `container ${c.names[0]}`), ...networks.map((n) => `network ${n.name}`), ...dirs.map((f) => `dir ${f}`)];
}

/** A test that needs the real Docker engine: skipped with its reason locally, failed in CI. */
export function dockerTest(name: string, fn: () => Promise<void> | void, timeoutMs = 120_000): void {
  if (hasDocker) test(name, fn, timeoutMs);
  else if (IN_CI) test(name, () => { throw new Error("no Docker engine answers on /var/run/docker.sock (CI requires one; run test/setup.sh)"); });
  else test.skip(`${name} (skipped: no Docker engine; run test/setup.sh)`, fn);
}

let binary: Promise<string> | undefined;

/** A hash of everything that goes into the binary: the sources, the lockfile, and this bun. */
function sourceHash(): string {
  const hash = new Bun.CryptoHasher("sha256");
  hash.update(Bun.version);
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      // a test's scratch copy (test/registry-copy.test.ts) and unit tests beside the code are not part of the product
      if (entry.name.startsWith(".") || entry.name.endsWith(".test.ts")) continue;
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.isFile()) hash.update(path).update(readFileSync(path));
    }
  };
  for (const dir of ["core", "collectors", "plugins", "native", "scripts"]) walk(join(REPO, dir));
  for (const file of ["package.json", "package-lock.json", "bunfig.toml", "tsconfig.json"]) {
    if (existsSync(join(REPO, file))) hash.update(file).update(readFileSync(join(REPO, file)));
  }
  return hash.digest("hex").slice(0, 16);
}

/**
 * Builds the single executable once for these sources, as `npm run build`
 * builds the release (scripts/build.ts), so the tests test what ships. Kept
 * in .cache/test-bin/<hash of the sources>/ (110 MB; older builds are
 * removed), so test processes and runs share it.
 */
export function compiledBinary(): Promise<string> {
  binary ??= (async () => {
    const root = join(REPO, ".cache/test-bin");
    const dir = join(root, sourceHash());
    const out = join(dir, "cpost");
    mkdirSync(root, { recursive: true });
    for (const old of readdirSync(root)) {
      const path = join(root, old);
      // Another test process may be running its own build (other sources, as while files are edited):
      // a build is removed once unused for 20 minutes, not the moment sources change.
      const stale = Date.now() - statSync(path).mtimeMs > 20 * 60_000;
      if (path !== dir && stale) rmSync(path, { recursive: true, force: true });
    }
    if (existsSync(out)) {
      utimesSync(dir, new Date(), new Date()); // in use: not stale for other test processes
      return out;
    }
    const building = mkdtempSync(join(root, ".build-"));
    chmodSync(building, 0o755);
    try {
      await compile(join(building, "cpost"));
    } catch (error) {
      rmSync(building, { recursive: true, force: true });
      throw error;
    }
    // renamed into place whole: another test process sees no binary or a complete one
    try {
      renameSync(building, dir);
    } catch {
      rmSync(building, { recursive: true, force: true });
    }
    return out;
  })();
  return binary;
}

/** Polls `check` until it returns a value (not undefined) or the deadline passes. */
export async function until<T>(what: string, check: () => T | undefined | Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(20);
  }
}

/** Runs a command to completion and returns its exit code and output. */
export async function runProcess(
  argv: string[],
  options: { cwd?: string; env?: Record<string, string | undefined>; stdin?: "ignore" | "pipe"; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = Bun.spawn(argv, {
    cwd: options.cwd ?? REPO,
    env: { ...process.env, ...options.env },
    stdin: options.stdin ?? "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), options.timeoutMs ?? 120_000);
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** Runs cpost from source (`bun core/main.ts ...`). */
export function cpostSource(args: string[], options: Parameters<typeof runProcess>[1] = {}) {
  return runProcess([BUN, join(REPO, "core/main.ts"), ...args], options);
}

/**
 * One test file's temp dir, numbered scratch dirs in it, and the pids of the
 * cpost processes it started. `cleanup()` (for afterAll) removes every
 * container and network labelled with those pids (what a run the test had
 * to kill left behind), then the dir.
 */
export function defineTestScratch(prefix: string, pids: number[] = []) {
  const temp = mkdtempSync(join(tmpdir(), `cpost-${prefix}-`));
  let counter = 0;
  return {
    temp,
    pids,
    scratch(): string {
      const dir = join(temp, `t${++counter}`);
      mkdirSync(dir, { recursive: true });
      return dir;
    },
    async cleanup(): Promise<void> {
      if (hasDocker && pids.length > 0) {
        const d = await docker();
        for (const pid of pids) {
          for (const c of await d.listContainers([`cpost.pid=${pid}`]).catch(() => [])) await d.removeContainer(c.id, { force: true });
          for (const n of await d.listNetworks([`cpost.pid=${pid}`]).catch(() => [])) await d.removeNetwork(n.id);
        }
      }
      rmSync(temp, { recursive: true, force: true });
    },
  };
}
