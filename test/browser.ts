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
