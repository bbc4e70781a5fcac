/**
 * Start-up time and size of the compiled executable (goal: ≤ 50 ms for
 * `cpost --version` and `cpost validate` on this machine), beside baselines
 * measured in the same run: /bin/true (a process spawn), `bun -e 0` (the
 * runtime alone), a compiled one-line program (the floor of any Bun
 * executable), and cpost compiled without bytecode and minify (what the
 * release flags buy). Each figure is the median (and p90) of N spawns after
 * two warm-up runs, the commands taken in turn so that load from others on
 * this shared machine falls on all alike, at nice -20 where permitted; the
 * load average is printed.
 *
 *   node_modules/.bin/bun bench/startup.ts [runs=40]
 *
 * Uses dist/cpost (builds it as `npm run build` does when it is missing).
 */
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { raisePriority, startTimes } from "../scripts/start-times.ts";

const REPO = resolve(import.meta.dir, "..");

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 40);
  const priority = raisePriority();
  const { compile } = await import("../scripts/build.ts");
  const bin = join(REPO, "dist/cpost");
  if (!existsSync(bin)) {
    console.log("dist/cpost is missing: building it with the release flags ...");
    await compile(bin);
  }
  const scratch = mkdtempSync(join(tmpdir(), "cpost-startup-"));
  try {
    const floorSource = join(scratch, "floor.ts");
    writeFileSync(floorSource, 'process.stdout.write("cpost 0.0.0\\n");\n');
    const floor = join(scratch, "floor");
    await compile(floor, { entrypoints: [floorSource] });
    const plain = join(scratch, "cpost-plain");
    await compile(plain, { plain: true });

    const pipeline = join(REPO, "examples/diamond/pipeline.yaml");
    const rows: Array<[string, string[]]> = [
      ["baseline: /bin/true", ["/bin/true"]],
      ["baseline: bun -e 0 (the runtime alone)", [process.execPath, "-e", "0"]],
      ["baseline: a compiled one-line program", [floor]],
      ["cpost --version, no bytecode/minify", [plain, "--version"]],
      ["cpost validate, no bytecode/minify", [plain, "validate", pipeline]],
      ["dist/cpost --version", [bin, "--version"]],
      ["dist/cpost validate diamond", [bin, "validate", pipeline]],
    ];
    console.log(`start-up, ${runs} runs each, ${priority} (load average ${loadavg().map((l) => l.toFixed(2)).join(" ")}, ${navigator.hardwareConcurrency} cores)`);
    const results = new Map<string, number>();
    const figures = await startTimes(rows.map(([, argv]) => argv), runs);
    rows.forEach(([label], k) => {
      const t = figures[k]!;
      results.set(label, t.median);
      console.log(`  ${label.padEnd(42)} median ${t.median.toFixed(1).padStart(6)} ms   p90 ${t.p90.toFixed(1).padStart(6)} ms   min ${t.min.toFixed(1).padStart(6)} ms`);
    });
    const floorMs = results.get("baseline: a compiled one-line program")!;
    for (const label of ["dist/cpost --version", "dist/cpost validate diamond"]) {
      const ms = results.get(label)!;
      console.log(`  ${label}: ${ms.toFixed(1)} ms = ${(ms / floorMs).toFixed(2)}x the compiled one-liner, ${(ms - floorMs).toFixed(1)} ms of cpost's own; goal <= 50 ms: ${ms <= 50 ? "met" : "NOT met"}`);
    }
    const mb = (file: string) => (statSync(file).size / 1e6).toFixed(1);
    console.log(`size: dist/cpost ${mb(bin)} MB; compiled one-liner ${mb(floor)} MB (the Bun runtime); without bytecode/minify ${mb(plain)} MB`);
    for (const arm of [join(REPO, "dist/cpost-linux-arm64")]) if (existsSync(arm)) console.log(`size: dist/cpost-linux-arm64 ${mb(arm)} MB`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

if (import.meta.main) await main();
