/**
 * The one error type of cpost. Everything below the CLI throws (or returns)
 * a CpostError; only core/cli/cli.ts turns it into text and an exit code.
 */

/** What went wrong, coarsely; decides the exit code. */
export type ErrorCode =
  | "usage" // bad flags or arguments (exit 2)
  | "input" // bad pipeline file, missing input dir, bad option values (exit 2)
  | "engine" // the container engine refused or is unreachable (exit 2 before any operator ran)
  | "operator" // an operator failed (exit 1)
  | "plugin" // a collector or sink plugin failed at its boundary
  | "io" // a file could not be read or written
  | "nvml" // the NVIDIA management library answered an error
  | "unavailable" // a command or feature that is not built yet / not present here
  | "interrupted" // SIGINT / SIGTERM (exit 130)
  | "internal"; // a bug in cpost

export interface ErrorPlace {
  file?: string;
  /** 1-based line. */
  line?: number;
  /** 1-based column. */
  column?: number;
}

export interface CpostErrorOptions extends ErrorPlace {
  /** What the user should do about it, one sentence. */
  hint?: string;
  cause?: unknown;
  /** The plugin (collector or sink) at whose boundary it was caught. */
  plugin?: string;
  /** The plugin hook that threw (open, read, start, write, operatorDone, end). */
  hook?: string;
  /** Further errors reported together with this one (e.g. every problem of a pipeline file). */
  related?: CpostError[];
}

export class CpostError extends Error {
  readonly code: ErrorCode;
  readonly hint?: string;
  readonly file?: string;
  readonly line?: number;
  readonly column?: number;
  readonly plugin?: string;
  readonly hook?: string;
  readonly related: CpostError[];

  constructor(code: ErrorCode, message: string, options: CpostErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "CpostError";
    this.code = code;
    this.hint = options.hint;
    this.file = options.file;
    this.line = options.line;
    this.column = options.column;
    this.plugin = options.plugin;
    this.hook = options.hook;
    this.related = options.related ?? [];
  }

  /** `file:line:column` where known, else the file, else "". */
  get place(): string {
    if (!this.file) return "";
    if (this.line === undefined) return this.file;
    return this.column === undefined ? `${this.file}:${this.line}` : `${this.file}:${this.line}:${this.column}`;
  }
}

/** Exit codes of DESIGN.md; `internal` (a bug in cpost) is sysexits' EX_SOFTWARE, apart from "an operator failed". */
export const EXIT = { ok: 0, operatorFailed: 1, usage: 2, internal: 70, interrupted: 130 } as const;

/** The exit code an error maps to. */
export function exitCodeOf(error: CpostError): number {
  switch (error.code) {
    case "operator":
      return EXIT.operatorFailed;
    case "interrupted":
      return EXIT.interrupted;
    case "internal":
      return EXIT.internal;
    default:
      return EXIT.usage;
  }
}

/** Wraps anything thrown into a CpostError, keeping one that already is. */
export function asCpostError(thrown: unknown, fallback: ErrorCode = "internal"): CpostError {
  if (thrown instanceof CpostError) return thrown;
  const message = thrown instanceof Error ? thrown.message : String(thrown);
  return new CpostError(fallback, message, { cause: thrown });
}

/**
 * A file or directory the user named that cannot be used as one: exit 2
 * with the path, what is wrong in words (ENOENT, EISDIR, ENOTDIR, EACCES,
 * …) and what to do. `what` names it ("pipeline file", "--models_dir");
 * `want` says which it must be.
 */
export function pathError(path: string, what: string, cause: unknown, want: "file" | "directory", hint?: string): CpostError {
  const [problem, fix] = pathProblem(cause, what, want);
  const code = (cause as NodeJS.ErrnoException | null)?.code;
  return new CpostError("input", `cannot read ${what}: ${problem}`, { file: path, cause, hint: hint && code === "ENOENT" ? hint : fix });
}

/** What an errno means for a path the user named, in words, and what to do: [problem, fix]. */
export function pathProblem(cause: unknown, what: string, want: "file" | "directory"): [string, string] {
  const code = (cause as NodeJS.ErrnoException | null)?.code;
  const why: Record<string, [string, string]> = {
    ENOENT: ["it does not exist", "check the path (relative paths are from the current directory)"],
    EISDIR: ["it is a directory, not a file", `give the ${what} itself, not the directory holding it`],
    ENOTDIR: want === "directory" ? ["it is not a directory", `give a directory as ${what}`] : ["a part of its path is not a directory", "check the path: one of its parts is a file"],
    EACCES: ["permission denied", `make it readable by this user (chmod / chown${want === "directory" ? "; a directory also needs x" : ""}), or run cpost as a user who can read it`],
    EPERM: ["operation not permitted", "make it readable by this user, or run cpost as a user who can read it"],
    ELOOP: ["it is a loop of symbolic links", "check the links along the path"],
    ENAMETOOLONG: ["the path is too long", "give a shorter path"],
  };
  return why[code ?? ""] ?? [(cause as Error | null)?.message ?? String(cause), `check the ${what}`];
}

/** Wraps a plugin's failure at its boundary, naming the plugin and the hook. */
export function pluginError(plugin: string, hook: string, thrown: unknown): CpostError {
  return new CpostError("plugin", `${plugin}: ${hook} failed: ${thrownMessage(thrown)}`, { plugin, hook, cause: thrown });
}

/** The message of anything a plugin threw or rejected with (an Error, a string, null, an object). */
function thrownMessage(thrown: unknown): string {
  if (thrown instanceof Error) return thrown.message || thrown.name;
  if (typeof thrown === "object" && thrown !== null && typeof (thrown as { message?: unknown }).message === "string") return (thrown as { message: string }).message;
  if (typeof thrown === "string") return thrown;
  try {
    return `it threw ${JSON.stringify(thrown) ?? String(thrown)}`;
  } catch {
    return `it threw ${Object.prototype.toString.call(thrown)}`;
  }
}

/** Renders an error (and its related errors) as the CLI prints it. */
export function formatError(error: CpostError): string {
  const lines: string[] = [];
  const all = error.related.length > 0 ? error.related : [error];
  if (error.related.length > 0) lines.push(error.message);
  for (const e of all) {
    const place = e.place ? `${e.place}: ` : "";
    lines.push(`${place}${e.message}`);
    if (e.hint) lines.push(`  hint: ${e.hint}`);
  }
  if (error.related.length > 0 && error.hint) lines.push(`hint: ${error.hint}`);
  return lines.join("\n");
}
