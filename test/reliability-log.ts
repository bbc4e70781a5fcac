/**
 * What the reliability tests tried and what happened, kept as JSON under
 * .cache/reliability/ (one file per test file, one entry per check, the
 * latest run of each check winning) so that test/reliability-report.ts can
 * render docs/reliability.md from the tests themselves.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO } from "./support.ts";

/** Where the entries are kept. */
const RELIABILITY_DIR = join(REPO, ".cache/reliability");
/**
 * Entries of opt-in tests (not in the default suite, e.g. CPOST_CLUSTER=1), also kept in the
 * repository: a full run starts .cache/reliability afresh and would drop their last result.
 */
const KEPT_DIR = join(REPO, "test/reliability-kept");

/** One check: what was done to cpost, what it did, and whether that is what it must do. */
export interface ReliabilityEntry {
  /** Fault, bad input, load and soak, or security. */
  area: string;
  tried: string;
  happened: string;
  result: "survived" | "FAILED";
  /** ISO time of the run that recorded it. */
  at: string;
}

function write(file: string, entries: Record<string, ReliabilityEntry>, dir = RELIABILITY_DIR): void {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${file}.json`);
  // Renamed into place: a reader (or a test file running beside this one) never sees half a file.
  const temp = `${path}.${process.pid}.tmp`;
  writeFileSync(temp, `${JSON.stringify(entries, null, 2)}\n`);
  renameSync(temp, path);
}

function read(file: string, dir = RELIABILITY_DIR): Record<string, ReliabilityEntry> {
  const path = join(dir, `${file}.json`);
  if (!existsSync(path)) return {};
  try {
    return JSON.parse(readFileSync(path, "utf8")) as Record<string, ReliabilityEntry>;
  } catch {
    return {};
  }
}

/**
 * A recorder for one test file. `check(area, tried, body)` runs the body (a
 * test's assertions), which returns what happened in words; the entry says
 * "survived" when the body passed and "FAILED" with the error otherwise,
 * and the error is thrown on so the test fails.
 */
export function defineReliabilityLog(file: string, options: { kept?: boolean } = {}) {
  return {
    async check(area: string, tried: string, body: () => Promise<string> | string): Promise<void> {
      const save = (happened: string, result: ReliabilityEntry["result"]) => {
        for (const dir of options.kept ? [RELIABILITY_DIR, KEPT_DIR] : [RELIABILITY_DIR]) {
          const entries = read(file, dir);
          entries[tried] = { area, tried, happened, result, at: new Date().toISOString() };
          write(file, entries, dir);
        }
      };
      let happened: string;
      try {
        happened = await body();
      } catch (error) {
        // bun's expect() colours its messages: the table wants plain text.
        const message = (error instanceof Error ? error.message : String(error)).replace(/\x1b\[[0-9;]*m/g, "");
        save(message.split("\n").filter((l) => l.trim() !== "").slice(0, 3).join(" "), "FAILED");
        throw error;
      }
      save(happened, "survived");
    },
  };
}

/** Every entry recorded so far, by test file. */
export function readReliabilityEntries(): Array<ReliabilityEntry & { file: string }> {
  const out: Array<ReliabilityEntry & { file: string }> = [];
  const seen = new Set<string>();
  // This machine's records first; a kept entry only where this machine has no newer record of that check.
  for (const dir of [RELIABILITY_DIR, KEPT_DIR]) {
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) {
      if (!name.endsWith(".json")) continue;
      const file = name.slice(0, -".json".length);
      for (const entry of Object.values(read(file, dir))) {
        if (seen.has(`${file}\0${entry.tried}`)) continue;
        seen.add(`${file}\0${entry.tried}`);
        out.push({ ...entry, file });
      }
    }
  }
  return out;
}
