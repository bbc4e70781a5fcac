/**
 * The csv sink writes the original's `<operator>_final_result.csv` (expected
 * text from test/fixtures/runs/oracle.py), streams rows while the operator
 * runs, and keeps them when the process is killed.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { replayInto } from "../core/sinks/recording.ts";
import { pythonFloat } from "../core/sizing/summary.ts";
import type { MetricColumn, SampleBatch } from "../core/contracts/types.ts";
import csvSink from "./csv.ts";
import { expected, loadFixtureRun, RUNS_DIR } from "../test/fixtures/runs/fixture-run.ts";
import { contractBatches } from "../test/sinks-contract.ts";
import { BUN } from "../test/support.ts";
import { sinkFactory } from "./index.ts";

const csv = sinkFactory(csvSink);

const dirs: string[] = [];
const tempDir = () => {
  const dir = mkdtempSync(join(tmpdir(), "cpost-csv-"));
  dirs.push(dir);
  return dir;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Polls `check` until it returns true or `ms` pass. */
async function until(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    if (check()) return true;
    await Bun.sleep(20);
  }
  return check();
}

describe("csv sink", () => {
  for (const fixture of ["classic", "disk-gpu"]) {
    test(`${fixture}: every operator's CSV is byte for byte what the oracle expects`, async () => {
      const dir = tempDir();
      const out = { text: "", write(text: string) { out.text += text; return true; } };
      await replayInto(loadFixtureRun(fixture), [csv({ metricsDir: dir, out, options: {} })]);
      const want = readdirSync(join(RUNS_DIR, fixture, "expected")).filter((f) => f.endsWith(".csv")).sort();
      expect(readdirSync(dir).sort()).toEqual(want);
      for (const file of want) expect(readFileSync(join(dir, file), "utf8")).toBe(expected(fixture, file));
      expect(out.text.split("\n").filter(Boolean)).toEqual(loadFixtureRun(fixture).operators.filter((op) => op.result!.status !== "skipped").map((op) => `Results are stored in ${join(dir, `${op.result!.operator}_final_result.csv`)}`));
    });
  }

  test("the original's columns come first; a lone reading is its own row; an operator without samples gets the header", async () => {
    const dir = tempDir();
    await replayInto(loadFixtureRun("classic"), [csv({ metricsDir: dir, out: { write: () => true }, options: {} })]);
    const single = readFileSync(join(dir, "single-shot_final_result.csv"), "utf8").split("\r\n");
    expect(single[0]).toBe("timestamp,cpu_percent,memory,cpu.usage_ns,memory.working_set_bytes,pids.current");
    expect(single).toHaveLength(3);
    expect(single[1]).toMatch(/^\d{10}\.\d+,,1\.\d+,0,\d+,\d$/);
    expect(readFileSync(join(dir, "no-samples_final_result.csv"), "utf8")).toBe("timestamp,cpu_percent,memory\r\n");
  });

  test("the first three columns print numbers as Python's repr did", () => {
    // Left: doubles; right: what Python 3 printed for them with repr().
    const cases: Array<[number, string]> = [
      [0, "0.0"], [-0, "-0.0"], [1, "1.0"], [0.1, "0.1"], [1.5e-5, "1.5e-05"], [0.0001, "0.0001"], [0.00009999, "9.999e-05"],
      [1e16, "1e+16"], [1.2345e16, "1.2345e+16"], [9999999999999998, "9999999999999998.0"], [1732400000.0451822, "1732400000.0451822"],
      [5e-324, "5e-324"], [1e300, "1e+300"], [-2.5e-7, "-2.5e-07"], [0.30000000000000004, "0.30000000000000004"], [NaN, ""],
    ];
    expect(cases.map(([x]) => pythonFloat(x))).toEqual(cases.map(([, text]) => text));
  });

  test("a second series of the same operator is matched to the header by key and never paired with the first", async () => {
    const dir = tempDir();
    const col = (name: string): MetricColumn => ({ name, unit: "bytes", kind: "gauge", key: name, collector: "t" });
    const first = [col("cpu.percent"), col("memory.usage_bytes"), col("pids.current")];
    const second = [col("pids.current"), col("memory.usage_bytes"), col("cpu.percent"), col("memory.rss_bytes")];
    const batch = (columns: MetricColumn[], ts: number[], values: number[]): SampleBatch => ({ operator: "op", containerId: "c", columns, rows: ts.length, timestampMs: Float64Array.from(ts), monotonicMs: Float64Array.from(ts), values: Float64Array.from(values) });
    const sink = csv({ metricsDir: dir, out: { write: () => true }, options: {} });
    await sink.write(batch(first, [1000, 2000], [10, 2e6, 1, 30, 4e6, 3]));
    await sink.write(batch(second, [3000, 4000], [7, 6e6, 50, 1, 9, 8e6, 70, 1]));
    await sink.operatorDone({ operator: "op", containerId: "c", status: "succeeded", exitCode: 0, startedAtMs: 0, endedAtMs: 5000 }, undefined as never);
    await sink.end(undefined as never);
    expect(readFileSync(join(dir, "op_final_result.csv"), "utf8")).toBe("timestamp,cpu_percent,memory,pids.current\r\n1.5,30.0,3.0,2\r\n3.5,70.0,7.0,8\r\n");
  });

  test("rows reach the file within a second while the operator still runs, and survive kill -9", async () => {
    const dir = tempDir();
    const child = Bun.spawn([BUN, join(RUNS_DIR, "crash-child.ts"), "csv", dir, "8"], { stdout: "pipe", stderr: "inherit" });
    try {
      const reader = child.stdout.getReader();
      const { value } = await reader.read();
      expect(new TextDecoder().decode(value)).toBe("wrote 2000\n");
      const file = join(dir, "crashing_final_result.csv");
      // 2000 readings make 1999 rows after the header.
      const lines = () => (existsSync(file) ? readFileSync(file, "utf8").split("\r\n").length - 2 : 0);
      expect(await until(() => lines() === 1999, 5000)).toBe(true);
    } finally {
      child.kill("SIGKILL");
      await child.exited;
    }
    const text = readFileSync(join(dir, "crashing_final_result.csv"), "utf8");
    expect(text.endsWith("\r\n")).toBe(true);
    const rows = text.split("\r\n").slice(1, -1).map((l) => l.split(","));
    expect(rows).toHaveLength(1999);
    expect(rows.every((r) => r.length === 3 + 8)).toBe(true);
    const expectedFirst = contractBatches("crashing", 2)[0]!;
    expect(Number(rows[0]![0])).toBe((expectedFirst.timestampMs[0]! + expectedFirst.timestampMs[1]!) / 2 / 1000);
  });
});
