/**
 * `cpost size`, `--repeat` and sizing from recordings: the recommendations
 * with their basis and notes, the spread over runs, `--apply` from recorded
 * runs (only what stands on firm ground is written), `cpost replay` under
 * another policy, usage errors, and a live `cpost run --repeat 2` that keeps
 * every run's files.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readRecording, replayInto, type Recording } from "../core/sinks/recording.ts";
import { defineSizingObserver, describeCpuLimit, formatRecommendations, formatSamplerViews, formatSpread } from "../core/run/repeat.ts";
import { CPOST_POLICY, PERCENTILE_POLICY, recommend, round3 } from "../core/sizing/sizing.ts";
import { loadFixtureRun, recordTo, RUNS_DIR } from "./fixtures/runs/fixture-run.ts";
import { cpostSource, dockerTest } from "./support.ts";

const dirs: string[] = [];
const tempDir = () => {
  const dir = mkdtempSync(join(tmpdir(), "cpost-size-"));
  dirs.push(dir);
  return dir;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));


/** The oom-killed fixture with steady's memory readings multiplied by `factor`: a second, different run. */
function scaledRun(factor: number): Recording {
  const run = loadFixtureRun("oom-killed");
  for (const batch of run.operators.find((op) => op.operator?.name === "steady")!.batches) {
    const width = batch.columns.length;
    // Usage and working set alike: the need grows with them.
    for (const key of ["memory.usage_bytes", "memory.working_set_bytes"]) {
      const memory = batch.columns.findIndex((c) => c.key === key);
      for (let r = 0; r < batch.rows; r++) batch.values[r * width + memory]! *= factor;
    }
  }
  return run;
}

interface OracleOperator {
  cpu: number;
  memory: number;
  evidence: { cpu: { statistic: string; value: number; errorPercent: number; windowMs: number; rows: number }; memory: { valueMb: number; rows: number } };
}
const oracle = JSON.parse(readFileSync(join(RUNS_DIR, "oom-killed", "expected", "sizing.json"), "utf8")) as { policies: Array<{ flags: Record<string, string>; operators: Record<string, OracleOperator> }> };
const PIPELINE = readFileSync(join(RUNS_DIR, "oom-killed", "pipeline.yaml"), "utf8");

describe("cpost size from recordings", () => {
  test("prints each operator's requests, what they rest on, and the OOM / retry / throttling notes", async () => {
    const dir = tempDir();
    const recording = await recordTo(loadFixtureRun("oom-killed"), dir);
    writeFileSync(join(dir, "pipeline.yaml"), PIPELINE);
    const run = await cpostSource(["size", join(dir, "pipeline.yaml"), "--from", recording]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const want = oracle.policies[0]!.operators;
    const line = (name: string, tail = "") => {
      const { cpu, memory, evidence } = want[name]!;
      // These operators lived under a second: each one's window is its whole run.
      const window = `${(evidence.cpu.windowMs / 1000).toFixed(3)} s (its whole run)`;
      return `  ${name.padEnd(7)}  cpu: ${cpu}, memory: ${memory}   from max ${window} CPU ${evidence.cpu.value.toFixed(3)} % ± ${evidence.cpu.errorPercent.toFixed(3)} and max working set ${evidence.memory.valueMb.toFixed(3)} MB over ${evidence.memory.rows} readings${tail}`;
    };
    const recorded = readRecording(recording).operators;
    const throttled = recorded[3]!.summary!.recommendation.evidence!.throttled!;
    // Each operator's throttle-aware limit after its notes, and the slower samplers' table at the end.
    const limit = (i: number) => {
      const rec = recorded[i]!.summary!.recommendation;
      return `           limit: ${describeCpuLimit(rec.evidence!.cpuLimit!, rec.cpu)}`;
    };
    expect(limit(3)).toContain("[LOWER BOUND: the trace was throttled]");
    const sized = recorded.map((op) => ({ operator: op.result!.operator, result: op.result!, summary: op.summary!, peaks: [] }));
    expect(run.stdout).toBe(
      [
        "",
        "Recommended requests (policy cpost: cpu = max(1, ceil((max 1 s cpu% - error) / 100)); memory = max(256, ceil((max working set MB + 100) / 256) * 256))",
        line("steady"),
        limit(0),
        line("hog", "  [LOWER BOUND: OOM killed]  (failed, exit code 137)"),
        "           - lower bound: OOM killed under a memory limit of 96 MB; retry with more (--retry-oom doubles it: next 192 MB)",
        limit(1),
        line("retried"),
        "           - OOM killed at 48 MB; succeeded with 96 MB",
        limit(2),
        line("capped", "  [LOWER BOUND: CPU throttled]"),
        `           - lower bound: CPU throttled ${throttled.periods} times (${throttled.seconds} s) under a CPU limit of 0.5 cores; retry with a higher cpu request, or without --enforce-requests`,
        limit(3),
        "",
      ].join("\n") + formatSamplerViews(sized),
    );
    expect(formatSamplerViews(sized)).toContain("| steady     | cpost (fine)                |");
  });

  test("--apply writes only what stands on firm ground, prints the diff; a second --apply leaves the file alone", async () => {
    const dir = tempDir();
    const recording = await recordTo(loadFixtureRun("oom-killed"), dir);
    const file = join(dir, "pipeline.yaml");
    const commented = PIPELINE.replace("  - name: hog\n", "  # the hog needs more than its limit\n  - name: hog\n");
    writeFileSync(file, commented);
    const run = await cpostSource(["size", file, "--from", recording, "--apply"], { cwd: dir });
    expect(run.code).toBe(0);
    const want = oracle.policies[0]!.operators;
    // steady gets a requests block; hog (OOM-killed) nothing; retried its memory and a cpu; capped (throttled) only memory.
    const expected = commented
      .replace(`"0.5"]}\n    input: [{path: /input}]\n  # the hog`, `"0.5"]}\n    input: [{path: /input}]\n    requests:\n      cpu: ${want.steady!.cpu}\n      memory: ${want.steady!.memory}\n  # the hog`)
      .replace("requests: {memory: 48}", `requests: {memory: ${want.retried!.memory}, cpu: ${want.retried!.cpu}}`)
      .replace("requests: {cpu: 0.5}", `requests: {cpu: 0.5, memory: ${want.capped!.memory}}`);
    expect(expected).not.toBe(commented);
    expect(readFileSync(file, "utf8")).toBe(expected);
    expect(run.stdout).toContain("\n--- a/pipeline.yaml\n+++ b/pipeline.yaml\n@@ ");
    expect(run.stdout).toContain(`\n-    requests: {memory: 48}\n+    requests: {memory: ${want.retried!.memory}, cpu: ${want.retried!.cpu}}\n`);
    expect(run.stdout).toEndWith(`Wrote the requests of steady, retried, capped into ${file}\n`);
    expect(run.stderr).toBe(
      [
        "warning: hog: not applied: it was OOM-killed, so its memory is only a lower bound; run again with --enforce-requests --retry-oom",
        `warning: capped: cpu not applied: it was throttled under its CPU limit, so ${want.capped!.cpu} is only a lower bound`,
        "",
      ].join("\n"),
    );

    const mtime = statSync(file).mtimeMs;
    await Bun.sleep(20);
    const again = await cpostSource(["size", file, "--from", recording, "--apply"], { cwd: dir });
    expect(again.code).toBe(0);
    expect(again.stdout).toEndWith(`\nrequests already match; file unchanged (${file})\n`);
    expect(readFileSync(file, "utf8")).toBe(expected);
    expect(statSync(file).mtimeMs).toBe(mtime);
  });

  test("two recordings: the recommendation comes from both runs' samples, the spread shows min / median / max of their peaks", async () => {
    const dir = tempDir();
    const first = await recordTo(loadFixtureRun("oom-killed"), join(dir, "1"));
    const second = await recordTo(scaledRun(10), join(dir, "2"));
    const observer = defineSizingObserver(CPOST_POLICY);
    for (const file of [first, second]) await replayInto(readRecording(file), [observer.sink]);
    const sized = observer.finish();
    const steady = sized.find((op) => op.operator === "steady")!;
    expect(observer.runs).toBe(2);
    expect(steady.peaks.map((p) => p.run)).toEqual([1, 2]);
    const [low, high] = steady.peaks.map((p) => p.memoryMaxMb) as [number, number];
    // Peaks are kept to three decimals of MB, so ten times the smaller one is off by up to 0.005.
    expect(Math.abs(high - low * 10)).toBeLessThanOrEqual(0.005);
    // From the union: the larger run's peak decides.
    expect(steady.summary.recommendation.memory).toBe(recommend({ cpuPercent: 0, memoryMb: round3(high), samples: 1 }).memory);
    expect(steady.summary.recommendation.memory).toBeGreaterThan(oracle.policies[0]!.operators.steady!.memory);
    const spread = formatSpread(sized, 2);
    expect(spread).toContain(`| steady        | CPU      |`);
    expect(spread).toContain(`| (2 of 2 runs) | Memory   | ${low.toFixed(3)} MB`);
    expect(spread).toContain(`| ${((low + high) / 2).toFixed(3)} MB | ${high.toFixed(3)} MB | memory: ${steady.summary.recommendation.memory}`);
    // hog failed in both runs, retried was retried in both: the folded result says so.
    expect(sized.find((op) => op.operator === "hog")!.result).toMatchObject({ status: "failed", oomKilled: true });
    expect(sized.find((op) => op.operator === "retried")!.result.attempts).toHaveLength(2);

    const run = await cpostSource(["size", join(RUNS_DIR, "oom-killed", "pipeline.yaml"), "--from", first, "--from", second]);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`\n${spread}${formatRecommendations(sized, CPOST_POLICY)}${formatSamplerViews(sized)}`);
  });

  test("another policy: `cpost size --policy percentile` and `cpost replay --policy percentile` size the same recording anew", async () => {
    const dir = tempDir();
    const recording = await recordTo(loadFixtureRun("oom-killed"), dir);
    const want = oracle.policies.find((p) => p.flags.policy === "percentile" && p.flags.cpuPercentile === undefined)!.operators;
    const size = await cpostSource(["size", join(RUNS_DIR, "oom-killed", "pipeline.yaml"), "--from", recording, "--policy", "percentile"]);
    expect(size.code).toBe(0);
    expect(size.stdout).toContain("Recommended requests (policy p95+15%: cpu = max(1, ceil((p95 1 s cpu% - error) / 100)); memory = max(256, ceil(max working set MB * 1.15 / 256) * 256))");
    expect(size.stdout).toContain(`  steady   cpu: ${want.steady!.cpu}, memory: ${want.steady!.memory}   from p95 0.520 s (its whole run) CPU ${want.steady!.evidence.cpu.value.toFixed(3)} % ± ${want.steady!.evidence.cpu.errorPercent.toFixed(3)}`);
    const replay = await cpostSource(["replay", recording, "--sinks", "table", "--cpu-percentile", "95", "--memory-headroom", "15%"]);
    expect(replay.code).toBe(0);
    for (const [name, op] of Object.entries(want)) {
      const block = replay.stdout.split(`Operator ${name} Summary`)[1]!;
      expect(block).toContain(`cpu: ${op.cpu} `);
      expect(block).toContain(`memory: ${op.memory} `);
    }
    expect(PERCENTILE_POLICY).toMatchObject({ cpuPercentile: 95, memoryHeadroomPct: 15 });
  });

  test("bad invocations are usage or input errors (exit 2) that say what to do", async () => {
    const dir = tempDir();
    const pipeline = join(RUNS_DIR, "oom-killed", "pipeline.yaml");
    const cases: Array<[string[], string]> = [
      [["size", pipeline], "cpost size takes a pipeline file and an input directory (got 1 argument)"],
      [["size", pipeline, dir, "--repeat", "0"], "--repeat 0: not a whole number from 1 to 1000"],
      [["size", pipeline, dir, "--policy", "generous"], 'unknown sizing policy "generous"'],
      [["size", pipeline, dir, "--policy", "cpost", "--cpu-percentile", "90"], "--cpu-percentile and --memory-headroom belong to the percentile policy"],
      [["size", pipeline, dir, "--retry-oom-cap", "lots"], "--retry-oom-cap lots: not a number of MB"],
      [["size", pipeline, "--from", join(dir, "none.msgpack"), "--repeat", "2"], "--repeat, --enforce-requests and --retry-oom are for live runs, not --from"],
      [["size", pipeline, dir, "--from", join(dir, "none.msgpack")], "with --from, cpost size takes only the pipeline file (got 2 arguments)"],
      [["size", pipeline, "--from", join(dir, "none.msgpack")], `${join(dir, "none.msgpack")}: cannot read recording`],
      [["size", pipeline, "--from"], "--from needs a recording file"],
      [["run", pipeline, dir, "--repeat", "many"], "--repeat many: not a whole number from 1 to 1000"],
      // a sink option whose sink was not chosen would do nothing
      [["size", pipeline, dir, "--metrics_dir", dir, "--es-url", "http://127.0.0.1:9"], "--es-url: sink es is not in --sinks"],
      [["run", pipeline, dir, "--sinks", "table", "--csv-flush", "1s"], "--csv-flush: sink csv is not in --sinks"],
    ];
    for (const [args, message] of cases) {
      const run = await cpostSource(args);
      expect({ args, code: run.code }).toEqual({ args, code: 2 });
      expect(run.stderr).toContain(message);
      expect(run.stderr).toContain("hint: ");
    }
  });

  test("--help of size and run states the policies' formulas", async () => {
    for (const command of ["size", "run"]) {
      const help = await cpostSource([command, "--help"]);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain("cpu = ceil((max cpu% - error)/100), memory = ceil((max MB + 100)/256)*256");
      expect(help.stdout).toContain("cpu = ceil((p95 cpu% - error)/100), memory = ceil(max MB * 1.15/256)*256");
      expect(help.stdout).toMatch(/cpu% over 1 s windows of the usage counter less its measured\s+error, MB the working set's peak/);
      expect(help.stdout).toContain("--retry-oom");
    }
  });
});

describe("cpost run --repeat (live)", () => {
  dockerTest("runs the pipeline twice, keeps each run's CSVs and recording, prints the spread and the recommendations", async () => {
    const dir = tempDir();
    const input = join(dir, "in");
    mkdirSync(input);
    writeFileSync(join(input, "a.txt"), "x\n");
    writeFileSync(
      join(dir, "pipeline.yaml"),
      [
        "api-version: 0.4.0",
        "name: repeat-live",
        "operators:",
        "  - name: touch",
        '    container: {image: cpost-test/busybox, tag: "1", command: ["cpost-workload", "mem", "24", "0.4"]}',
        "    input: [{path: /input}]",
        "  - name: quick",
        '    container: {image: cpost-test/busybox, tag: "1", command: ["sh", "-c", "true"]}',
        "    input: [{path: /input}]",
        "",
      ].join("\n"),
    );
    const metrics = join(dir, "metrics");
    const run = await cpostSource(["run", join(dir, "pipeline.yaml"), input, "--repeat", "2", "--metrics_dir", metrics, "--sinks", "csv", "--record", join(dir, "rec.msgpack"), "--quiet"]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    for (const n of [1, 2]) {
      // each operator's CSV and, since output is always kept, its log
      expect(readdirSync(join(metrics, `run-${n}`)).sort()).toEqual(["quick.log", "quick_final_result.csv", "touch.log", "touch_final_result.csv"]);
      const recorded = readRecording(join(dir, `rec-run-${n}.msgpack`));
      expect(recorded.complete).toBe(true);
      const touch = recorded.operators[0]!.summary!;
      // 24 MiB touched: the recorded evidence has the peak, when it was, and over how many readings.
      expect(touch.recommendation.evidence!.memory.valueMb).toBeGreaterThan(24 * 1.048576);
      expect(touch.recommendation.evidence!.memory.peakAtMs).toBeGreaterThan(recorded.run.startedAtMs);
      // Over every memory reading (usage; the working set where memory.stat was read): each sample but, at
      // most, blkio's last row (the bytes settled from the reaper after the cgroup went, issue 22).
      const memory = touch.recommendation.evidence!.memory;
      const readings = recorded.operators[0]!.batches.reduce((n, b) => {
        const c = b.columns.findIndex((column) => column.name === "memory.usage_bytes");
        for (let r = 0; c >= 0 && r < b.rows; r++) if (!Number.isNaN(b.values[r * b.columns.length + c]!)) n++;
        return n;
      }, 0);
      expect(memory.rows).toBe(readings);
      expect(readings).toBeGreaterThanOrEqual(touch.samples - 1);
    }
    expect(existsSync(join(dir, "rec.msgpack"))).toBe(false);
    expect(run.stdout).toContain("Peaks over 2 runs\n+");
    expect(run.stdout).toMatch(/\| touch +\| CPU +\|/);
    expect(run.stdout).toMatch(/\| \(2 of 2 runs\) +\| Memory +\| 2\d\.\d{3} MB/);
    expect(run.stdout).toMatch(/\n {2}touch {2}cpu: 1, memory: 256 {3}from max [\d.]+ s \(its whole run\) CPU [\d.]+ % ± [\d.]+ and max working set 2\d\.\d{3} MB over \d+ readings\n/);
  }, 60_000);
});

