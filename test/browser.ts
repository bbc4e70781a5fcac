/**
 * Real headless Chromium (Debian's /usr/bin/chromium, driven by
 * playwright-core) for the tests of the HTML report: opens a report from
 * its file, offline, and reports every console error, page error and
 * request that left the file.
 */
import { test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { IN_CI, REPO } from "./support.ts";

export const CHROMIUM = "/usr/bin/chromium";
export const hasChromium = existsSync(CHROMIUM);

/** Where tests leave screenshots for people to look at. */
export const ARTIFACTS = process.env.CPOST_TEST_ARTIFACTS ?? join(REPO, ".cache/test-artifacts");

/** A test that needs Chromium: skipped with its reason locally, failed in CI (test/setup.sh installs it). */
export function browserTest(name: string, fn: () => Promise<void>, timeoutMs = 60_000): void {
  if (hasChromium) test(name, fn, timeoutMs);
  else if (IN_CI) test(name, () => { throw new Error(`${CHROMIUM} is missing (CI requires it; run test/setup.sh)`); });
  else test.skip(`${name} (skipped: no ${CHROMIUM}; run test/setup.sh)`, fn);
}

/** An open report page and what happened while it loaded. */
export interface OpenedPage {
  page: Page;
  /** Console errors and uncaught page errors. */
  errors: string[];
  /** Requests to anything but the file itself (a self-contained page makes none). */
  requests: string[];
  close(): Promise<void>;
}

/** Opens `file` in a fresh headless Chromium profile, with the machine notes' flags. */
export async function openFile(file: string, viewport = { width: 1400, height: 900 }): Promise<OpenedPage> {
  const profile = mkdtempSync(join(tmpdir(), "cpost-chromium-"));
  let context: BrowserContext | undefined;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    const page = context.pages()[0] ?? (await context.newPage());
    const errors: string[] = [];
    const requests: string[] = [];
    page.on("console", (m) => m.type() === "error" && errors.push(`console: ${m.text()}`));
    page.on("pageerror", (e) => errors.push(`page: ${e.message}`));
    const url = `file://${file}`;
    await page.route("**/*", (route) => {
      const target = route.request().url();
      if (target === url) return route.continue();
      requests.push(target);
      return route.abort();
    });
    await page.goto(url, { waitUntil: "load" });
    const ctx = context;
    return {
      page,
      errors,
      requests,
      async close() {
        await ctx.close();
        rmSync(profile, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await context?.close();
    rmSync(profile, { recursive: true, force: true });
    throw e;
  }
}

/** Saves a full-page screenshot under ARTIFACTS; returns its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, name);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** One chart of a report page as drawn: its data series' colour counted on its canvas. */
export interface ChartInfo {
  id: string;
  operator: string;
  group: string;
  points: number;
  seriesDrawn: number;
  yMax: number;
  colorPixels: number;
}

/** Waits for the page script, then counts, per chart, canvas pixels in its data series' colours. */
export async function chartsOf(opened: OpenedPage): Promise<{ renderMs: number; readyMs: number; charts: ChartInfo[] }> {
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
    return { renderMs: report.renderMs, readyMs: report.readyMs, charts };
  })()`);
}
