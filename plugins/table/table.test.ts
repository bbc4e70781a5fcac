/**
 * The table sink draws exactly what the original CPOST printed (expected
 * outputs drawn by tabulate 0.8.9 in test/fixtures/runs/oracle.py), and stays
 * readable on narrow terminals.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { replayInto } from "../../core/sinks/recording.ts";
import { sinkFactory } from "../index.ts";
import tableSink from "./index.ts";
import { expected, loadFixtureRun } from "../../test/fixtures/runs/fixture-run.ts";

const table = sinkFactory(tableSink);
const ANSI = /\x1b\[[0-9;]*m/g;

async function draw(fixture: string, terminal: { isTTY: boolean; columns?: number } = { isTTY: false }, options: Record<string, string> = {}): Promise<string> {
  const out = { ...terminal, text: "", write(text: string) { out.text += text; return true; } };
  await replayInto(loadFixtureRun(fixture), [table({ out, options })]);
  return out.text;
}

const noColor = process.env.NO_COLOR;
afterEach(() => {
  if (noColor === undefined) delete process.env.NO_COLOR;
  else process.env.NO_COLOR = noColor;
});

describe("table sink", () => {
  test("per-operator summaries and the final grid, as CPOST drew them, with a failed, a single-sample and an empty operator", async () => {
    const text = await draw("classic");
    expect(text).toBe(expected("classic", "table.txt"));
    // What the README shows a user, line for line in shape.
    expect(text).toContain("_______________Operator dicom-reader Summary________________\n+---------------+------------+--------------------+--------------------+\n|    Metric     |  Average   |      Maximum       |      Resource      |");
    expect(text).toContain("| register-volume-images-for-rendering | CPU           |");
    expect(text).toContain("| (Non-zero exitcode)                  | CPU sizing    |");
    // The figures the Resource column rests on, beside the raw maxima (docs/sizing.md).
    expect(text).toContain("|  CPU sizing   |            | 570.161 % ± 69.214 | max over whole run |");
    expect(text).not.toContain("after-stop");
  });

  test("--table-samples all prints every row before each summary, as the original did without --metrics_dir", async () => {
    const text = await draw("classic", { isTTY: false }, { "table-samples": "all" });
    expect(text).toBe(expected("classic", "table-samples.txt"));
    expect(text).toContain("_____________Operator dicom-reader Metrics Data_____________\n+--------------------+-------------+------------+\n|     timestamp      | cpu_percent |   memory   |");
    expect(text).toContain("| 1732400000.2772534 |    5e-05    | 3.351616 |");
  });

  test("disk and GPU rows join when those metrics were collected", async () => {
    const text = await draw("disk-gpu");
    expect(text).toBe(expected("disk-gpu", "table.txt"));
    expect(text).toContain("| Disk read  |");
    expect(text).toContain("|    GPU     |");
  });

  test("--table-rows cpost keeps to the original's CPU and Memory rows", async () => {
    const text = await draw("disk-gpu", { isTTY: false }, { "table-rows": "cpost" });
    expect(text).not.toContain("Disk");
    expect(text).not.toContain("GPU");
    expect(text).toContain("|  CPU   | 203.316 % | 351.539 %  |   cpu: 4    |");
    expect(text).toContain("| (Non-zero exitcode)                                  | Memory   | 74.863 MB | 92.598 MB  | memory: 256 |");
  });

  test("a wide terminal gets the same layout, with colour only on the marker and resources", async () => {
    delete process.env.NO_COLOR;
    const text = await draw("classic", { isTTY: true, columns: 200 });
    expect(text).toContain("\x1b[31m(Non-zero exitcode)\x1b[0m");
    expect(text).toContain("\x1b[1mcpu: 6\x1b[0m");
    // Only requests and totals are bold, not what the sizing rows say they rest on.
    expect(text).toContain("| max over whole run |");
    expect(text.replace(ANSI, "")).toBe(expected("classic", "table.txt"));
  });

  test("no colour when NO_COLOR is set, nor when not a terminal", async () => {
    process.env.NO_COLOR = "1";
    expect(await draw("classic", { isTTY: true, columns: 200 })).not.toMatch(ANSI);
    delete process.env.NO_COLOR;
    expect(await draw("classic", { isTTY: false, columns: 200 })).not.toMatch(ANSI);
  });

  test("a narrower terminal wraps long operator names inside the grid", async () => {
    process.env.NO_COLOR = "1";
    const text = await draw("disk-gpu", { isTTY: true, columns: 100 });
    const lines = text.split("\n");
    expect(Math.max(...lines.map((l) => l.length))).toBeLessThanOrEqual(100);
    expect(text).toContain("| Operator");
    expect(text).toContain("+====");
    // Every piece of the long name is still there, in order.
    const nameCells = lines.filter((l) => l.startsWith("| ")).map((l) => l.split("|")[1]!.trim());
    expect(nameCells.join("")).toContain("spleen-segmentation-with-a-rather-long-operator-name");
  });

  test("a very narrow terminal lists each operator line by line", async () => {
    process.env.NO_COLOR = "1";
    const text = await draw("disk-gpu", { isTTY: true, columns: 40 });
    const lines = text.trimEnd().split("\n");
    expect(Math.max(...lines.map((l) => l.length))).toBeLessThanOrEqual(40);
    expect(text).toContain("  CPU\n    Average  203.316 %\n    Maximum  351.539 %\n    Resource cpu: 4\n");
    expect(text).toContain("dicom-writer (Non-zero exitcode)\n");
  });
});
