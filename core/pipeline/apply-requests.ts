/**
 * `cpost size --apply`: the recommended `requests` written back into the
 * pipeline file, and nothing else touched. yaml's Document API finds every
 * operator's `requests` and the exact source range of each value; the new
 * numbers are spliced into the original text there, so comments, key order,
 * quoting, flow and block styles and blank lines stay byte for byte
 * (re-rendering the document with toString() re-indents sequences, pads
 * flow collections and folds long lines). The result is parsed again and
 * must equal the old document but for the requests, or nothing is written.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { isMap, isScalar, isSeq, parseDocument, type Node, type Pair, type YAMLMap } from "yaml";
import { CpostError } from "../contracts/errors.ts";

/** New request values of one operator (undefined: leave that key as it is). */
export interface RequestUpdate {
  operator: string;
  cpu?: number;
  memory?: number;
  gpu?: number;
}

/** What applying did. */
export interface AppliedRequests {
  /** The new file text (the old one when nothing changed). */
  text: string;
  /** Operators whose requests changed. */
  changed: string[];
  /** Operators of the updates that the file does not have. */
  missing: string[];
}

const FIELDS = ["cpu", "gpu", "memory"] as const;

interface Edit {
  at: number;
  end: number;
  insert: string;
}

const numberText = (x: number) => String(x);
const keyOf = (pair: Pair) => (isScalar(pair.key) ? String(pair.key.value) : undefined);
const pairOf = (map: YAMLMap, key: string) => (map.items as Pair[]).find((p) => keyOf(p) === key);
const start = (node: unknown) => (node as Node).range![0];

/** Writes the updates into the pipeline text; throws CpostError("input") when the text is not a pipeline it can edit. */
export function applyRequestsToText(text: string, file: string, updates: RequestUpdate[]): AppliedRequests {
  const doc = parseDocument(text, { keepSourceTokens: true });
  if (doc.errors.length > 0) throw new CpostError("input", `cannot parse YAML: ${doc.errors[0]!.message.split("\n")[0]}`, { file, hint: "fix the pipeline file (cpost validate shows where)" });
  const operators = isMap(doc.contents) ? doc.contents.get("operators", true) : undefined;
  if (!isSeq(operators)) throw new CpostError("input", "no `operators` list to write requests into", { file, hint: "give the pipeline file the run used" });
  const eol = text.includes("\r\n") ? "\r\n" : "\n";
  const edits: Edit[] = [];
  const changed: string[] = [];
  const byName = new Map((operators.items.filter(isMap) as YAMLMap[]).map((op) => [String(op.get("name")), op]));
  for (const update of updates) {
    const op = byName.get(update.operator);
    if (!op) continue;
    const before = edits.length;
    // The operator's own nesting step where it has one, else the file's.
    editOperator(text, file, op, update, { eol, unit: indentUnit(text, [op, ...operators.items]) }, edits);
    if (edits.length > before) changed.push(update.operator);
  }
  const missing = updates.map((u) => u.operator).filter((name) => !byName.has(name));
  if (edits.length === 0) return { text, changed, missing };
  let next = text;
  for (const edit of edits.sort((a, b) => b.at - a.at)) next = next.slice(0, edit.at) + edit.insert + next.slice(edit.end);
  checkOnlyRequestsChanged(doc.toJS(), next, updates, file);
  return { text: next, changed, missing };
}

function editOperator(text: string, file: string, op: YAMLMap, update: RequestUpdate, style: { eol: string; unit: string }, edits: Edit[]): void {
  const wanted = FIELDS.filter((f) => update[f] !== undefined).map((f) => [f, update[f]!] as const);
  const requests = pairOf(op, "requests");
  const value = requests?.value;
  if (isMap(value)) {
    const additions: Array<readonly [string, number]> = [];
    for (const [field, x] of wanted) {
      const pair = pairOf(value, field);
      if (!pair) additions.push([field, x]);
      else if (isScalar(pair.value) && pair.value.range) {
        if (pair.value.value !== null && Number(pair.value.value) === x) continue;
        const [at, end] = pair.value.range;
        // `cpu:` with nothing after it: the value's range is empty, right after the colon.
        edits.push({ at, end, insert: pair.value.value === null ? ` ${numberText(x)}` : numberText(x) });
      } else throw new CpostError("input", `requests.${field} of operator ${update.operator} is not a number`, { ...placeOf(text, file, pair.value), hint: "make it a plain number, or remove it and run --apply again" });
    }
    if (additions.length === 0) return;
    if (value.flow) {
      const last = value.items.at(-1) as Pair | undefined;
      const at = last ? (last.value as Node | null)?.range?.[1] ?? (last.key as Node).range![1] : start(value) + 1;
      edits.push({ at, end: at, insert: additions.map(([f, x], i) => `${last || i > 0 ? ", " : ""}${f}: ${numberText(x)}`).join("") });
    } else {
      const first = value.items[0] as Pair;
      const indent = " ".repeat(columnOf(text, start(first.key)));
      const at = lineEnd(text, (value.items.at(-1) as Pair).value as Node | null, (value.items.at(-1) as Pair).key as Node);
      edits.push({ at, end: at, insert: additions.map(([f, x]) => `${style.eol}${indent}${f}: ${numberText(x)}`).join("") });
    }
    return;
  }
  if (wanted.length === 0) return;
  const keyIndent = " ".repeat(columnOf(text, start((op.items[0] as Pair).key)));
  const block = (indent: string) => wanted.map(([f, x]) => `${style.eol}${indent}${f}: ${numberText(x)}`).join("");
  const flow = `{${wanted.map(([f, x]) => `${f}: ${numberText(x)}`).join(", ")}}`;
  if (requests && isScalar(value) && value.value === null && value.range) {
    // `requests:` left empty.
    edits.push({ at: value.range[0], end: value.range[1], insert: op.flow ? ` ${flow}` : block(keyIndent + style.unit) });
  } else if (requests) {
    throw new CpostError("input", `requests of operator ${update.operator} is not a mapping`, { ...placeOf(text, file, value), hint: "write it as requests: {cpu: 1, memory: 256}, or remove it and run --apply again" });
  } else if (op.flow) {
    const last = op.items.at(-1) as Pair;
    const at = (last.value as Node | null)?.range?.[1] ?? (last.key as Node).range![1];
    edits.push({ at, end: at, insert: `, requests: ${flow}` });
  } else {
    const last = op.items.at(-1) as Pair;
    const at = lineEnd(text, last.value as Node | null, last.key as Node);
    edits.push({ at, end: at, insert: `${style.eol}${keyIndent}requests:${block(keyIndent + style.unit)}` });
  }
}

/** File, line and column of a node, for errors. */
function placeOf(text: string, file: string, node: unknown): { file: string; line?: number; column?: number } {
  const offset = (node as Node | null)?.range?.[0];
  if (offset === undefined) return { file };
  return { file, line: text.slice(0, offset).split("\n").length, column: columnOf(text, offset) + 1 };
}

/** Where the line holding the end of a pair's value ends (after any comment on it): new lines go there. */
function lineEnd(text: string, value: Node | null, key: Node): number {
  let last = (value?.range?.[1] ?? key.range![1]) - 1;
  while (last > 0 && /\s/.test(text[last]!)) last--;
  const newline = text.indexOf("\n", last + 1);
  const end = newline < 0 ? text.length : newline;
  return text[end - 1] === "\r" ? end - 1 : end;
}

function columnOf(text: string, offset: number): number {
  return offset - (text.lastIndexOf("\n", offset - 1) + 1);
}

/** The file's own nesting step, from the first block mapping inside an operator (2 when there is none). */
function indentUnit(text: string, operators: unknown[]): string {
  for (const op of operators) {
    if (!isMap(op) || op.flow) continue;
    for (const pair of op.items as Pair[]) {
      const inner = pair.value;
      if (isMap(inner) && !inner.flow && inner.items.length > 0) {
        const step = columnOf(text, start((inner.items[0] as Pair).key)) - columnOf(text, start(pair.key));
        if (step > 0) return " ".repeat(step);
      }
    }
  }
  return "  ";
}

/** The new text must read as the old document with only the requests changed; anything else is a bug here. */
function checkOnlyRequestsChanged(before: unknown, next: string, updates: RequestUpdate[], file: string): void {
  const expected = structuredClone(before) as { operators: Array<Record<string, unknown>> };
  for (const update of updates) {
    const op = expected.operators.find((o) => o && o.name === update.operator);
    if (!op) continue;
    const requests = (op.requests && typeof op.requests === "object" ? op.requests : (op.requests = {})) as Record<string, unknown>;
    for (const f of FIELDS) if (update[f] !== undefined) requests[f] = update[f];
  }
  const parsed = parseDocument(next);
  if (parsed.errors.length > 0 || !Bun.deepEquals(parsed.toJS(), expected, true)) {
    throw new CpostError("internal", "--apply would have changed more than the requests; the file is left as it was", { file, hint: "please report this with the pipeline file" });
  }
}

/** Applies the updates to the file; writes it only when something changed. */
export function applyRequests(file: string, updates: RequestUpdate[]): AppliedRequests & { before: string } {
  let before: string;
  try {
    before = readFileSync(file, "utf8");
  } catch (cause) {
    throw new CpostError("input", `cannot read pipeline file: ${(cause as Error).message}`, { file, cause, hint: "check the path of the pipeline definition" });
  }
  const applied = applyRequestsToText(before, file, updates);
  if (applied.changed.length > 0) {
    try {
      writeFileSync(file, applied.text);
    } catch (cause) {
      throw new CpostError("io", `cannot write the pipeline file: ${(cause as Error).message}`, { file, cause, hint: "make it writable, or run without --apply and copy the requests by hand" });
    }
  }
  return { ...applied, before };
}

// ---------------------------------------------------------------- unified diff

type DiffLine = { op: " " | "-" | "+"; line: string };

/** Lines of a text; a last line without its newline is marked as diff marks it. */
function linesOf(text: string): string[] {
  if (text === "") return [];
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  else lines[lines.length - 1] += "\n\\ No newline at end of file";
  return lines;
}

/** The shortest edit script between two line lists (Myers' O(ND) greedy algorithm). */
function editScript(a: string[], b: string[]): DiffLine[] {
  const n = a.length;
  const m = b.length;
  const max = n + m;
  const v = new Int32Array(2 * max + 2);
  const trace: Int32Array[] = [];
  for (let d = 0; d <= max; d++) {
    trace.push(v.slice());
    for (let k = -d; k <= d; k += 2) {
      let x = k === -d || (k !== d && v[max + k - 1]! < v[max + k + 1]!) ? v[max + k + 1]! : v[max + k - 1]! + 1;
      let y = x - k;
      while (x < n && y < m && a[x] === b[y]) x++, y++;
      v[max + k] = x;
      if (x >= n && y >= m) return backtrack(trace, a, b, max, d);
    }
  }
  return [];
}

function backtrack(trace: Int32Array[], a: string[], b: string[], max: number, dEnd: number): DiffLine[] {
  const out: DiffLine[] = [];
  let x = a.length;
  let y = b.length;
  for (let d = dEnd; d > 0; d--) {
    const v = trace[d]!;
    const k = x - y;
    const prevK = k === -d || (k !== d && v[max + k - 1]! < v[max + k + 1]!) ? k + 1 : k - 1;
    const prevX = v[max + prevK]!;
    const prevY = prevX - prevK;
    while (x > prevX && y > prevY) out.push({ op: " ", line: a[--x]! }), y--;
    if (x === prevX) out.push({ op: "+", line: b[--y]! });
    else out.push({ op: "-", line: a[--x]! });
  }
  while (x > 0) out.push({ op: " ", line: a[--x]! }), y--;
  return out.reverse();
}

/** A unified diff (`diff -u` format, `context` lines around each change); "" when the texts are equal. */
export function unifiedDiff(before: string, after: string, beforeName: string, afterName: string, context = 3): string {
  if (before === after) return "";
  const script = editScript(linesOf(before), linesOf(after));
  const out = [`--- ${beforeName}`, `+++ ${afterName}`];
  return hunks(script, context, out);
}

function hunks(script: DiffLine[], context: number, out: string[]): string {
  let aLine = 1;
  let bLine = 1;
  const positions = script.map((l) => {
    const at = { a: aLine, b: bLine };
    if (l.op !== "+") aLine++;
    if (l.op !== "-") bLine++;
    return at;
  });
  let i = 0;
  while (i < script.length) {
    if (script[i]!.op === " ") {
      i++;
      continue;
    }
    const from = Math.max(0, i - context);
    let to = i;
    // Extend while the next change is within two contexts of the last one.
    for (let j = i; j < script.length; j++) {
      if (script[j]!.op !== " ") to = j;
      else if (j - to > 2 * context) break;
    }
    const end = Math.min(script.length, to + context + 1);
    const body = script.slice(from, end);
    const aCount = body.filter((l) => l.op !== "+").length;
    const bCount = body.filter((l) => l.op !== "-").length;
    const aStart = aCount === 0 ? positions[from]!.a - 1 : positions[from]!.a;
    const bStart = bCount === 0 ? positions[from]!.b - 1 : positions[from]!.b;
    out.push(`@@ -${aStart}${aCount === 1 ? "" : `,${aCount}`} +${bStart}${bCount === 1 ? "" : `,${bCount}`} @@`);
    for (const l of body) out.push(`${l.op}${l.line}`);
    i = end;
  }
  return `${out.join("\n")}\n`;
}
