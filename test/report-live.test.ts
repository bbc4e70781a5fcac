/**
 * A real run of the example pipeline, end to end: the HTML report it writes
 * opens in Chromium with one drawn chart per operator per metric (and
 * `cpost report` of its recording draws the same), and on a terminal the
 * live progress line shows each operator without ever being printed over.
 */
import { afterAll, describe, expect } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chartsOf, hasChromium, openFile, screenshot } from "./browser.ts";
import { embedded, extremes } from "./report-fixture.ts";
import { BUN, cpostSource, dockerTest, IN_CI, REPO, runProcess } from "./support.ts";

const CLEAR = "\r\x1b[2K";
const hasScript = Bun.which("script") !== null;
const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "cpost-live-report-"));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("a live run", () => {
  dockerTest(
    "the example pipeline with --sinks html,msgpack: the report opens in Chromium with one drawn chart per operator per metric, and `cpost report` of its recording matches",
    async () => {
      if (!hasChromium && IN_CI) throw new Error("/usr/bin/chromium is missing (run test/setup.sh)");
      const dir = tempDir();
      const run = await cpostSource(["run", "examples/diamond/pipeline.yaml", "examples/diamond/input", "--sinks", "html,msgpack", "--metrics_dir", dir], { timeoutMs: 180_000 });
      expect(run.stderr).not.toContain("html");
      expect(run.code).toBe(0);
      expect(run.stdout).toContain(`HTML report in ${join(dir, "report.html")}\n`);
      const live = readFileSync(join(dir, "report.html"), "utf8");
      const data = embedded(live);
      const operators = ["reader", "segment", "measure", "writer", "audit"];
      // Each sampled operator has its CPU, memory and disk charts, in execution order. Operators
      // that end within milliseconds may leave no sample (their cgroup is gone before the first
      // read); the page says so for them. segment works for seconds: it always has all three.
      const sampled = [...new Set(data.charts.map((c) => c.operator))];
      expect(sampled).toEqual(operators.filter((op) => sampled.includes(op)));
      expect(sampled).toContain("segment");
      for (const op of sampled) {
        const groups = data.charts.filter((c) => c.operator === op).map((c) => c.group);
        expect(["cpu", "memory", "disk"].filter((g) => groups.includes(g))).toEqual(groups);
      }
      expect(data.charts.filter((c) => c.operator === "segment").map((c) => c.group)).toEqual(["cpu", "memory", "disk"]);
      // Ground truth: segment holds 64 MiB (touched) for half a second, and burns CPU before that.
      const segment = (group: string) => data.charts.find((c) => c.operator === "segment" && c.group === group)!.series[0]!.values;
      expect(extremes(segment("memory")).max).toBeGreaterThan((64 * 2 ** 20) / 1e6);
      expect(extremes(segment("cpu")).max).toBeGreaterThan(0);
      // And the others are tiny shell commands: nothing near the host's gigabytes may show up as theirs.
      const memoryMax = data.charts.filter((c) => c.group === "memory").map((c) => ({ operator: c.operator, mb: extremes(c.series[0]!.values).max }));
      expect(memoryMax.filter((m) => m.mb >= 150)).toEqual([]);

      const fromRecording = join(dir, "from-recording.html");
      const report = await cpostSource(["report", join(dir, "diamond-example.msgpack"), "-o", fromRecording]);
      expect(report.code).toBe(0);
      const replayed = embedded(readFileSync(fromRecording, "utf8"));
      expect(replayed.charts.map((c) => [c.operator, c.group, c.x.length])).toEqual(data.charts.map((c) => [c.operator, c.group, c.x.length]));

      if (!hasChromium) return;
      const opened = await openFile(join(dir, "report.html"));
      try {
        const { charts } = await chartsOf(opened);
        expect(opened.errors).toEqual([]);
        expect(opened.requests).toEqual([]);
        expect(charts.map((c) => `${c.operator}/${c.group}`)).toEqual(data.charts.map((c) => `${c.operator}/${c.group}`));
        // Drawn: even a chart of a single sample shows its point.
        for (const c of charts) expect(c.colorPixels).toBeGreaterThan(4);
        expect(await opened.page.locator("table.summary tbody tr").count()).toBe(operators.length);
        expect(await opened.page.locator("section.operator").count()).toBe(operators.length);
        const unsampled = operators.length - sampled.length;
        expect(await opened.page.locator("section.operator .nodata").count()).toBe(unsampled);
        console.log(`live report: ${charts.length} charts for ${sampled.length} sampled operators (${sampled.join(", ")}); ${unsampled} ended before a sample`);
        const facts = await opened.page.locator("#facts").textContent();
        expect(facts).toContain("cgroupv1");
        expect(facts).toContain("achieved p50");
        console.log(`screenshot: ${await screenshot(opened.page, "report-live-diamond.png")}`);
      } finally {
        await opened.close();
      }
    },
    240_000,
  );
});

/** Runs `cpost run` of the example pipeline under `script`, as on a user's terminal. */
function cpostOnTerminal(extra: string[]) {
  const argv = [BUN, join(REPO, "core/main.ts"), "run", "examples/diamond/pipeline.yaml", "examples/diamond/input", "--sinks", "table", ...extra];
  return runProcess(["script", "-qfec", argv.join(" "), "/dev/null"], { stdin: "ignore", timeoutMs: 180_000 });
}

dockerTest("cpost run on a terminal: each operator's live line, the table never printed over it; --quiet: no line", async () => {
  if (!hasScript) throw new Error("script (Debian's bsdutils) is missing");
  const { code, stdout } = await cpostOnTerminal([]);
  expect(code).toBe(0);
  const frames = stdout.split(CLEAR);
  const operators = ["reader", "segment", "measure", "writer", "audit"];
  for (const [i, op] of operators.entries()) {
    expect(frames.some((f) => f.startsWith(`▶ [${i + 1}/5] ${op}  `))).toBe(true);
  }
  // segment runs for seconds: its line shows measured CPU and memory, and the samples counting up.
  const measured = frames.filter((f) => /^▶ \[2\/5\] segment {2}00:0\d\.\d {2}CPU [\d.]+ % {2}memory [\d.]+ MB {2}\d+ samples$/.test(f));
  const counts = measured.map((f) => Number(f.match(/(\d+) samples$/)![1]));
  expect(new Set(counts).size).toBeGreaterThan(2);
  expect(counts).toEqual([...counts].sort((a, b) => a - b));
  // Whatever else is printed comes after the line was cleared, never glued to it.
  for (const f of frames.filter((f) => f.startsWith("▶"))) expect(f).not.toContain("\n");

  const quiet = await cpostOnTerminal(["--quiet"]);
  expect(quiet.code).toBe(0);
  expect(quiet.stdout).not.toContain("▶");
}, 240_000);
