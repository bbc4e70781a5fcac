/**
 * Hostile and malformed pipeline files: every one must end in a clear
 * CpostError (with file and line) or a valid pipeline — never a crash, a
 * hang, or a file written anywhere.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CpostError } from "../core/contracts/errors.ts";
import { isCollection, isPair, isScalar, parseDocument, type Node } from "yaml";
import { OPERATOR_NAME, parsePipeline, type ParsedPipeline } from "../core/pipeline/pipeline.ts";
import { defineReliabilityLog } from "./reliability-log.ts";
import { compiledBinary, REPO, runProcess } from "./support.ts";

const log = defineReliabilityLog("fuzz-validate");

const BASE = await Bun.file(join(REPO, "examples/diamond/pipeline.yaml")).text();

/** mulberry32: a small seeded PRNG so every failure can be replayed by its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const HOSTILE_VALUES = [
  "../../etc",
  "/in/../../root",
  "'a\\u0000b'",
  '"\\u0007bell"',
  "x".repeat(100_000),
  "[1, 2, [3, [4]]]",
  "{a: {b: {c: d}}}",
  "null",
  "~",
  "-1",
  "1e309",
  ".nan",
  "*nowhere",
  "&loop [*loop]",
  "!!binary aGVsbG8=",
  "!!js/function 'x'",
  "'../../../../tmp/pwned'",
  "ünïcødé-名前",
  "'name with spaces'",
  '"$(rm -rf /)"',
  "`reboot`",
  "|\n  multi\n  line",
  "yes",
  "0x1F",
  "2026-11-23",
];
const NOISE = ["{", "}", "[", "]", ":", "- ", "&a ", "*a ", "!", "|", ">", "#", "'", '"', "\t", "\u0000", "\u001b[31m", "%YAML 1.1\n", "---\n", "...\n", "? ", "<<: *a\n"];

function mutate(text: string, random: () => number): string {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
  const lines = text.split("\n");
  const rounds = 1 + Math.floor(random() * 4);
  for (let r = 0; r < rounds; r++) {
    const i = Math.floor(random() * lines.length);
    const line = lines[i] ?? "";
    switch (Math.floor(random() * 8)) {
      case 0: // replace a value
        if (line.includes(": ")) lines[i] = `${line.slice(0, line.indexOf(": ") + 2)}${pick(HOSTILE_VALUES)}`;
        break;
      case 1:
        lines.splice(i, 1);
        break;
      case 2:
        lines.splice(i, 0, line);
        break;
      case 3: {
        const at = Math.floor(random() * (line.length + 1));
        lines[i] = line.slice(0, at) + pick(NOISE) + line.slice(at);
        break;
      }
      case 4:
        lines[i] = (random() < 0.5 ? "  " : "") + line.replace(/^ {0,2}/, "");
        break;
      case 5: // truncate the file
        return lines.slice(0, i).join("\n") + line.slice(0, Math.floor(random() * line.length));
      case 6: {
        const j = Math.floor(random() * lines.length);
        [lines[i], lines[j]] = [lines[j] ?? "", line];
        break;
      }
      case 7: // deep nesting
        lines[i] = `${line.replace(/:.*$/, ":")} ${"[".repeat(200 + Math.floor(random() * 2000))}`;
        break;
    }
  }
  return lines.join("\n");
}

/** A valid result must be truly valid: names, paths and order all hold. */
function checkValid(parsed: ParsedPipeline): void {
  const { pipeline } = parsed;
  expect(pipeline.order.length).toBe(pipeline.operators.length);
  const position = new Map(pipeline.order.map((op, i) => [op.name, i]));
  expect(position.size).toBe(pipeline.operators.length);
  for (const op of pipeline.operators) {
    expect(op.name).toMatch(OPERATOR_NAME);
    expect(op.image.length).toBeGreaterThan(0);
    for (const p of [...op.inputs.map((x) => x.path), ...op.outputs.map((x) => x.path)]) {
      expect(p.startsWith("/")).toBe(true);
      expect(p.split("/")).not.toContain("..");
      expect(/[\u0000-\u001f]/.test(p)).toBe(false);
    }
    for (const input of op.inputs) {
      if (input.from) expect(position.get(input.from)!).toBeLessThan(position.get(op.name)!);
    }
    if (op.command) for (const arg of op.command) expect(typeof arg).toBe("string");
  }
}

/** Runs one case: a clear error or a valid pipeline, quickly. */
function runCase(text: string, label: string): "valid" | "error" {
  const started = performance.now();
  let outcome: "valid" | "error";
  try {
    checkValid(parsePipeline(text, `${label}.yaml`));
    outcome = "valid";
  } catch (e) {
    if (!(e instanceof CpostError)) throw new Error(`${label}: crashed with ${String(e)}`);
    expect(e.code).toBe("input");
    const all = e.related.length > 0 ? e.related : [e];
    for (const one of all) {
      expect(one.file).toBe(`${label}.yaml`);
      expect(one.message.length).toBeGreaterThan(0);
      expect(one.line ?? 1).toBeGreaterThanOrEqual(1);
    }
    outcome = "error";
  }
  expect(performance.now() - started).toBeLessThan(5000); // a hang guard, not a timing assertion
  return outcome;
}

describe("fuzzed pipeline files", () => {
  test("3000 mutated pipelines each end in a clear error or a valid pipeline", () =>
    log.check("Bad input", "3000 pipeline files mutated from the example (seeded: hostile values, `../` paths, control characters, alias loops, noise, truncation, deep nesting)", () => {
    const counts = { valid: 0, error: 0 };
    for (let seed = 1; seed <= 3000; seed++) counts[runCase(mutate(BASE, prng(seed)), `seed-${seed}`)]++;
    // Both outcomes must occur, or the mutator is not exercising the checker.
    expect(counts.valid).toBeGreaterThan(50);
    expect(counts.error).toBeGreaterThan(1000);
    return `${counts.error} ended in a clear input error naming the file and line, ${counts.valid} in a pipeline that is valid in every respect; no crash, none took over 5 s`;
  }), 120_000);

  test("a wrong type at every key of the example: each ends in a clear error or a valid pipeline", () =>
    log.check("Bad input", "Every key of the example pipeline given each wrong type in turn (numbers, booleans, null, empty and long strings, lists, maps)", () => {
      const wrong: unknown[] = [7, -1, 1.5, true, null, "", "x".repeat(300), [], ["x"], [1, 2], {}, { a: 1 }];
      const doc = parseDocument(BASE);
      const paths: Array<readonly unknown[]> = [];
      const walk = (node: Node | null | undefined, path: readonly unknown[]): void => {
        if (path.length > 0) paths.push(path);
        if (!isCollection(node)) return;
        (node.items as unknown[]).forEach((item, i) => {
          if (isPair(item)) walk(item.value as Node, [...path, isScalar(item.key) ? item.key.value : item.key]);
          else walk(item as Node, [...path, i]);
        });
      };
      walk(doc.contents, []);
      const counts = { valid: 0, error: 0 };
      for (const path of paths) {
        for (const value of wrong) {
          const copy = doc.clone();
          copy.setIn(path, copy.createNode(value));
          counts[runCase(copy.toString(), `wrong-${paths.indexOf(path)}-${wrong.indexOf(value)}`)]++;
        }
      }
      expect(paths.length).toBeGreaterThan(50);
      expect(counts.error).toBeGreaterThan(paths.length);
      return `${paths.length} keys × ${wrong.length} wrong values: ${counts.error} clear input errors, ${counts.valid} valid pipelines (where the value is acceptable there, e.g. any string as a description); no crash`;
    }), 120_000);

  test("hand-made hostile files", () =>
    log.check("Bad input", "Hand-made hostile pipeline files: a YAML alias bomb (10^10 nodes), a 10 MB string, 100 000-deep nesting, names with `../` and escape sequences, paths with `..`, `:` or relative, duplicate keys, wrong types, shell strings, binary junk", () => {
    const head = "api-version: 0.4.0\nname: hostile\n";
    const op = (body: string) => `${head}operators:\n  - name: a\n    container: {image: x}\n${body}`;
    let bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
    for (let i = 1; i < 10; i++) bomb += `a${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(", ")}]\n`;
    const cases: Record<string, string> = {
      aliasBomb: `${head}${bomb}operators: *a9\n`,
      tenMegString: `${head}operators:\n  - name: a\n    description: ${"x".repeat(10 * 1024 * 1024)}\n    container: {image: x}\n`,
      deepNesting: `${head}operators: ${"[".repeat(100_000)}${"]".repeat(100_000)}\n`,
      traversalName: `${head}operators:\n  - name: ../../etc/passwd\n    container: {image: x}\n`,
      controlName: `${head}operators:\n  - name: "a\\u001b[2J"\n    container: {image: x}\n`,
      traversalPath: op("    output: [{path: /out/../../host}]\n"),
      colonPath: op("    output: [{path: '/out:/host'}]\n"),
      relativePath: op("    input: [{path: input}]\n"),
      duplicateKeys: op("    container: {image: y}\n"),
      wrongTypes: `${head}operators:\n  - name: [a]\n    container: 7\n    variables: 3\n    input: true\n    output: {path: /o}\n    requests: [1]\n`,
      shellString: op('    variables: {X: "$(id)"}\n').replace("{image: x}", "{image: x, command: 'sh -c id'}"),
      badEnvName: op("    variables: {'A=B': 1}\n"),
      binaryJunk: "\u0000\u0001\u00ff\u00fe".repeat(1000),
      onlyDocumentMarkers: "---\n...\n---\n",
    };
    for (const [label, text] of Object.entries(cases)) expect(runCase(text, label)).toBe("error");
    return `all ${Object.keys(cases).length} ended in a clear input error naming the file and line, each within 5 s`;
  }), 60_000);

  test("the compiled binary's validate handles hostile files: exit 2 with a message, nothing written", () =>
    log.check("Bad input", "25 mutated pipeline files through the compiled binary's `cpost validate`, with its own working and temp dirs", async () => {
    const bin = await compiledBinary();
    const dir = mkdtempSync(join(tmpdir(), "cpost-fuzz-"));
    const cwd = mkdtempSync(join(tmpdir(), "cpost-fuzz-cwd-"));
    const tmp = mkdtempSync(join(tmpdir(), "cpost-fuzz-tmp-"));
    const random = prng(4242);
    const codes = { 0: 0, 2: 0 };
    for (let i = 0; i < 25; i++) {
      const file = join(dir, `case-${i}.yaml`);
      writeFileSync(file, mutate(BASE, random));
      const result = await runProcess([bin, "validate", file], { cwd, env: { TMPDIR: tmp }, timeoutMs: 20_000 });
      expect([0, 2]).toContain(result.code);
      codes[result.code as 0 | 2]++;
      if (result.code === 2) expect(result.stderr).toContain(`case-${i}.yaml`);
    }
    expect(readdirSync(cwd)).toEqual([]);
    expect(readdirSync(tmp)).toEqual([]);
    expect(readdirSync(dir).length).toBe(25);
    for (const d of [dir, cwd, tmp]) rmSync(d, { recursive: true, force: true });
    return `${codes[2]} exited 2 naming the file, ${codes[0]} validated (exit 0); nothing was written in the working dir, the temp dir or beside the files`;
  }), 120_000);
});
