/**
 * Shared test support: is a Docker engine here, and the compiled binary.
 * In CI (CI=true) a Docker test never skips: without an engine it fails.
 */
import { test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { compileArgv } from "../scripts/build.ts";

export const REPO = resolve(import.meta.dir, "..");
export const BUN = join(REPO, "node_modules/.bin/bun");
export const TEST_IMAGE = "cpost-test/busybox:1";
export const IN_CI = process.env.CI === "true" || process.env.CI === "1";

async function pingDocker(): Promise<boolean> {
  try {
    const res = await fetch("http://docker/_ping", { unix: "/var/run/docker.sock", signal: AbortSignal.timeout(2000) });
    return res.ok;
  } catch {
    return false;
  }
}

export const hasDocker: boolean = await pingDocker();

/** A test that needs the real Docker engine: skipped with its reason locally, failed in CI. */
export function dockerTest(name: string, fn: () => Promise<void> | void, timeoutMs = 120_000): void {
  if (hasDocker) test(name, fn, timeoutMs);
  else if (IN_CI) test(name, () => { throw new Error("no Docker engine answers on /var/run/docker.sock (CI requires one; run test/setup.sh)"); });
  else test.skip(`${name} (skipped: no Docker engine; run test/setup.sh)`, fn);
}

let binary: Promise<string> | undefined;

/** Builds the single executable once per test process, in a temp dir; returns its path. */
export function compiledBinary(): Promise<string> {
  binary ??= (async () => {
    const out = join(mkdtempSync(join(tmpdir(), "cpost-bin-")), "cpost");
    // built as `npm run build` builds the release (scripts/build.ts), so the tests test what ships
    const proc = Bun.spawn(compileArgv(out), {
      cwd: REPO,
      stdout: "pipe",
      stderr: "pipe",
    });
    const code = await proc.exited;
    if (code !== 0) throw new Error(`bun build --compile failed: ${await new Response(proc.stderr).text()}`);
    return out;
  })();
  return binary;
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
