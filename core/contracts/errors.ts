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

/** Exit codes of DESIGN.md. */
export const EXIT = { ok: 0, operatorFailed: 1, usage: 2, interrupted: 130 } as const;

/** The exit code an error maps to. */
export function exitCodeOf(error: CpostError): number {
  switch (error.code) {
    case "operator":
      return EXIT.operatorFailed;
    case "interrupted":
      return EXIT.interrupted;
    case "internal":
      return EXIT.operatorFailed;
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

/** Wraps a plugin's failure at its boundary, naming the plugin and the hook. */
export function pluginError(plugin: string, hook: string, thrown: unknown): CpostError {
  const inner = thrown instanceof Error ? thrown.message : String(thrown);
  return new CpostError("plugin", `${plugin}: ${hook} failed: ${inner}`, { plugin, hook, cause: thrown });
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
