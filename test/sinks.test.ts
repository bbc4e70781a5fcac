/** The sink registry, replay's error isolation, and a live run replayed (the shared contract: sink-contracts.test.ts). */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { replayInto } from "../core/sinks/recording.ts";
import type { Sink } from "../core/contracts/types.ts";
import csvSink from "../plugins/csv.ts";
import { loadSinkFactories, sinkFactory } from "../plugins/index.ts";
import msgpackSink from "../plugins/msgpack.ts";
import tableSink from "../plugins/table/index.ts";
import { expected, loadFixtureRun } from "./fixtures/runs/fixture-run.ts";
import { compiledBinary, cpostSource, dockerTest, REPO, runProcess } from "./support.ts";

const csv = sinkFactory(csvSink);
const msgpack = sinkFactory(msgpackSink);
const table = sinkFactory(tableSink);

// Their contract runs, with every other registered sink, in sink-contracts.test.ts.

describe("sink registry", () => {
  test("table, csv and msgpack load by the names users type", async () => {
    const loaded = await loadSinkFactories(["table", "csv", "msgpack"]);
    expect(loaded.map((l) => l.name)).toEqual(["table", "csv", "msgpack"]);
    expect(loaded[0]!.factory).toBe(table);
    await expect(loadSinkFactories(["tabel"])).rejects.toThrow('unknown sink "tabel"');
  });

  test("csv without --metrics_dir is a usage error that says what to do", () => {
    expect(() => csv({ out: { write: () => true }, options: {} })).toThrow(expect.objectContaining({ code: "usage", hint: expect.stringContaining("--metrics_dir") }));
  });
});

describe("replayInto", () => {
  test("a throwing sink is reported once, named with its hook, and the others still get everything", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cpost-replay-iso-"));
    try {
      const calls: string[] = [];
      const broken: Sink = { name: "broken", start() {}, write() { calls.push("write"); throw new Error("disk on fire"); }, operatorDone() { calls.push("done"); }, end() { calls.push("end"); } };
      const errors: string[] = [];
      const recording = loadFixtureRun("classic");
      const sink = csv({ metricsDir: dir, out: { write: () => true }, options: {} });
      await replayInto(recording, [broken, sink], { onError: (e) => errors.push(`${e.plugin}/${e.hook}: ${e.message}`) });
      expect(errors).toEqual(["broken/write: broken: write failed: disk on fire"]);
      expect(calls).toEqual(["write", "end"]);
      expect(readdirSync(dir).sort()).toEqual(["dicom-reader_final_result.csv", "no-samples_final_result.csv", "register-volume-images-for-rendering_final_result.csv", "single-shot_final_result.csv"]);
      // Without onError the failure surfaces after the others finished.
      await expect(replayInto(recording, [broken])).rejects.toThrow("1 sink(s) failed during replay");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("live run and replay", () => {
  // The example pipeline through the real engine: the CSVs and table of the live run come back byte for byte from its recording.
  dockerTest("a live run's CSVs and table are reproduced exactly by `cpost replay` of its msgpack recording", async () => {
    const live = mkdtempSync(join(tmpdir(), "cpost-live-"));
    const again = mkdtempSync(join(tmpdir(), "cpost-replayed-"));
    try {
      const pipeline = join(REPO, "examples/diamond/pipeline.yaml");
      const run = await cpostSource(["run", pipeline, join(REPO, "examples/diamond/input"), "--collectors", "cgroup,blkio", "--sinks", "table,csv,msgpack", "--metrics_dir", live, "--quiet"]);
      expect(run.stderr).not.toContain("cpost:");
      expect(run.code).toBe(0);
      const recording = join(live, "diamond-example.msgpack");
      expect(run.stdout).toContain(`Run recorded in ${recording}\n`);
      const csvs = readdirSync(live).filter((f) => f.endsWith(".csv")).sort();
      expect(csvs).toEqual(["audit", "measure", "reader", "segment", "writer"].map((op) => `${op}_final_result.csv`));
      // segment busy-loops for 1.5 s: its CSV has rows and they show CPU (how much depends on the
      // machine's load; the accuracy tests measure that, this one only that live data flowed).
      const segment = readFileSync(join(live, "segment_final_result.csv"), "utf8").split("\r\n");
      expect(segment[0]!.startsWith("timestamp,cpu_percent,memory,")).toBe(true);
      expect(segment.length).toBeGreaterThan(50);
      expect(Math.max(...segment.slice(1, -1).map((l) => Number(l.split(",")[1] || 0)))).toBeGreaterThan(5);

      const replay = await cpostSource(["replay", recording, "--sinks", "table,csv", "--metrics_dir", again]);
      expect(replay.stderr).toBe("");
      expect(replay.code).toBe(0);
      for (const file of csvs) expect(readFileSync(join(again, file), "utf8")).toBe(readFileSync(join(live, file), "utf8"));
      const tables = (text: string) => text.split(/(?<=\n)/).filter((l) => !/^(Results are stored in|Run recorded in) /.test(l)).join("");
      expect(tables(replay.stdout)).toBe(tables(run.stdout));
      expect(tables(run.stdout)).toContain("| segment    | CPU           |");

      // The single executable loads the sinks lazily as well.
      const binary = await runProcess([await compiledBinary(), "replay", recording, "--sinks", "table"], { cwd: "/tmp" });
      expect(binary.code).toBe(0);
      expect(binary.stdout).toBe(tables(run.stdout));
    } finally {
      rmSync(live, { recursive: true, force: true });
      rmSync(again, { recursive: true, force: true });
    }
  }, 240_000);

  test("the compiled executable replays a fixture recording into the expected table", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cpost-bin-replay-"));
    try {
      const out = { write: () => true };
      await replayInto(loadFixtureRun("classic"), [msgpack({ metricsDir: dir, out, options: {} })]);
      const binary = await runProcess([await compiledBinary(), "replay", join(dir, "classic.msgpack")], { cwd: "/tmp", env: { PATH: "/usr/bin:/bin", NODE_PATH: undefined } });
      expect(binary.stderr).toBe("");
      expect(binary.stdout).toBe(expected("classic", "table.txt"));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});
