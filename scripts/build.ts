/**
 * `npm run build`: the release executables, one per platform cpost runs on
 * (`bun build --compile --target=bun-linux-x64 | bun-linux-arm64`), into
 * dist/cpost-linux-<arch>, and dist/cpost for this machine. Prints each
 * one's size and its start-up time for `--version` and `validate` (an
 * executable of another architecture is timed only where qemu-user can run
 * it, and then says it was emulated).
 *
 * A cross build fetches that platform's Bun runtime from the npm registry
 * (then cached by Bun). Where it cannot be fetched the build says so and goes
 * on: only the executable for this machine is required (CI runs dist/cpost).
 *
 *   node_modules/.bin/bun scripts/build.ts [--no-timing]
 */
import { existsSync, linkSync, mkdirSync, openSync, readSync, closeSync, rmSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { medianStartMs, raisePriority } from "./start-times.ts";

/** The repository root. */
export const REPO = resolve(import.meta.dir, "..");
/** The sampler's worker thread is a second entrypoint (see core/sampling/sampler-worker.ts); in the binary it lies at sampling/sampler-worker relative to the entry (core/sampling/sampler.ts's workerUrl). */
export const ENTRYPOINTS = ["core/main.ts", "core/sampling/sampler-worker.ts"];
/** Release platforms: dist name -> Bun's --target. */
export const TARGETS = { "linux-x64": "bun-linux-x64", "linux-arm64": "bun-linux-arm64" } as const;
/** A release platform, as dist/cpost-<platform> names it. */
export type Platform = keyof typeof TARGETS;

/** What compileArgv builds: for another platform, other entrypoints, or `plain` (without the release flags, bench/startup.ts's comparison). */
export interface CompileOptions {
  platform?: Platform;
  entrypoints?: string[];
  plain?: boolean;
}

/**
 * argv of one release build. Bytecode (ESM) halves the start-up time of the
 * bundle's parse; minify keeps it smaller. The tests' compiledBinary() builds
 * with the same argv, so they test what ships.
 */
export function compileArgv(outfile: string, options: CompileOptions = {}): string[] {
  const release = options.plain ? [] : ["--minify", "--bytecode", "--format=esm"];
  const target = options.platform ? [`--target=${TARGETS[options.platform]}`] : [];
  const entrypoints = options.entrypoints ?? ENTRYPOINTS.map((e) => join(REPO, e));
  return [process.execPath, "build", "--compile", ...release, ...target, ...entrypoints, "--outfile", outfile];
}

/** Runs the build of compileArgv(outfile, options); throws with bun's stderr when it fails. */
export async function compile(outfile: string, options: CompileOptions = {}): Promise<void> {
  const proc = Bun.spawn(compileArgv(outfile, options), { cwd: REPO, stdout: "pipe", stderr: "pipe" });
  if ((await proc.exited) !== 0) throw new Error(`bun build --compile failed: ${await new Response(proc.stderr).text()}`);
}

/** The platform of this machine, when it is one cpost releases for. */
export function hostPlatform(): Platform | undefined {
  const name = `${process.platform}-${process.arch}`;
  return name in TARGETS ? (name as Platform) : undefined;
}

/** ELF e_machine of a file: "x86-64", "aarch64", or what it is not. */
function machineOf(file: string): string {
  const header = Buffer.alloc(20);
  const fd = openSync(file, "r");
  try {
    readSync(fd, header, 0, 20, 0);
  } finally {
    closeSync(fd);
  }
  if (header.readUInt32BE(0) !== 0x7f454c46) return "not an ELF file";
  return ({ 0x3e: "x86-64", 0xb7: "aarch64" } as Record<number, string>)[header.readUInt16LE(18)] ?? `machine 0x${header.readUInt16LE(18).toString(16)}`;
}

/** How to run an executable of `platform` here: directly, under qemu-user, or not at all. */
function runnerFor(platform: Platform): string[] | undefined {
  if (platform === hostPlatform()) return [];
  const qemu = platform === "linux-arm64" ? ["qemu-aarch64-static", "qemu-aarch64"] : ["qemu-x86_64-static", "qemu-x86_64"];
  const found = qemu.map((q) => Bun.which(q)).find(Boolean);
  if (!found) return undefined;
  // the executable is dynamically linked: qemu needs that platform's loader and libc (Debian: libc6-arm64-cross)
  const libc = platform === "linux-arm64" ? "/usr/aarch64-linux-gnu" : "/usr/x86_64-linux-gnu";
  return existsSync(libc) ? [found, "-L", libc] : [found];
}

async function build(platform: Platform, dist: string): Promise<{ ok: true; file: string } | { ok: false; why: string }> {
  const file = join(dist, `cpost-${platform}`);
  rmSync(file, { force: true });
  const proc = Bun.spawn(compileArgv(file, { platform }), { cwd: REPO, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0 || !existsSync(file)) return { ok: false, why: (err || out).trim().split("\n").slice(-3).join(" / ") || `bun build exited ${code}` };
  return { ok: true, file };
}

async function main(): Promise<number> {
  const timing = !process.argv.includes("--no-timing");
  if (timing) raisePriority(); // the machine may be shared: fewer of others' bursts in the figures
  const dist = join(REPO, "dist");
  mkdirSync(dist, { recursive: true });
  const host = hostPlatform();
  let hostBuilt = false;
  for (const platform of Object.keys(TARGETS) as Platform[]) {
    const started = performance.now();
    const result = await build(platform, dist);
    if (!result.ok) {
      console.log(`cpost-${platform}: NOT BUILT: ${result.why}`);
      if (platform !== host) console.log(`  (a cross build needs Bun's ${TARGETS[platform]} runtime from the npm registry; only this machine's executable is required)`);
      continue;
    }
    const mb = statSync(result.file).size / 1e6;
    console.log(`dist/cpost-${platform}: ${mb.toFixed(1)} MB, ${machineOf(result.file)}, built in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    if (platform === host) {
      rmSync(join(dist, "cpost"), { force: true });
      linkSync(result.file, join(dist, "cpost"));
      hostBuilt = true;
    }
    if (!timing) continue;
    const runner = runnerFor(platform);
    if (!runner) {
      console.log(`  start-up: not measured: an ${machineOf(result.file)} executable cannot run on this ${process.arch} machine (with qemu-user-static and libc6-arm64-cross installed it is timed under emulation)`);
      continue;
    }
    const emulated = runner.length > 0 ? ` (emulated by ${runner[0]}: not the speed of a real ${platform} machine)` : "";
    const runs = runner.length > 0 ? 5 : 15;
    try {
      const version = await medianStartMs([...runner, result.file, "--version"], runs);
      const validate = await medianStartMs([...runner, result.file, "validate", join(REPO, "examples/diamond/pipeline.yaml")], runs);
      console.log(`  start-up, median of ${runs}: --version ${version.toFixed(1)} ms, validate ${validate.toFixed(1)} ms${emulated}`);
    } catch (error) {
      console.log(`  start-up: FAILED to run${emulated}: ${(error as Error).message.trim()}`);
      if (platform === host) return 1;
    }
  }
  if (!host) console.log(`this machine (${process.platform}-${process.arch}) is not a release platform: no dist/cpost`);
  else if (!hostBuilt) return 1;
  else console.log(`dist/cpost -> dist/cpost-${host}`);
  return 0;
}

if (import.meta.main) process.exitCode = await main();
