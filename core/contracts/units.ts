/**
 * The one reader of durations and sizes that flags and sink options take:
 * `500ms`, `10s`, `2m` or a bare number of milliseconds; `1G`, `512M`,
 * `64KiB` or plain bytes (powers of 1024).
 */
import { CpostError, type ErrorCode } from "./errors.ts";

/** How a duration may be written and how much of one is allowed. */
export interface DurationRule {
  /** The flag or option as the user typed it, e.g. `--interval`. */
  flag: string;
  minMs?: number;
  maxMs?: number;
  /** The word errors use ("interval", "duration"). */
  noun?: string;
  /** The error's code: a usage error for flags, an input error for sink options. */
  code?: ErrorCode;
}

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m)?$/;
const MS_PER = { ms: 1, s: 1000, m: 60_000 } as const;

/** Milliseconds of `text` under `rule`; a CpostError naming the flag, the range and an example otherwise. */
export function parseDuration(text: string, rule: DurationRule): number {
  const m = DURATION.exec(text.trim());
  const ms = m ? Number(m[1]) * MS_PER[(m[2] ?? "ms") as keyof typeof MS_PER] : NaN;
  const min = rule.minMs ?? 0;
  const max = rule.maxMs ?? Infinity;
  if (!(ms >= min && ms <= max)) {
    const noun = rule.noun ?? "duration";
    const range = Number.isFinite(max) ? ` from ${formatMs(min)} to ${formatMs(max)}` : "";
    throw new CpostError(rule.code ?? "usage", `${rule.flag} ${text}: not ${/^[aeiou]/.test(noun) ? "an" : "a"} ${noun}${range}`, {
      hint: `write it as 10ms, 1s or 2m (a bare number is milliseconds), e.g. ${rule.flag} 1s`,
    });
  }
  return ms;
}

/** Bytes of `1G`, `512M`, `64KiB` or a plain number; a CpostError naming `flag` otherwise. */
export function parseSize(text: string, flag: string, code: ErrorCode = "usage"): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(text.trim());
  if (!m) throw new CpostError(code, `${flag} ${JSON.stringify(text)} is not a size`, { hint: "e.g. 1G, 512M, 100000000" });
  return Math.floor(Number(m[1]) * 1024 ** "_kmgt".indexOf((m[2] || "_").toLowerCase()));
}

/** Rounds to three decimals exactly as the tables print them: CPOST sized on the figure it showed. */
export function round3(x: number): number {
  return Number(x.toFixed(3));
}

/** Three decimals, as every figure of cpost's tables and summaries. */
export const f3 = (x: number) => x.toFixed(3);

function formatMs(ms: number): string {
  return ms >= 1000 && ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
