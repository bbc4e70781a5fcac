/**
 * The es sink's disk spool: bulk items Elasticsearch has not taken yet, as
 * NDJSON files (exactly the `_bulk` body to resend), bounded in size.
 * Several cpost processes (and several sinks in one) may share a spool: a
 * file is claimed by an atomic rename before sending, and the claims of
 * processes that died are taken back.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CpostError } from "../../core/contracts/errors.ts";

/** A spool directory for one Elasticsearch cluster. */
export interface Spool {
  readonly dir: string;
  readonly maxBytes: number;
  /** Stores items as one file; returns why not when it could not (full, disk error): nothing stored then. */
  put(items: string[]): string | undefined;
  /** Takes the oldest unclaimed file; `release` stores what is still unsent and drops the file. */
  claim(): { items: string[]; release(unsent: string[]): void } | undefined;
  /** Documents and bytes waiting, in all processes' files. */
  pending(): { files: number; docs: number; bytes: number };
}

// <ms>-<owner>-<seq>-<docs>.ndjson: oldest first by name, the document count without reading the file.
const FILE = /^(\d{15})-(\d+)-(\w+)-(\d+)-(\d+)\.ndjson$/;
const CLAIMED = /^(.+\.ndjson)\.claimed-(\d+)-(\w+)$/;
const TEMP = /\.tmp-(\d+)-(\w+)$/;
// The pid alone does not name a process: cpost in a container is pid 1 every time.
const TOKEN = randomBytes(6).toString("hex");
const OWNER = `${process.pid}-${TOKEN}`;
let seq = 0; // per process, so two sinks of one process never pick the same name

function gone(pid: number, token: string): boolean {
  if (pid === process.pid) return token !== TOKEN;
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as { code?: string }).code !== "EPERM";
  }
}

/** Opens (creating) a spool directory and takes back files whose claiming process is gone. */
export function openSpool(dir: string, maxBytes: number): Spool {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const name of readdirSync(dir)) {
      const claimed = CLAIMED.exec(name);
      const temp = TEMP.exec(name);
      const owner = claimed ? [claimed[2], claimed[3]] : temp ? [temp[1], temp[2]] : undefined;
      if (!owner || !gone(Number(owner[0]), owner[1]!)) continue;
      if (claimed) renameSync(join(dir, name), join(dir, claimed[1]!));
      else unlinkSync(join(dir, name)); // half written by a process that died: its items never left its memory
    }
  } catch (error) {
    throw new CpostError("io", `cannot use the Elasticsearch spool ${dir}: ${(error as Error).message}`, {
      hint: "give a writable directory with --es-spool-dir",
    });
  }

  /** The spool's files, oldest first. */
  const spooled = () => readdirSync(dir).filter((n) => FILE.test(n)).sort();
  function scan(): { names: string[]; docs: number; bytes: number } {
    const names = spooled();
    let docs = 0;
    let bytes = 0;
    for (const name of names) {
      docs += Number(FILE.exec(name)![5]);
      try {
        bytes += statSync(join(dir, name)).size;
      } catch {} // claimed meanwhile by another process
    }
    return { names, docs, bytes };
  }
  let used = scan().bytes;

  function put(items: string[]): string | undefined {
    if (items.length === 0) return undefined;
    const text = items.join("");
    const size = Buffer.byteLength(text);
    if (used + size > maxBytes) {
      used = scan().bytes; // others may have drained meanwhile
      if (used + size > maxBytes) return `full (--es-spool-max ${maxBytes} bytes)`;
    }
    const name = `${String(Date.now()).padStart(15, "0")}-${OWNER}-${seq++}-${items.length}.ndjson`;
    const temp = join(dir, `${name}.tmp-${OWNER}`);
    try {
      writeFileSync(temp, text, { mode: 0o600 });
      renameSync(temp, join(dir, name)); // whole files only: a reader never sees half of one
    } catch (error) {
      try {
        unlinkSync(temp);
      } catch {}
      return (error as Error).message;
    }
    used += size;
    return undefined;
  }

  function claim(): ReturnType<Spool["claim"]> {
    for (const name of spooled()) {
      const claimed = join(dir, `${name}.claimed-${OWNER}`);
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
          if (unsent.length === 0 || put(unsent) === undefined) return unlinkSync(claimed);
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
