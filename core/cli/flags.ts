/**
 * The command line's flags, declared once: each command's citty `args` is
 * both its --help and, through parseArgs, its parser. citty cannot know
 * the pass-through `--<sink>-<option> VALUE` flags, repeatable flags or the
 * original's bare `--force`, so the words are read here, by the rules the
 * `args` entries state (`repeated`, `optionalValue`, `alias`).
 */
import type { ArgDef } from "citty";
import { CpostError } from "../contracts/errors.ts";

/** One flag as citty declares it, with what citty has no word for. */
export type FlagDef = ArgDef & {
  /** May be given more than once; the values come in `lists`. */
  repeated?: true;
  /** The value is optional and, given as the next word, must be one of these (`--force` alone means "none"). */
  optionalValue?: readonly string[];
  /** What the value is, for the error when it is missing: `--from needs a recording file` (default "a value"). */
  needs?: string;
};

/** A command's flags. */
export type FlagsDef = Record<string, FlagDef>;

/** Reads `raw` by the rules of `args`: positionals, flags, repeated flags' lists, and `--<sink>-<option>` values. */
export function parseArgs(raw: string[], args: FlagsDef, options: { sinkPrefixes?: string[] } = {}) {
  const spec: FlagSpec = { values: [], booleans: [], optionalValues: {}, aliases: {}, needs: {}, ...(options.sinkPrefixes ? { sinkPrefixes: options.sinkPrefixes } : {}) };
  const repeated: string[] = [];
  for (const [name, def] of Object.entries(args)) {
    if (def.type === "positional") continue;
    if (def.needs) spec.needs![name] = def.needs;
    if (def.repeated) repeated.push(name);
    else if (def.optionalValue) spec.optionalValues![name] = def.optionalValue;
    else if (def.type === "boolean") spec.booleans.push(name);
    else spec.values.push(name);
    const alias = "alias" in def ? def.alias : undefined;
    for (const a of alias === undefined ? [] : Array.isArray(alias) ? alias : [alias]) spec.aliases![a] = name;
  }
  return parseFlags(raw, repeated.length > 0 ? { ...spec, repeated } : spec);
}

/** A comma-separated flag value as its names: `"a, b,"` is `["a", "b"]`. */
export const commaList = (text: string | undefined): string[] => (text ?? "").split(",").map((s) => s.trim()).filter(Boolean);

export interface FlagSpec {
  /** Flags that take a value; names as typed without dashes, both `_` and `-` spellings accepted. */
  values: string[];
  booleans: string[];
  /** Flags whose value is optional: taken from the next word only when it is one of these. */
  optionalValues?: Record<string, readonly string[]>;
  /** Flags that take a value and may be given more than once (their values in `lists`). */
  repeated?: string[];
  /** Accept `--<sink>-<option> value` for these sinks (names and aliases). */
  sinkPrefixes?: string[];
  aliases?: Record<string, string>;
  /** What a flag's value is, for the error when it is missing (default "a value"). */
  needs?: Record<string, string>;
}

/**
 * Reads raw arguments by the command's own rules: citty cannot know the
 * pass-through `--<sink>-<option> value` flags, and the original's bare
 * `--force` takes no value.
 */
export function parseFlags(raw: string[], spec: FlagSpec): { positionals: string[]; flags: Record<string, string | true>; sinkOptions: Record<string, string>; lists?: Record<string, string[]> } {
  const canon = (name: string) => name.replace(/_/g, "-");
  const values = new Set(spec.values.map(canon));
  const booleans = new Set(spec.booleans.map(canon));
  const optional = new Map(Object.entries(spec.optionalValues ?? {}).map(([name, words]) => [canon(name), words]));
  const repeated = new Set((spec.repeated ?? []).map(canon));
  const lists: Record<string, string[]> = {};
  const positionals: string[] = [];
  const flags: Record<string, string | true> = {};
  const sinkOptions: Record<string, string> = {};
  for (let i = 0; i < raw.length; i++) {
    const arg = raw[i]!;
    if (arg === "--") {
      positionals.push(...raw.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const rawName = arg.replace(/^--?/, "").slice(0, eq < 0 ? undefined : eq - (arg.startsWith("--") ? 2 : 1));
    const name = canon(spec.aliases?.[rawName] ?? rawName);
    const inline = eq < 0 ? undefined : arg.slice(eq + 1);
    const next = raw[i + 1];
    const takeValue = (): string => {
      if (inline !== undefined) return inline;
      if (next === undefined || next.startsWith("--")) throw new CpostError("usage", `${arg} needs ${spec.needs?.[name] ?? "a value"}`, { hint: "see `cpost run --help`" });
      i++;
      return next;
    };
    if (booleans.has(name)) flags[name] = true;
    else if (values.has(name)) flags[name] = takeValue();
    else if (repeated.has(name)) (lists[name] ??= []).push(takeValue());
    else if (optional.has(name)) {
      if (inline !== undefined) flags[name] = inline;
      else if (next !== undefined && optional.get(name)!.includes(next)) flags[name] = raw[++i]!;
      else flags[name] = true;
    } else if (spec.sinkPrefixes?.some((p) => name.startsWith(`${p}-`))) {
      // Each sink picks its own out by name or alias (core/sinks/definition.ts).
      sinkOptions[name] = takeValue();
    }
    else {
      throw new CpostError("usage", `unknown option ${arg}`, {
        hint: spec.sinkPrefixes ? "sink options are --<sink>-<option> VALUE for a sink in --sinks; see `cpost run --help`" : "see `cpost --help`",
      });
    }
  }
  return { positionals, flags, sinkOptions, ...(spec.repeated ? { lists } : {}) };
}

/** Reads parseFlags' flags by name (the `-` spelling): a value flag's value, undefined when absent or given bare. */
export const valueOf = (flags: Record<string, string | true>) => (name: string): string | undefined => (typeof flags[name] === "string" ? (flags[name] as string) : undefined);

