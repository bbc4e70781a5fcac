/**
 * The HTML report: min/max downsampling against brute force, the html sink,
 * and the page itself in real headless Chromium (no errors, no requests,
 * one drawn chart per operator per metric, peaks kept), including an hour
 * at 1 kHz (3.6 million samples).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CpostError } from "../core/errors.ts";
import type { MetricColumn, SampleBatch } from "../core/types.ts";
import { defineMinMaxSeries } from "../plugins/downsample.ts";
import htmlFactory, { defineHtmlSink, htmlOutputPath } from "../plugins/html.ts";
import { browserTest, openFile, screenshot, type OpenedPage } from "./browser.ts";
import { CPU_COLUMNS, feedFixtureRun, FULL_COLUMNS, type FixtureOperator } from "./report-fixture.ts";

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
    expect(htmlOutputPath({ metricsDir: "/m", options: { "html-out": "/x/r.html" } })).toBe("/x/r.html");
    let thrown: unknown;
    try {
      htmlFactory({ options: {} });
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(CpostError);
    expect((thrown as CpostError).code).toBe("usage");
    expect((thrown as CpostError).hint).toContain("--metrics_dir");
  });
});

interface ChartInfo {
  id: string;
  operator: string;
  group: string;
  points: number;
  seriesDrawn: number;
  yMax: number;
  colorPixels: number;
}

/** Waits for the page script, then counts, per chart, canvas pixels in its data series' colours. */
async function chartsOf(opened: OpenedPage): Promise<{ renderMs: number; charts: ChartInfo[] }> {
  await opened.page.waitForSelector("html[data-cpost-ready]", { timeout: 20_000 });
  return opened.page.evaluate(`(() => {
    const report = window.cpostReport;
    const charts = report.charts.map((c) => {
      const canvas = document.querySelector("#" + c.id + " canvas");
      const img = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      const want = c.colors.map((h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)));
      let colorPixels = 0;
      for (let p = 0; p < img.length; p += 4) {
        if (img[p + 3] < 200) continue;
        if (want.some((w) => Math.abs(img[p] - w[0]) < 24 && Math.abs(img[p + 1] - w[1]) < 24 && Math.abs(img[p + 2] - w[2]) < 24)) colorPixels++;
      }
      return { ...c, colorPixels };
    });
    return { renderMs: report.renderMs, charts };
  })()`);
}

/** The chart data embedded in a report, as the page parses it. */
function embedded(html: string): { charts: Array<{ operator: string; group: string; x: number[]; series: Array<{ label: string; role: string; values?: Array<number | null>; value?: number }> }> } {
  const m = html.match(/<script type="application\/json" id="cpost-data">([\s\S]*?)<\/script>/);
  if (!m) throw new Error("no embedded chart data in the report");
  return JSON.parse(m[1]!);
}

function extremes(values: Array<number | null> | undefined): { min: number; max: number } {
  const v = (values ?? []).filter((x): x is number => x !== null);
  return { min: Math.min(...v), max: Math.max(...v) };
}

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
        const { renderMs, charts } = await chartsOf(opened);
        console.log(`3.6M-sample report in Chromium: ${charts.length} charts, ${charts.reduce((n, c) => n + c.points, 0)} points, rendered in ${renderMs.toFixed(1)} ms`);
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
