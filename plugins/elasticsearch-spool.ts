/**
 * The es sink's disk spool: bulk items Elasticsearch has not taken yet, as
 * NDJSON files (exactly the `_bulk` body to resend), bounded in size.
 * Several cpost processes may share one spool: a file is claimed by an
 * atomic rename before sending, and claims of dead processes are returned.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CpostError } from "../core/errors.ts";

/** A spool directory for one Elasticsearch cluster. */
export interface Spool {
  readonly dir: string;
  readonly maxBytes: number;
  /** Stores items as one file; false when that would pass `maxBytes` (nothing stored). */
  put(items: string[]): boolean;
  /** Takes the oldest unclaimed file; `release` stores what is still unsent and drops the file. */
  claim(): { items: string[]; release(unsent: string[]): void } | undefined;
  /** Documents and bytes waiting, in all processes' files. */
  pending(): { files: number; docs: number; bytes: number };
}

// <ms>-<pid>-<seq>-<docs>.ndjson: oldest first by name, document count without reading.
const FILE = /^(\d{15})-(\d+)-(\d+)-(\d+)\.ndjson$/;
const CLAIMED = /^(.+\.ndjson)\.claimed-(\d+)$/;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: string }).code === "EPERM";
  }
}

/** Opens (creating) a spool directory and takes back files whose claiming process died. */
export function openSpool(dir: string, maxBytes: number): Spool {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const name of readdirSync(dir)) {
      const claimed = CLAIMED.exec(name);
      const pid = Number(claimed?.[2] ?? /\.tmp-(\d+)$/.exec(name)?.[1] ?? 0);
      if (!pid || (pid !== process.pid && alive(pid))) continue;
      if (claimed) renameSync(join(dir, name), join(dir, claimed[1]!));
      else unlinkSync(join(dir, name)); // a half-written file of a crashed process: its items never left memory
    }
  } catch (error) {
    throw new CpostError("io", `cannot use the Elasticsearch spool ${dir}: ${(error as Error).message}`, {
      hint: "give a writable directory with --es-spool-dir",
    });
  }
  let seq = 0;

  function scan(): { names: string[]; docs: number; bytes: number } {
    const names = readdirSync(dir).filter((n) => FILE.test(n)).sort();
    let docs = 0;
    let bytes = 0;
    for (const name of names) {
      docs += Number(FILE.exec(name)![4]);
      try {
        bytes += statSync(join(dir, name)).size;
      } catch {} // claimed meanwhile by another process
    }
    return { names, docs, bytes };
  }
  let used = scan().bytes;

  function put(items: string[]): boolean {
    if (items.length === 0) return true;
    const text = items.join("");
    const size = Buffer.byteLength(text);
    if (used + size > maxBytes) {
      used = scan().bytes; // others may have drained meanwhile
      if (used + size > maxBytes) return false;
    }
    const name = `${String(Date.now()).padStart(15, "0")}-${process.pid}-${seq++}-${items.length}.ndjson`;
    const tmp = join(dir, `${name}.tmp-${process.pid}`);
    writeFileSync(tmp, text, { mode: 0o600 });
    renameSync(tmp, join(dir, name)); // whole files only: a reader never sees half of one
    used += size;
    return true;
  }

  function claim(): ReturnType<Spool["claim"]> {
    for (const name of scan().names) {
      const claimed = join(dir, `${name}.claimed-${process.pid}`);
      try {
        renameSync(join(dir, name), claimed);
      } catch {
        continue; // another process took it
      }
      const text = readFileSync(claimed, "utf8");
      used -= Buffer.byteLength(text);
      const lines = text.split("\n");
      const items: string[] = [];
      for (let i = 0; i + 1 < lines.length; i += 2) items.push(`${lines[i]}\n${lines[i + 1]}\n`);
      return {
        items,
        release(unsent) {
          if (unsent.length === 0 || put(unsent)) return unlinkSync(claimed);
          // No room for the remainder as a new file: give the whole file back (its sent items come back as 409s).
          renameSync(claimed, join(dir, name));
          used += Buffer.byteLength(text);
        },
      };
    }
    return undefined;
  }

  return {
    dir,
    maxBytes,
    put,
    claim,
    pending() {
      const { names, docs, bytes } = scan();
      return { files: names.length, docs, bytes };
    },
  };
}
