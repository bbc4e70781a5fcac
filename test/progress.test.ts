/**
 * The live progress line, seen through real pseudo-terminals: `script`
 * (the raw bytes a terminal receives) and tmux (the screen a person sees),
 * and nothing at all when stderr is a pipe.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defineProgressSink } from "../plugins/progress.ts";
import { fixtureOperator, fixtureRun } from "./report-fixture.ts";
import { BUN, IN_CI, REPO, runProcess } from "./support.ts";

const DRIVER = join(REPO, "test/progress-driver.ts");
const CLEAR = "\r\x1b[2K";
const hasTmux = Bun.which("tmux") !== null;
const hasScript = Bun.which("script") !== null;
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A test that needs a terminal tool: skipped with its reason locally, failed in CI. */
function ttyTest(name: string, tool: string, have: boolean, fn: () => Promise<void>): void {
  if (have) test(name, fn, 60_000);
  else if (IN_CI) test(name, () => { throw new Error(`${tool} is missing (Debian's ${tool === "script" ? "bsdutils" : tool})`); });
  else test.skip(`${name} (skipped: no ${tool})`, fn);
}

ttyTest("on a terminal: one line redrawn in place with operator, elapsed, CPU, memory and samples; cleared at operatorDone", "script", hasScript, async () => {
  const { code, stdout } = await runProcess(["script", "-qfec", `${BUN} ${DRIVER}`, "/dev/null"], { stdin: "ignore", env: { COLUMNS: "200" } });
  expect(code).toBe(0);
  // Every frame starts by returning to column 0 and erasing the line.
  const frames = stdout.split(CLEAR);
  const segment = frames.filter((f) => f.startsWith("▶ [1/2] segment  "));
  const writer = frames.filter((f) => f.startsWith("▶ [2/2] writer  "));
  expect(segment.length).toBeGreaterThanOrEqual(4);
  expect(writer.length).toBeGreaterThanOrEqual(2);
  // The values of each batch show up, in order; the memory is the last one measured (the last row's is NaN).
  const wanted = ["CPU 123.4 %  memory 64.5 MB  50 samples", "CPU 223.4 %  memory 129.0 MB  100 samples", "CPU 323.4 %  memory 193.5 MB  150 samples"];
  const at = wanted.map((w) => segment.findIndex((f) => f.endsWith(w)));
  expect(at.every((i) => i >= 0)).toBe(true);
  expect([...at].sort((a, b) => a - b)).toEqual(at);
  // Elapsed time moves on while the operator runs (the driver holds it for at least 0.9 s).
  const clock = (f: string) => {
    const m = f.match(/ (\d\d):(\d\d\.\d) {2}/)!;
    return Number(m[1]) * 60 + Number(m[2]);
  };
  expect(clock(segment[0]!)).toBeLessThan(0.2);
  expect(clock(segment.at(-1)!)).toBeGreaterThanOrEqual(0.8);
  expect(writer.at(-1)).toEndWith("CPU 123.4 %  memory 64.5 MB  7 samples");
  // operatorDone clears the line before the next operator draws: an empty frame sits between them.
  const lastSegment = frames.lastIndexOf(segment.at(-1)!);
  expect(frames[lastSegment + 1]).toBe("");
  expect(frames.indexOf(writer[0]!)).toBeGreaterThan(lastSegment + 1);
  // After the run nothing of the line is left: only what the program printed itself.
  expect(frames.at(-1)).toBe("driver done\r\n");
});

test("a narrow terminal: the line is cut to its width, so \\r still returns to its start", async () => {
  const written: string[] = [];
  const sink = defineProgressSink({ stream: { isTTY: true, columns: 30, write: (t: string) => written.push(t) } });
  const operator = fixtureOperator("a-rather-long-operator-name");
  await sink.start(fixtureRun([operator]));
  await sink.operatorStart?.(operator);
  await sink.end({ results: [], summaries: [], endedAtMs: 0, interval: { target: 1, p50: 1, p99: 1, samples: 0 }, interrupted: false });
  const frames = written.join("").split(CLEAR).filter(Boolean);
  expect(frames).toEqual(["▶ [1/1] a-rather-long-operato"]);
});

test("not a terminal: prints nothing", async () => {
  const { code, stdout, stderr } = await runProcess([BUN, DRIVER]);
  expect(code).toBe(0);
  expect(stderr).toBe("");
  expect(stdout).toBe("driver done\n");
});

ttyTest("in tmux: the screen shows the progress line mid-operator, and no trace of it after the run", "tmux", hasTmux, async () => {
  const dir = mkdtempSync(join(tmpdir(), "cpost-progress-"));
  dirs.push(dir);
  const go = join(dir, "go");
  const socket = `cpost-progress-${process.pid}`;
  const tmux = (...args: string[]) => runProcess(["tmux", "-L", socket, "-f", "/dev/null", ...args]);
  // From the start of the history: once the pane is dead tmux scrolls its notice in at the bottom.
  const screen = async () => (await tmux("capture-pane", "-p", "-S", "-", "-t", "progress")).stdout;
  const until = async (what: string, ok: (s: string) => boolean): Promise<string> => {
    const deadline = Date.now() + 20_000;
    let last = "";
    while (Date.now() < deadline) {
      last = await screen();
      if (ok(last)) return last;
      await Bun.sleep(50);
    }
    throw new Error(`tmux screen never showed ${what}; last screen:\n${last}`);
  };
  const command = `env CPOST_PROGRESS_GO=${go} ${BUN} ${DRIVER}`;
  const started = await tmux("new-session", "-d", "-s", "progress", "-x", "120", "-y", "10", command, ";", "set-option", "-t", "progress", "remain-on-exit", "on");
  expect(started.code).toBe(0);
  try {
    const during = await until("the segment line with 150 samples", (s) => s.includes("150 samples"));
    const lines = during.split("\n").filter((l) => l.includes("segment"));
    expect(lines).toHaveLength(1); // redrawn in place, not scrolled
    expect(lines[0]).toMatch(/^▶ \[1\/2\] segment {2}00:0\d\.\d {2}CPU 323\.4 % {2}memory 193\.5 MB {2}150 samples\s*$/);
    writeFileSync(go, "");
    const after = await until("driver done", (s) => s.includes("driver done"));
    expect(after).not.toContain("segment");
    expect(after).not.toContain("writer");
    expect(after).not.toContain("samples");
  } finally {
    await tmux("kill-server");
  }
});
