/**
 * Spawn-to-exit timing of commands, shared by `npm run build`'s start-up
 * figures (scripts/build.ts) and the start-up benchmark (bench/startup.ts).
 */
import { setPriority } from "node:os";

/** Spawn-to-exit figures of one command, ms. */
export interface StartTimes {
  median: number;
  p90: number;
  min: number;
}

async function spawnMs(argv: string[]): Promise<number> {
  const started = performance.now();
  const proc = Bun.spawn(argv, { stdout: "ignore", stderr: "pipe", env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } });
  const code = await proc.exited;
  const ms = performance.now() - started;
  if (code !== 0) throw new Error(`${argv.join(" ")} exited ${code}: ${await new Response(proc.stderr).text()}`);
  return ms;
}

/**
 * Times each command `runs` times after two warm-up runs (which page the
 * executable in), round-robin, so a burst of load on a shared machine falls
 * on every command alike. Throws if one exits non-zero.
 */
export async function startTimes(commands: string[][], runs: number): Promise<StartTimes[]> {
  const times = commands.map(() => [] as number[]);
  for (let i = 0; i < runs + 2; i++) {
    for (const [k, argv] of commands.entries()) {
      const ms = await spawnMs(argv);
      if (i >= 2) times[k]!.push(ms);
    }
  }
  return times.map((t) => {
    t.sort((a, b) => a - b);
    const at = (q: number) => t[Math.min(t.length - 1, Math.floor(q * t.length))]!;
    return { median: at(0.5), p90: at(0.9), min: t[0]! };
  });
}

/** Median spawn-to-exit time of `argv`, ms. */
export async function medianStartMs(argv: string[], runs: number): Promise<number> {
  return (await startTimes([argv], runs))[0]!.median;
}

/** Raises this process's priority (inherited by what it spawns) where permitted: the machine is shared. */
export function raisePriority(): string {
  try {
    setPriority(0, -20);
    return "at nice -20";
  } catch {
    return "at normal priority (nice -20 not permitted)";
  }
}

