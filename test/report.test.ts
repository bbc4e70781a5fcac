/**
 * The HTML report: min/max downsampling against brute force, the html sink,
 * and the page itself in real headless Chromium (no errors, no requests,
 * one drawn chart per operator per metric, peaks kept), including an hour
 * at 1 kHz (3.6 million samples).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CpostError } from "../core/contracts/errors.ts";
import type { MetricColumn, SampleBatch } from "../core/contracts/types.ts";
import { defineMinMaxSeries } from "../plugins/html/downsample.ts";
import htmlSink, { defineHtmlSink, htmlOutputPath } from "../plugins/html/index.ts";
import { sinkFactory } from "../plugins/index.ts";
import { browserTest, chartsOf, openFile, screenshot } from "./browser.ts";
import { CPU_COLUMNS, embedded, extremes, feedFixtureRun, FULL_COLUMNS, type FixtureOperator } from "./report-fixture.ts";
import { compiledBinary, cpostSource, REPO, runProcess } from "./support.ts";

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "cpost-report-"));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const col = (name: string): MetricColumn => ({ name, key: name, unit: "percent", kind: "gauge", collector: "test" });

function batchOf(columns: readonly MetricColumn[], times: number[], rows: number[][]): SampleBatch {
  return {
    operator: "op",
    containerId: "c",
    columns,
    rows: times.length,
    timestampMs: Float64Array.from(times, (t) => 1.7e12 + t),
    monotonicMs: Float64Array.from(times),
    values: Float64Array.from(rows.flat()),
  };
}

/** A deterministic pseudo-random sequence (the test must give the same data every run). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}

describe("min/max downsampling", () => {
  test("keeps every sample while the series fits in its buckets", () => {
    const series = defineMinMaxSeries(64);
    const times = [0, 3, 7, 12, 20];
    series.add(batchOf([col("a")], times, times.map((t) => [t * 10])));
    const d = series.digest();
    expect(d.rows).toBe(5);
    expect(d.bucketMs).toBe(1);
    expect([...d.bucketStartMs]).toEqual(times);
    expect([...d.first[0]!]).toEqual([0, 30, 70, 120, 200]);
    expect([...d.second[0]!]).toEqual([0, 30, 70, 120, 200]);
    expect(d.spanMs).toBe(20);
    expect(d.startEpochMs).toBe(1.7e12);
  });

  test("after many merges each bucket holds exactly the min and max of its samples, in time order", () => {
    const buckets = 64;
    const series = defineMinMaxSeries(buckets);
    const random = lcg(42);
    const columns = [col("a"), col("b")];
    const times: number[] = [];
    const values: number[][] = [];
    let t = 5; // a series need not start at 0: buckets align on its first sample
    for (let i = 0; i < 100_000; i++) {
      t += 0.5 + random(); // jittered ~1 ms intervals
      times.push(t);
      // b is unmeasured (NaN) a third of the time, and has one single-sample spike.
      values.push([random() * 100, i % 3 === 0 ? NaN : i === 77_777 ? 1e6 : random()]);
    }
    for (let i = 0; i < times.length; i += 250) series.add(batchOf(columns, times.slice(i, i + 250), values.slice(i, i + 250)));
    const d = series.digest();
    expect(d.rows).toBe(100_000);
    expect(d.bucketStartMs.length).toBeLessThanOrEqual(buckets);
    expect(d.bucketStartMs.length).toBeGreaterThan(buckets / 2 - 1);
    expect(d.bucketMs).toBeGreaterThan(1);
    // Brute force over the raw samples, bucket by bucket.
    for (const [b, start] of d.bucketStartMs.entries()) {
      for (const c of [0, 1]) {
        let min = Infinity, max = -Infinity, minAt = 0, maxAt = 0;
        times.forEach((time, i) => {
          const rel = time - times[0]!;
          const v = values[i]![c]!;
          if (rel < start || rel >= start + d.bucketMs || Number.isNaN(v)) return;
          if (v < min) [min, minAt] = [v, rel];
          if (v > max) [max, maxAt] = [v, rel];
        });
        const expected = maxAt < minAt ? [max, min] : [min, max];
        expect([d.first[c]![b], d.second[c]![b]]).toEqual(expected);
      }
    }
    expect(Math.max(...d.second[1]!, ...d.first[1]!)).toBe(1e6);
  });

  test("a column that appears late and a column never measured", () => {
    const series = defineMinMaxSeries(8);
    series.add(batchOf([col("a")], [0, 1], [[1], [2]]));
    series.add(batchOf([col("a"), col("late"), col("never")], [2, 3], [[3, NaN, NaN], [4, 9, NaN]]));
    const d = series.digest();
    expect(d.columns.map((c) => c.key)).toEqual(["a", "late", "never"]);
    expect([...d.first[1]!].map((v) => (Number.isNaN(v) ? null : v))).toEqual([null, null, null, 9]);
    expect([...d.first[2]!].every(Number.isNaN)).toBe(true);
    expect(() => defineMinMaxSeries(7)).toThrow(CpostError);
  });
});

describe("html sink", () => {
  test("writes to --html-out, else <metrics_dir>/report.html, and says what to give when it has neither", () => {
    expect(htmlOutputPath({ metricsDir: "/m", options: {} })).toBe("/m/report.html");
    expect(htmlOutputPath({ metricsDir: "/m", options: { out: "/x/r.html" } })).toBe("/x/r.html");
    let thrown: unknown;
    try {
      sinkFactory(htmlSink)({ options: {} });
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(CpostError);
    expect((thrown as CpostError).code).toBe("usage");
    expect((thrown as CpostError).hint).toContain("--metrics_dir");
  });
});

describe("the report in Chromium", () => {
  browserTest("a run's report: no errors, no requests, one drawn chart per operator per metric, failures and facts shown", async () => {
    const dir = tempDir();
    const path = join(dir, "report.html");
    const ops: FixtureOperator[] = [
      { series: { operator: "segment", columns: FULL_COLUMNS, rows: 20_000, intervalMs: 1, spike: { row: 12_345, value: 1234.5 } }, requests: { cpu: 2, memory: 1024 } },
      { series: { operator: "writer</script><b>", columns: CPU_COLUMNS, rows: 3_000, intervalMs: 10 }, status: "failed", exitCode: 3, reason: "exited with code 3" },
      { series: { operator: "audit", columns: CPU_COLUMNS, rows: 0, intervalMs: 10 }, status: "skipped", reason: "an upstream operator failed" },
    ];
    await feedFixtureRun(defineHtmlSink({ path }), ops);
    const html = readFileSync(path, "utf8");
    // Self-contained: nothing is fetched, nothing points outside the file.
    expect(html).not.toMatch(/<(script|link|img)[^>]+(src|href)=/i);
    expect(html).toContain("uPlot");
    const data = embedded(html);
    const cpu = data.charts.find((c) => c.operator === "segment" && c.group === "cpu")!;
    expect(extremes(cpu.series[0]!.values).max).toBe(1234.5);
    expect(cpu.series.filter((s) => s.role !== "data").map((s) => [s.label, s.value])).toEqual([["requested", 200], ["recommended", 1300]]);

    const opened = await openFile(path);
    try {
      const { renderMs, charts } = await chartsOf(opened);
      console.log(`report of 3 operators, ${charts.length} charts: rendered in ${renderMs.toFixed(1)} ms`);
      expect(opened.errors).toEqual([]);
      expect(opened.requests).toEqual([]);
      expect(charts.map((c) => `${c.operator}/${c.group}`)).toEqual([
        "segment/cpu",
        "segment/memory",
        "segment/disk",
        "segment/gpu",
        "segment/gpu-memory",
        "writer</script><b>/cpu",
        "writer</script><b>/memory",
        "writer</script><b>/disk",
      ]);
      for (const c of charts) {
        expect(c.points).toBeGreaterThan(100);
        expect(c.seriesDrawn).toBeGreaterThan(0);
        expect(c.colorPixels).toBeGreaterThan(100); // the series' own colour is on the canvas
      }
      expect(charts[0]!.yMax).toBeGreaterThanOrEqual(1234.5);
      const page = opened.page;
      expect(await page.title()).toBe("cpost report: fixture <pipeline>");
      expect(await page.locator("table.summary tr.bad").count()).toBe(1);
      expect(await page.locator("table.summary tr.bad td").first().textContent()).toBe("writer</script><b>");
      expect(await page.locator("section.operator.failed .failure").textContent()).toBe("failed: exit code 3: exited with code 3");
      expect(await page.locator("section.operator").nth(2).locator(".nodata").count()).toBe(1);
      const facts = await page.locator("#facts").textContent();
      for (const fact of ["fixture-host", "2 CPUs", "docker 20.10.24", "cgroupv1", "target 1 ms; achieved p50 1.00 ms, p99 1.30 ms", "cpost 0.1.0-test"]) {
        expect(facts).toContain(fact);
      }
      console.log(`screenshot: ${await screenshot(page, "report-small.png")}`);
    } finally {
      await opened.close();
    }
  });

  browserTest(
    "an hour at 1 kHz (3.6 million samples): under 20 MB, every peak kept, rendered in Chromium",
    async () => {
      const dir = tempDir();
      const path = join(dir, "report.html");
      const rows = 3_600_000;
      const spike = { row: 2_345_678, value: 1999 };
      const dip = { row: 3_000_001, value: 1e6 };
      const heapBefore = process.memoryUsage().heapUsed;
      const t0 = performance.now();
      await feedFixtureRun(defineHtmlSink({ path }), [{ series: { operator: "long", columns: FULL_COLUMNS, rows, intervalMs: 1, spike, dip } }]);
      const feedMs = performance.now() - t0;
      const size = statSync(path).size;
      console.log(
        `3.6M samples x ${FULL_COLUMNS.length} columns: generated + fed + rendered in ${feedMs.toFixed(0)} ms; report ${(size / 1e6).toFixed(2)} MB; ` +
          `heap +${((process.memoryUsage().heapUsed - heapBefore) / 1e6).toFixed(1)} MB`,
      );
      expect(size).toBeLessThan(20e6);
      const data = embedded(readFileSync(path, "utf8"));
      const cpu = data.charts.find((c) => c.group === "cpu")!;
      const memory = data.charts.find((c) => c.group === "memory")!;
      expect(extremes(cpu.series[0]!.values).max).toBe(spike.value);
      expect(extremes(memory.series[0]!.values).min).toBe(dip.value / 1e6);
      // The x axis still spans the whole hour.
      expect(cpu.x.at(-1)!).toBeGreaterThan(3590);

      const opened = await openFile(path);
      try {
        const { renderMs, readyMs, charts } = await chartsOf(opened);
        const points = charts.reduce((n, c) => n + c.points, 0);
        console.log(`3.6M-sample report in Chromium: ${charts.length} charts, ${points} points, built and drawn in ${renderMs.toFixed(1)} ms, ${readyMs.toFixed(0)} ms from navigation (bench/report.ts measures it)`);
        expect(opened.errors).toEqual([]);
        expect(opened.requests).toEqual([]);
        expect(charts.map((c) => c.group)).toEqual(["cpu", "memory", "disk", "gpu", "gpu-memory"]);
        for (const c of charts) expect(c.colorPixels).toBeGreaterThan(100);
        expect(charts[0]!.yMax).toBeGreaterThanOrEqual(spike.value);
        console.log(`screenshot: ${await screenshot(opened.page, "report-hour-1khz.png")}`);
      } finally {
        await opened.close();
      }
    },
    120_000,
  );
});

/** Records a made-up run with the msgpack sink, as `--sinks msgpack` would. */
async function recordFixture(file: string, ops: FixtureOperator[]): Promise<void> {
  const msgpack = sinkFactory((await import("../plugins/msgpack.ts")).default);
  const quiet = { write: () => true };
  await feedFixtureRun(await msgpack({ options: { "msgpack-file": file }, out: quiet }), ops);
}

const RECORDED_OPS: FixtureOperator[] = [
  { series: { operator: "segment", columns: FULL_COLUMNS, rows: 20_000, intervalMs: 1, spike: { row: 4_321, value: 777.5 } }, requests: { cpu: 1, memory: 256 } },
  { series: { operator: "writer", columns: CPU_COLUMNS, rows: 3_000, intervalMs: 10 }, status: "failed", exitCode: 2, reason: "exited with code 2" },
];

describe("cpost report", () => {
  browserTest(
    "the compiled binary turns a recording into a report that opens in Chromium",
    async () => {
      const dir = tempDir();
      const recording = join(dir, "run.msgpack");
      await recordFixture(recording, RECORDED_OPS);
      const bin = await compiledBinary();
      const out = join(dir, "out", "report.html");
      // A bare environment outside the repo: uPlot must come from inside the binary.
      const env = { PATH: "/usr/bin:/bin", HOME: "/tmp", NODE_PATH: undefined, BUN_INSTALL: undefined };
      const res = await runProcess([bin, "report", recording, "-o", out], { cwd: "/tmp", env });
      expect(res.stderr).toBe("");
      expect(res.code).toBe(0);
      expect(res.stdout).toBe(`report of 2 operators, 23000 samples: ${out}\n`);
      const html = readFileSync(out, "utf8");
      // Summaries rebuilt by replay from the samples themselves.
      expect(html).toContain("<td>777.5</td>");
      expect(extremes(embedded(html).charts[0]!.series[0]!.values).max).toBe(777.5);
      const opened = await openFile(out);
      try {
        const { charts } = await chartsOf(opened);
        expect(opened.errors).toEqual([]);
        expect(opened.requests).toEqual([]);
        expect(charts.map((c) => `${c.operator}/${c.group}`)).toEqual([
          "segment/cpu", "segment/memory", "segment/disk", "segment/gpu", "segment/gpu-memory", "writer/cpu", "writer/memory", "writer/disk",
        ]);
        for (const c of charts) expect(c.colorPixels).toBeGreaterThan(100);
        expect(await opened.page.locator("table.summary tr.bad td").first().textContent()).toBe("writer");
      } finally {
        await opened.close();
      }
    },
    180_000,
  );

  test("a truncated recording still gives a report, marked incomplete, its last operator interrupted", async () => {
    const dir = tempDir();
    const recording = join(dir, "run.msgpack");
    await recordFixture(recording, RECORDED_OPS);
    const bytes = readFileSync(recording);
    const cut = join(dir, "cut.msgpack");
    writeFileSync(cut, bytes.subarray(0, Math.floor(bytes.length / 2)));
    const res = await cpostSource(["report", cut]);
    expect(res.code).toBe(0);
    expect(res.stdout).toContain(`${join(dir, "cut.html")} (the recording is incomplete`);
    const html = readFileSync(join(dir, "cut.html"), "utf8");
    expect(html).toContain("This recording is incomplete");
    expect(html).toContain(`<span class="badge interrupted">interrupted</span>`);
    expect(html).not.toContain("writer");
    expect(embedded(html).charts.map((c) => c.group)).toEqual(["cpu", "memory", "disk", "gpu", "gpu-memory"]);
  });

  test("bad input: a missing file or one that is no recording exits 2 and says what to give", async () => {
    const missing = await cpostSource(["report", "/nonexistent/run.msgpack", "-o", join(tempDir(), "r.html")]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("/nonexistent/run.msgpack: cannot read recording");
    expect(missing.stderr).toContain("hint: give the .msgpack file a run wrote with --sinks msgpack");
    const notOne = await cpostSource(["report", join(REPO, "examples/diamond/pipeline.yaml")]);
    expect(notOne.code).toBe(2);
    expect(notOne.stderr).toContain("not a cpost recording");
    const none = await cpostSource(["report"]);
    expect(none.code).toBe(2);
  });
});
