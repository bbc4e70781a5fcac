/**
 * The msgpack sink records a whole run that replays into the same table and
 * CSVs, byte for byte; the reader survives a truncated file (a crash) and
 * refuses what is not a recording.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encode } from "@msgpack/msgpack";
import { readRecording, RECORDING_VERSION, replayInto, type Recording } from "../core/sinks/recording.ts";
import type { OperatorSummary, Sink } from "../core/contracts/types.ts";
import csvSink from "../plugins/csv.ts";
import msgpackSink from "../plugins/msgpack.ts";
import { expected, loadFixtureRun, RUNS_DIR } from "./fixtures/runs/fixture-run.ts";
import { contractBatches, contractColumns } from "./sinks-contract.ts";
import { BUN, cpostSource } from "./support.ts";
import { sinkFactory } from "../plugins/index.ts";

const csv = sinkFactory(csvSink);
const msgpack = sinkFactory(msgpackSink);

const dirs: string[] = [];
const tempDir = () => {
  const dir = mkdtempSync(join(tmpdir(), "cpost-msgpack-"));
  dirs.push(dir);
  return dir;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const silent = { write: () => true };

/** Records `recording` with the msgpack sink into `dir`; returns the file and the summaries the sinks saw. */
async function record(recording: Recording, dir: string): Promise<{ file: string; summaries: OperatorSummary[] }> {
  const summaries: OperatorSummary[] = [];
  const spy: Sink = { name: "spy", start() {}, write() {}, operatorDone(_r, s) { summaries.push(s); }, end() {} };
  const out = { text: "", write(text: string) { out.text += text; return true; } };
  await replayInto(recording, [msgpack({ metricsDir: dir, out, options: {} }), spy]);
  const file = join(dir, `${recording.run.pipeline.name}.msgpack`);
  expect(out.text).toBe(`Run recorded in ${file}\n`);
  return { file, summaries };
}

const rowsOf = (r: Recording) => r.operators.map((op) => op.batches.reduce((n, b) => n + b.rows, 0));

describe("msgpack sink and reader", () => {
  test("a recording reads back the run, every batch bit for bit, and the summaries", async () => {
    const original = loadFixtureRun("classic");
    const { file, summaries } = await record(original, tempDir());
    const back = readRecording(file);
    expect(back.complete).toBe(true);
    expect(back.run).toEqual(original.run);
    expect(back.operators.map((op) => op.operator)).toEqual(original.operators.map((op) => op.operator));
    expect(back.operators.map((op) => op.result)).toEqual(original.operators.map((op) => op.result));
    expect(back.operators.map((op) => op.summary)).toEqual(summaries);
    expect(back.result?.results).toEqual(original.result!.results);
    original.operators.forEach((op, i) => {
      const got = back.operators[i]!.batches;
      expect(got.map((b) => b.rows)).toEqual(op.batches.map((b) => b.rows));
      got.forEach((b, j) => {
        const want = op.batches[j]!;
        expect(Buffer.from(b.values.buffer).equals(Buffer.from(want.values.buffer))).toBe(true);
        expect(Buffer.from(b.timestampMs.buffer).equals(Buffer.from(want.timestampMs.buffer))).toBe(true);
        expect(Buffer.from(b.monotonicMs.buffer).equals(Buffer.from(want.monotonicMs.buffer))).toBe(true);
        // One columns array per series, as the sampler hands them out.
        expect(b.columns).toBe(got[0]!.columns);
      });
    });
  });

  test("replaying a recording rebuilds the summaries exactly and writes the same CSVs", async () => {
    for (const fixture of ["classic", "disk-gpu"]) {
      const { file, summaries } = await record(loadFixtureRun(fixture), tempDir());
      const dir = tempDir();
      const rebuilt: OperatorSummary[] = [];
      const spy: Sink = { name: "spy", start() {}, write() {}, operatorDone(_r, s) { rebuilt.push(s); }, end() {} };
      await replayInto(readRecording(file), [csv({ metricsDir: dir, out: silent, options: {} }), spy]);
      expect(rebuilt).toEqual(summaries);
      for (const name of readdirSync(dir)) expect(readFileSync(join(dir, name), "utf8")).toBe(expected(fixture, name));
    }
  });

  test("samples cost 8 bytes per value plus a few bytes per batch: columns are written once per series", async () => {
    const dir = tempDir();
    const sink = msgpack({ metricsDir: dir, out: silent, options: {} });
    const run = loadFixtureRun("classic").run;
    await sink.start(run);
    const batches = contractBatches("big", 100_000);
    for (const b of batches) await sink.write(b);
    await sink.end({ results: [], summaries: [], endedAtMs: 0, interval: { target: 1, p50: 1, p99: 1, samples: 100_000 }, interrupted: false });
    const raw = 100_000 * (contractColumns().length + 2) * 8;
    const size = statSync(join(dir, "classic.msgpack")).size;
    expect(size).toBeGreaterThan(raw);
    expect(size).toBeLessThan(raw * 1.01 + 20_000);
  });

  test("a file cut anywhere reads as the run up to its last complete record", async () => {
    const { file } = await record(loadFixtureRun("disk-gpu"), tempDir());
    const bytes = readFileSync(file);
    const full = readRecording(file);
    const cut = join(tempDir(), "cut.msgpack");
    const headerEnd = encode({ t: "run", v: RECORDING_VERSION, run: full.run }, { ignoreUndefined: true }).length;
    let previous = 0;
    for (let at = headerEnd; at < bytes.length; at += 7) {
      writeFileSync(cut, bytes.subarray(0, at));
      const partial = readRecording(cut);
      expect(partial.complete).toBe(false);
      expect(partial.run).toEqual(full.run);
      const rows = rowsOf(partial).reduce((a, b) => a + b, 0);
      expect(rows).toBeGreaterThanOrEqual(previous);
      previous = rows;
      // Whatever came back is exactly the start of the full run.
      partial.operators.forEach((op, i) => op.batches.forEach((b, j) => expect(Buffer.from(b.values.buffer).equals(Buffer.from(full.operators[i]!.batches[j]!.values.buffer))).toBe(true)));
    }
    expect(previous).toBe(rowsOf(full).reduce((a, b) => a + b, 0));
  });

  test("what is not a recording is an input error naming the file", () => {
    const dir = tempDir();
    const cases: Array<[string, string | Uint8Array, string]> = [
      ["empty.msgpack", "", "the file is empty"],
      ["text.msgpack", "timestamp,cpu_percent,memory\r\n", "it does not start with a run record"],
      ["newer.msgpack", new Uint8Array([0x82, 0xa1, 0x74, 0xa3, 0x72, 0x75, 0x6e, 0xa1, 0x76, 0x63]), "newer than this cpost reads"],
    ];
    for (const [name, content, message] of cases) {
      writeFileSync(join(dir, name), content);
      expect(() => readRecording(join(dir, name))).toThrow(expect.objectContaining({ code: "input", file: join(dir, name), message: expect.stringContaining(message) }));
    }
    expect(() => readRecording(join(dir, "absent.msgpack"))).toThrow(expect.objectContaining({ code: "input", message: expect.stringContaining("cannot read recording") }));
  });

  test("a run killed with SIGKILL leaves a recording readable up to the last second", async () => {
    const dir = tempDir();
    const child = Bun.spawn([BUN, join(RUNS_DIR, "crash-child.ts"), "msgpack", dir, "8"], { stdout: "pipe", stderr: "inherit" });
    const file = join(dir, "crash.msgpack");
    const kept = () => {
      if (!existsSync(file)) return 0;
      return rowsOf(readRecording(file)).reduce((a, b) => a + b, 0);
    };
    try {
      const { value } = await child.stdout.getReader().read();
      expect(new TextDecoder().decode(value)).toBe("wrote 2000\n");
      const deadline = performance.now() + 5000;
      while (kept() < 2000 && performance.now() < deadline) await Bun.sleep(20);
    } finally {
      child.kill("SIGKILL");
      await child.exited;
    }
    const recording = readRecording(file);
    expect(recording.complete).toBe(false);
    expect(rowsOf(recording)).toEqual([2000]);
    expect(recording.operators[0]!.result).toBeUndefined();

    // Replay says so, and still gives the operator's table, ended as interrupted.
    const replay = await cpostSource(["replay", file, "--sinks", "table"]);
    expect(replay.code).toBe(0);
    expect(replay.stderr).toContain(`warning: ${file} ends before the run did`);
    expect(replay.stdout).toMatch(/^\| crashing +\| CPU +\|/m);
    expect(replay.stdout).toMatch(/^\| \(Interrupted\) \| CPU sizing +\|/m);
  });

  test("`cpost replay` prints the same table and writes the same CSVs as the live run", async () => {
    const { file } = await record(loadFixtureRun("classic"), tempDir());
    const copy = join(tempDir(), "run.msgpack");
    copyFileSync(file, copy);
    const metrics = tempDir();
    const replay = await cpostSource(["replay", copy, "--sinks", "table,csv", "--metrics_dir", metrics]);
    expect(replay.stderr).toBe("");
    expect(replay.code).toBe(0);
    const stored = (op: string) => `Results are stored in ${join(metrics, `${op}_final_result.csv`)}\n`;
    expect(replay.stdout.split(/(?<=\n)/).filter((l) => !l.startsWith("Results are stored in")).join("")).toBe(expected("classic", "table.txt"));
    expect(replay.stdout).toContain(stored("dicom-reader"));
    for (const name of readdirSync(join(RUNS_DIR, "classic", "expected")).filter((f) => f.endsWith(".csv"))) {
      expect(readFileSync(join(metrics, name), "utf8")).toBe(expected("classic", name));
    }
    const missing = await cpostSource(["replay", join(metrics, "nope.msgpack")]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("nope.msgpack: cannot read recording");
    const noDir = await cpostSource(["replay", copy, "--sinks", "csv"]);
    expect(noDir.code).toBe(2);
    expect(noDir.stderr).toContain("the csv sink needs --metrics_dir");
  });
});
