/**
 * Boundaries (issue 20), through the compiled binary on the real engine:
 * a slow sink and a sink that never returns cannot stretch the run or grow
 * its memory, and the durable CSV beside them keeps every sample; broken
 * plugins (wrong shapes from every hook, throws, never-resolving promises)
 * end in a named error or a named warning and never lose the other sinks'
 * data; every path the user names fails with exit 2, the path and what to
 * do; an internal error has its own exit code; a wrong DOCKER_HOST that
 * answers 404 is not told to check the image name.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { defineCommand, type CommandDef } from "citty";
import { main, subCommands } from "../core/cli/cli.ts";
import { EXIT } from "../core/contracts/errors.ts";
import { readRecording } from "../core/sinks/recording.ts";
import { defineReliabilityLog } from "./reliability-log.ts";
import { compiledBinary, defineTestScratch, dockerTest, REPO, runProcess, TEST_IMAGE } from "./support.ts";

const pids: number[] = [];
const { temp, scratch, cleanup } = defineTestScratch("boundaries", pids);
afterAll(cleanup);
const log = defineReliabilityLog("boundaries");
const INPUT = join(REPO, "examples/diamond/input");
const [image, tag] = TEST_IMAGE.split(":") as [string, string];

function pipelineFile(dir: string, command: string[]): string {
  const file = join(dir, "pipeline.yaml");
  writeFileSync(file, `api-version: 0.4.0\nname: boundaries\noperators:\n  - name: op\n    container:\n      image: ${image}\n      tag: "${tag}"\n      command: ${JSON.stringify(command)}\n`);
  return file;
}

/** Samples in a recording, and the CSV's data rows (each the mean of two consecutive samples: one fewer). */
function counts(metrics: string, recording: string): { samples: number; csvRows: number } {
  const r = readRecording(recording);
  const samples = r.operators.flatMap((o) => o.batches).reduce((n, b) => n + b.rows, 0);
  const csvRows = readFileSync(join(metrics, "op_final_result.csv"), "utf8").trim().split("\n").length - 1;
  return { samples, csvRows };
}

/** Runs the binary, sampling its RSS (kB) from /proc every 200 ms. */
async function runMeasured(argv: string[], cwd: string): Promise<{ code: number; stderr: string; seconds: number; peakRssKb: number }> {
  const started = performance.now();
  const proc = Bun.spawn(argv, { cwd, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  pids.push(proc.pid);
  let peakRssKb = 0;
  const sampler = setInterval(() => {
    try {
      const rss = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${proc.pid}/status`, "utf8"));
      if (rss) peakRssKb = Math.max(peakRssKb, Number(rss[1]));
    } catch {
      // gone
    }
  }, 200);
  const killer = setTimeout(() => proc.kill("SIGKILL"), 240_000);
  const [, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearInterval(sampler);
  clearTimeout(killer);
  return { code, stderr, seconds: (performance.now() - started) / 1000, peakRssKb };
}

// ---------------------------------------------------------------- slow sinks

describe("a slow sink", () => {
  dockerTest("2 s per batch at 1 ms on a 20 s operator: the run ends within 60 s, names the sink and its drops; the CSV beside it has every sample", async () => {
    await log.check("Load and soak", "A sink plugin taking 2 s per batch, --interval 1ms, a 20 s operator, beside the CSV and msgpack sinks (compiled binary, real engine)", async () => {
      const dir = scratch();
      writeFileSync(join(dir, "slow.ts"), `export default { name: "slowsink", description: "2 s per batch", create() { return { async write() { await new Promise((r) => setTimeout(r, 2000)); } }; } };\n`);
      const metrics = join(dir, "m");
      const recording = join(dir, "run.msgpack");
      const run = await runMeasured([await compiledBinary(), "run", pipelineFile(dir, ["sleep", "20"]), INPUT, "--interval", "1ms", "--sinks", "csv", "--metrics_dir", metrics, "--record", recording, "--sink-plugin", "./slow.ts", "--quiet"], dir);
      expect(run.code).toBe(0);
      expect(run.seconds).toBeLessThan(60);
      expect(run.stderr).toMatch(/sink slowsink is \d+ s behind; dropping its oldest batches/);
      const dropped = /sink slowsink dropped (\d+) batch\(es\) \((\d+) rows\)/.exec(run.stderr);
      expect(dropped).not.toBeNull();
      const { samples, csvRows } = counts(metrics, recording);
      expect(samples).toBeGreaterThan(10_000);
      expect(csvRows).toBe(samples - 1);
      const losses = readRecording(recording).result?.sinkLosses ?? [];
      expect(losses.map((l) => l.sink)).toEqual(["slowsink"]);
      expect(losses[0]!.droppedBatches).toBe(Number(dropped![1]));
      expect(run.stderr).not.toMatch(/csv|msgpack.*behind/);
      return `ended in ${run.seconds.toFixed(1)} s (exit 0); one warning named slowsink as behind; it dropped ${losses[0]!.droppedBatches} batches (${losses[0]!.droppedRows} rows) and did not get ${losses[0]!.undeliveredBatches} more (${losses[0]!.undeliveredRows} rows) when the end gave up on it after 15 s, all in the recording's run result; the recording has ${samples} samples and the CSV ${csvRows} rows (one per pair of samples: every sample); peak RSS ${(run.peakRssKb / 1024).toFixed(0)} MiB`;
    });
  }, 180_000);

  dockerTest("a sink whose write never returns, over a 60 s operator at 1 ms: RSS stays under 250 MiB, the end gives up on it after --sink-end-timeout", async () => {
    await log.check("Load and soak", "A sink plugin whose write never returns, --interval 1ms, a 60 s operator, --sink-end-timeout 3s (compiled binary, real engine; RSS read from /proc every 200 ms)", async () => {
      const dir = scratch();
      writeFileSync(join(dir, "stuck.ts"), `export default { name: "stuck", description: "write never returns", create() { return { write() { return new Promise(() => {}); } }; } };\n`);
      const metrics = join(dir, "m");
      const recording = join(dir, "run.msgpack");
      const run = await runMeasured([await compiledBinary(), "run", pipelineFile(dir, ["sleep", "60"]), INPUT, "--interval", "1ms", "--sinks", "csv", "--metrics_dir", metrics, "--record", recording, "--sink-plugin", "./stuck.ts", "--sink-end-timeout", "3s", "--quiet"], dir);
      expect(run.code).toBe(0);
      expect(run.peakRssKb).toBeLessThan(250 * 1024);
      expect(run.seconds).toBeLessThan(100);
      expect(run.stderr).toMatch(/sink stuck did not catch up within 3 s at the run's end \(--sink-end-timeout\); its write has not returned/);
      const { samples, csvRows } = counts(metrics, recording);
      expect(csvRows).toBe(samples - 1);
      const loss = readRecording(recording).result?.sinkLosses?.[0];
      expect(loss?.sink).toBe("stuck");
      return `peak RSS ${(run.peakRssKb / 1024).toFixed(0)} MiB (bound 250 MiB; the sink's queue holds at most 16 MiB or 10 s of batches); ended in ${run.seconds.toFixed(1)} s, exit 0; stuck dropped ${loss!.droppedBatches} batches and did not get ${loss!.undeliveredBatches}; the CSV has ${csvRows} rows for ${samples} samples`;
    });
  }, 180_000);
});

// ---------------------------------------------------------------- broken plugins

const collector = (name: string, body: string) => `export default { name: "${name}", description: "broken", metrics: [{ name: "bad.value", unit: "count", kind: "gauge" }], ${body} };\n`;
const probe = (extra: string) => `open() { return { metrics: [{ name: "bad.value", unit: "count", kind: "gauge" }], source: "x", read(out) { out.values[out.base] = 1; return true; }, close() {}, ${extra} }; }`;
const sink = (name: string, hooks: string) => `export default { name: "${name}", description: "broken", create() { return { ${hooks} }; } };\n`;

/** Each case: a plugin file, how it must end (exit code), and what stderr must say. */
const CASES: Array<{ what: string; kind: "collector" | "sink"; source: string; code: number; says: RegExp; csv: boolean }> = [
  { what: "probe metrics are strings", kind: "collector", source: collector("c-strings", `open() { return { metrics: ["name"], source: "x", read() { return true; }, close() {} }; }`), code: 0, says: /c-strings: open failed: returned a probe that is not valid: probe\.metrics\[0\] is "name", not a metric spec/, csv: true },
  { what: "open returns null", kind: "collector", source: collector("c-null", "open() { return null; }"), code: 0, says: /c-null: open failed: returned null, not a probe/, csv: true },
  { what: "open returns a promise", kind: "collector", source: collector("c-async", `async ${probe("")}`), code: 0, says: /c-async: open failed: returned a promise/, csv: true },
  { what: "open throws a string", kind: "collector", source: collector("c-throw", `open() { throw "no"; }`), code: 0, says: /c-throw: open failed: no/, csv: true },
  { what: "probe.read is not a function", kind: "collector", source: collector("c-noread", `open() { return { metrics: [], read: 5 }; }`), code: 0, says: /c-noread: open failed: .*probe\.read is 5, not a function/, csv: true },
  { what: "unavailable is not a string", kind: "collector", source: collector("c-unavail", "open() { return { unavailable: 5 }; }"), code: 0, says: /c-unavail: open failed: returned \{ unavailable: 5 \}/, csv: true },
  { what: "read returns undefined", kind: "collector", source: collector("c-undef", probe("").replace("return true;", "")), code: 0, says: /c-undef: read failed: returned undefined, not true/, csv: true },
  { what: "read throws null", kind: "collector", source: collector("c-null-read", probe("").replace("return true;", "throw null;")), code: 0, says: /c-null-read: read failed: it threw null/, csv: true },
  { what: "declared metrics wrong", kind: "collector", source: `export default { name: "c-decl", description: "x", metrics: [1], open() { return { unavailable: "x" }; } };\n`, code: 2, says: /plugin \.\/plugin\.ts: is not a valid plugin: metrics\[0\] is 1, not a metric spec/, csv: false },
  { what: "option required is not a boolean", kind: "collector", source: `export default { name: "c-opt", description: "x", options: { a: { description: "a", required: "yes" } }, metrics: [], open() { return { unavailable: "x" }; } };\n`, code: 2, says: /option a: required is not true or false/, csv: false },
  { what: "create returns 5", kind: "sink", source: `export default { name: "s-five", description: "x", create() { return 5; } };\n`, code: 2, says: /s-five: create returned 5, not an object of hooks/, csv: false },
  { what: "create throws", kind: "sink", source: `export default { name: "s-create", description: "x", create() { throw new TypeError("cannot"); } };\n`, code: 2, says: /s-create: create failed: cannot/, csv: false },
  { what: "create returns a hook that is not a function", kind: "sink", source: sink("s-hook", "write: 5"), code: 2, says: /s-hook: create returned hooks that are not functions: write is 5/, csv: false },
  { what: "start throws null", kind: "sink", source: sink("s-start", "start() { throw null; }"), code: 0, says: /s-start: start failed: it threw null/, csv: true },
  { what: "write rejects with a string", kind: "sink", source: sink("s-write", `write() { return Promise.reject("full"); }`), code: 0, says: /s-write: write failed: full/, csv: true },
  { what: "write throws an object", kind: "sink", source: sink("s-obj", "write() { throw { code: 7 }; }"), code: 0, says: /s-obj: write failed: it threw \{"code":7\}/, csv: true },
  { what: "operatorDone never resolves", kind: "sink", source: sink("s-done", "operatorDone() { return new Promise(() => {}); }"), code: 0, says: /sink s-done did not catch up within 2 s (more )?at the run's end \(--sink-end-timeout\); its operatorDone has not returned/, csv: true },
  { what: "start never resolves", kind: "sink", source: sink("s-hang", "start() { return new Promise(() => {}); }"), code: 0, says: /sink s-hang did not catch up within 2 s .*its start has not returned/, csv: true },
  { what: "end never resolves", kind: "sink", source: sink("s-end", "end() { return new Promise(() => {}); }"), code: 0, says: /sink s-end did not finish its end within 2 s .*its end has not returned/, csv: true },
  { what: "end returns a thenable that throws", kind: "sink", source: sink("s-then", `end() { return { then() { throw new RangeError("bad then"); } }; }`), code: 0, says: /s-then: end failed: bad then/, csv: true },
];

describe("broken plugins", () => {
  dockerTest(`${CASES.length} broken plugins (wrong shapes from every hook, throws, never-resolving promises): each run ends in a named error or warning, the CSV keeps every sample`, async () => {
    await log.check("Faults", `${CASES.length} broken plugins, one per run: collectors whose open returns strings as metric specs, null, a promise, a bad unavailable, a probe without read, whose read returns undefined or throws null, with bad declared metrics or options; sinks whose create returns 5, throws, returns a non-function hook, whose start throws null, write rejects or throws an object, operatorDone, start or end never resolve, end returns a throwing thenable`, async () => {
      const binary = await compiledBinary();
      const failures: string[] = [];
      let mid = 0;
      for (const c of CASES) {
        const dir = scratch();
        writeFileSync(join(dir, "plugin.ts"), c.source);
        const metrics = join(dir, "m");
        const recording = join(dir, "run.msgpack");
        const run = await runProcess([binary, "run", pipelineFile(dir, ["sleep", "1"]), INPUT, "--collectors", "cgroup", "--sinks", "csv", "--metrics_dir", metrics, "--record", recording, `--${c.kind}-plugin`, "./plugin.ts", "--sink-end-timeout", "2s", "--quiet"], { cwd: dir, timeoutMs: 60_000 });
        const problems: string[] = [];
        if (run.code !== c.code) problems.push(`exit ${run.code}, not ${c.code}`);
        if (!c.says.test(run.stderr)) problems.push(`stderr does not match ${c.says}`);
        if (/TypeError|ReferenceError|is not an object|undefined is not|internal error/.test(run.stderr)) problems.push("a raw error reached the user");
        if (c.csv) {
          if (!existsSync(recording)) problems.push("no recording");
          else {
            const { samples, csvRows } = counts(metrics, recording);
            if (samples < 10 || csvRows !== samples - 1) problems.push(`${samples} samples but ${csvRows} CSV rows`);
          }
          mid++;
        }
        if (problems.length > 0) failures.push(`${c.what}: ${problems.join("; ")}\n${run.stderr}`);
      }
      expect(failures).toEqual([]);
      return `all ${CASES.length} ended as they must: ${CASES.length - mid} at load or create with exit 2 naming the plugin and what was wrong, ${mid} during the run with one warning naming the plugin and the hook (or the hook that never returned, given up on after --sink-end-timeout) and exit 0; no raw TypeError; in each of those the CSV had every sample of the recording`;
    });
  }, 600_000);
});

// ---------------------------------------------------------------- paths the user names

describe("paths the user names", () => {
  test("pipeline, input, metrics_dir, models_dir, recordings and plugins: ENOENT, EISDIR, ENOTDIR, EACCES each exit 2 with the path and what to do", async () => {
    await log.check("Bad input", "Every path the user names (pipeline, input dir, --metrics_dir, --models_dir, a recording, a plugin, CPOST_PLUGIN_PATH) missing, a directory where a file belongs, a file where a directory belongs, and unreadable (as an unprivileged user)", async () => {
      const binary = await compiledBinary();
      const dir = scratch();
      chmodSync(temp, 0o755);
      chmodSync(dir, 0o755);
      const good = pipelineFile(dir, ["true"]);
      const triton = join(dir, "triton.yaml");
      writeFileSync(triton, `api-version: 0.4.0\nname: t\noperators:\n  - name: op\n    models: [m]\n    container:\n      image: ${image}\n      tag: "${tag}"\n`);
      const file = join(dir, "file.txt");
      writeFileSync(file, "x");
      const secret = join(dir, "secret.yaml");
      writeFileSync(secret, readFileSync(good));
      chmodSync(secret, 0o600);
      const closed = join(dir, "closed");
      mkdirSync(closed);
      chmodSync(closed, 0o700);
      const plugin = join(dir, "secret-plugin.ts");
      writeFileSync(plugin, "export default {};\n");
      chmodSync(plugin, 0o600);
      const cases: Array<{ args: string[]; says: string; env?: Record<string, string>; user?: boolean }> = [
        { args: ["validate", join(dir, "nope.yaml")], says: `${join(dir, "nope.yaml")}: cannot read pipeline file: it does not exist` },
        { args: ["validate", dir], says: `${dir}: cannot read pipeline file: it is a directory, not a file` },
        { args: ["validate", join(file, "p.yaml")], says: `${join(file, "p.yaml")}: cannot read pipeline file: a part of its path is not a directory` },
        { args: ["validate", secret], says: `${secret}: cannot read pipeline file: permission denied`, user: true },
        { args: ["run", good, join(dir, "none")], says: `${join(dir, "none")}: cannot read input directory: it does not exist` },
        { args: ["run", good, file], says: `${file}: cannot read input directory: it is not a directory` },
        { args: ["run", good, closed], says: `${closed}: cannot read input directory: permission denied`, user: true },
        { args: ["run", good, INPUT, "--metrics_dir", file], says: `--metrics_dir ${file}: cannot create it (EEXIST)` },
        { args: ["run", good, INPUT, "--metrics_dir", join(closed, "m")], says: `--metrics_dir ${join(closed, "m")}: cannot create it (EACCES)`, user: true },
        { args: ["run", triton, INPUT, "--models_dir", join(dir, "none")], says: `${join(dir, "none")}: cannot read --models_dir: it does not exist` },
        { args: ["run", triton, INPUT, "--models_dir", file], says: `${file}: cannot read --models_dir: it is not a directory` },
        { args: ["run", triton, INPUT, "--models_dir", closed], says: `${closed}: cannot read --models_dir: permission denied`, user: true },
        { args: ["replay", join(dir, "none.msgpack")], says: `${join(dir, "none.msgpack")}: cannot read recording: it does not exist` },
        { args: ["replay", dir], says: `${dir}: cannot read recording: it is a directory, not a file` },
        { args: ["report", secret, "-o", join(dir, "r.html")], says: `${secret}: cannot read recording: permission denied`, user: true },
        { args: ["run", good, INPUT, "--sink-plugin", closed], says: `plugin ${closed}: cannot load`, user: true },
        { args: ["run", good, INPUT, "--sink-plugin", dir], says: `plugin ${dir}: cannot load: the directory has no index.ts` },
        { args: ["run", good, INPUT, "--sink-plugin", plugin], says: `plugin ${plugin}: cannot load: permission denied`, user: true },
        { args: ["run", good, INPUT], says: `cannot read CPOST_PLUGIN_PATH: ${join(dir, "none")}: it does not exist`, env: { CPOST_PLUGIN_PATH: join(dir, "none") } },
        { args: ["run", good, INPUT], says: `cannot read CPOST_PLUGIN_PATH: ${closed}: permission denied`, env: { CPOST_PLUGIN_PATH: closed }, user: true },
      ];
      const wrong: string[] = [];
      for (const c of cases) {
        const argv = c.user ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", binary, ...c.args] : [binary, ...c.args];
        const run = await runProcess(argv, { cwd: dir, env: { HOME: dir, ...c.env } });
        if (run.code !== 2 || !run.stderr.includes(c.says) || !run.stderr.includes("hint:")) wrong.push(`${c.args.join(" ")} (${c.user ? "nobody" : "root"}): exit ${run.code}: ${run.stderr.trim()}`);
      }
      expect(wrong).toEqual([]);
      return `all ${cases.length} exited 2 with the path, what is wrong (does not exist, is a directory, is not a directory, permission denied as uid 65534) and a hint`;
    });
  }, 120_000);

  test("an internal error exits 70 with a one-line 'please report', and the stack only under -v", async () => {
    subCommands["internal-boom"] = async () => defineCommand({ meta: { name: "internal-boom" }, args: { verbose: { type: "boolean", alias: "v" } }, run() { throw new TypeError("x is not a function"); } }) as unknown as CommandDef;
    const written: string[] = [];
    const original = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string) => (written.push(String(chunk)), true)) as typeof process.stderr.write;
    let plain: number;
    let verbose: number;
    let plainText: string;
    try {
      plain = await main(["internal-boom"]);
      plainText = written.splice(0).join("");
      verbose = await main(["internal-boom", "-v"]);
    } finally {
      process.stderr.write = original;
      delete subCommands["internal-boom"];
    }
    expect(EXIT.internal).toBe(70);
    expect(plain).toBe(70);
    expect(verbose).toBe(70);
    expect(plainText).toContain("cpost: internal error: x is not a function");
    expect(plainText).toContain("please report it with the command you ran (run it again with -v for the stack)");
    expect(plainText).not.toContain("    at ");
    expect(written.join("")).toContain("    at ");
  });

  test("a DOCKER_HOST that answers 404 on every path is not told to check the image name", async () => {
    const socket = join(temp, "not-docker.sock");
    const server = Bun.serve({ unix: socket, fetch: () => new Response("404 page not found", { status: 404 }) });
    try {
      const dir = scratch();
      const run = await runProcess([await compiledBinary(), "run", pipelineFile(dir, ["true"]), INPUT], { cwd: dir, env: { DOCKER_HOST: `unix://${socket}` }, timeoutMs: 60_000 });
      expect(run.code).toBe(2);
      expect(run.stderr).toContain("404");
      expect(run.stderr).not.toContain("image name");
    } finally {
      server.stop(true);
    }
  }, 60_000);
});
