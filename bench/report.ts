/**
 * Benchmark of the HTML report for an hour at 1 kHz (3.6 million samples of
 * 8 metrics): html sink ingest rate and memory, report size, and render time
 * in headless Chromium; each beside a baseline measured in the same run (a
 * bare pass over the same values; the same CPU series drawn raw by uPlot).
 *
 *   node_modules/.bin/bun bench/report.ts [rows]
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import uplotJs from "uplot/dist/uPlot.iife.min.js" with { type: "text" };
import type { SampleBatch } from "../core/contracts/types.ts";
import { defineHtmlSink } from "../plugins/html/index.ts";
import { openFile } from "../test/browser.ts";
import { feedFixtureRun, fixtureBatches, fixtureOperator, fixtureRun, FULL_COLUMNS, type SeriesSpec } from "../test/report-fixture.ts";

const rows = Number(process.argv[2] ?? 3_600_000);
const dir = mkdtempSync(join(tmpdir(), "cpost-bench-report-"));
const spec: SeriesSpec = { operator: "long", columns: FULL_COLUMNS, rows, intervalMs: 1, spike: { row: Math.floor(rows * 0.65), value: 1999 } };

// The same batches for both passes: generated once a minute's worth, then reused with shifted times.
const minute: SampleBatch[] = [...fixtureBatches({ ...spec, rows: Math.min(rows, 60_000) })];
function* hour(): Generator<SampleBatch> {
  for (let done = 0, lap = 0; done < rows; lap++) {
    for (const b of minute) {
      if (done >= rows) return;
      const shift = lap * 60_000;
      yield { ...b, monotonicMs: b.monotonicMs.map((t) => t + shift), timestampMs: b.timestampMs.map((t) => t + shift) };
      done += b.rows;
    }
  }
}

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
}

// Baseline: the least any consumer must do, one pass over every value.
const baseMs: number[] = [];
for (let k = 0; k < 3; k++) {
  const t0 = performance.now();
  let sum = 0;
  for (const b of hour()) for (let i = 0; i < b.values.length; i++) sum += b.values[i]! === b.values[i]! ? b.values[i]! : 0;
  baseMs.push(performance.now() - t0);
  if (sum === 42) console.log(""); // keep the loop
}

const path = join(dir, "report.html");
const sinkMs: number[] = [];
let heapGrowth = 0;
for (let k = 0; k < 3; k++) {
  Bun.gc(true);
  const heap0 = process.memoryUsage().heapUsed;
  const sink = defineHtmlSink({ path });
  const t0 = performance.now();
  await sink.start(fixtureRun([fixtureOperator("long")], 1));
  for (const b of hour()) await sink.write(b);
  sinkMs.push(performance.now() - t0);
  heapGrowth = process.memoryUsage().heapUsed - heap0;
  await sink.end({ results: [], summaries: [], endedAtMs: 0, interval: { target: 1, p50: 1, p99: 1, samples: rows }, interrupted: false });
}

// The full report, as a live run writes it (with summaries and results).
await feedFixtureRun(defineHtmlSink({ path }), [{ series: spec }]);
const size = statSync(path).size;

// Raw baseline: the whole CPU series, every sample, in one uPlot chart.
const rawPath = join(dir, "raw.html");
const cpu = new Array<number>(rows);
const x = new Array<number>(rows);
let at = 0;
for (const b of hour()) {
  for (let r = 0; r < b.rows; r++, at++) {
    x[at] = Math.round(b.monotonicMs[r]!) / 1000;
    cpu[at] = Number(b.values[r * FULL_COLUMNS.length]!.toFixed(2));
  }
}
writeFileSync(
  rawPath,
  `<!doctype html><html><body><div id="c"></div><script>${uplotJs}</script><script>
  var t0 = performance.now(); var d = ${JSON.stringify([x, cpu])};
  new uPlot({ width: 1200, height: 220, scales: { x: { time: false } }, series: [{}, { stroke: "#1f77b4" }] }, d, document.getElementById("c"));
  setTimeout(function () { window.cpostReport = { renderMs: performance.now() - t0, readyMs: performance.now() }; document.documentElement.setAttribute("data-cpost-ready", "1"); }, 0);
  </script></body></html>`,
);

/** Chart construction to drawn, and navigation start to drawn, in Chromium's own clock. */
async function timings(file: string): Promise<{ renderMs: number; readyMs: number }> {
  const opened = await openFile(file);
  try {
    await opened.page.waitForSelector("html[data-cpost-ready]", { timeout: 120_000 });
    if (opened.errors.length > 0) throw new Error(`${file}: ${opened.errors.join("; ")}`);
    return (await opened.page.evaluate("({ renderMs: window.cpostReport.renderMs, readyMs: window.cpostReport.readyMs })")) as { renderMs: number; readyMs: number };
  } finally {
    await opened.close();
  }
}
const page: Array<{ renderMs: number; readyMs: number }> = [];
const raw: Array<{ renderMs: number; readyMs: number }> = [];
for (let k = 0; k < 3; k++) {
  page.push(await timings(path));
  raw.push(await timings(rawPath));
}
const rawSize = statSync(rawPath).size;
rmSync(dir, { recursive: true, force: true });

const mrows = (rows / 1e6).toFixed(2);
console.log(`html report, ${mrows} M samples x ${FULL_COLUMNS.length} metrics (1 kHz), median of 3:`);
console.log(`  ingest (html sink write):  ${median(sinkMs).toFixed(0)} ms = ${((rows / median(sinkMs)) * 1e3 / 1e6).toFixed(1)} M rows/s; baseline bare pass ${median(baseMs).toFixed(0)} ms (ratio ${(median(sinkMs) / median(baseMs)).toFixed(2)})`);
console.log(`  heap growth while ingesting: ${(heapGrowth / 1e6).toFixed(1)} MB (batches are garbage once written)`);
console.log(`  report file: ${(size / 1e6).toFixed(2)} MB (limit 20 MB); raw CPU-only page: ${(rawSize / 1e6).toFixed(1)} MB`);
const pick = (xs: Array<{ renderMs: number; readyMs: number }>, k: "renderMs" | "readyMs") => median(xs.map((x) => x[k]));
console.log(`  Chromium, charts built and drawn: ${pick(page, "renderMs").toFixed(0)} ms (limit 2000); baseline raw uPlot of the CPU series alone: ${pick(raw, "renderMs").toFixed(0)} ms (ratio ${(pick(page, "renderMs") / pick(raw, "renderMs")).toFixed(2)})`);
console.log(`  Chromium, navigation to drawn: ${pick(page, "readyMs").toFixed(0)} ms; baseline raw: ${pick(raw, "readyMs").toFixed(0)} ms (ratio ${(pick(page, "readyMs") / pick(raw, "readyMs")).toFixed(3)})`);
