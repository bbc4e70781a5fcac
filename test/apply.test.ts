/**
 * `--apply` writes requests into a pipeline file and touches nothing else:
 * asserted on the full text of a file with comments, odd key order, flow
 * and block styles, 2- and 4-space indents, an empty `requests:` and
 * operators without one. The diff it prints is the one GNU diff prints and
 * `patch` applies; a second --apply leaves the file's bytes and mtime alone.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseDocument } from "yaml";
import { applyRequests, applyRequestsToText, unifiedDiff, type RequestUpdate } from "../core/pipeline/apply-requests.ts";
import { parsePipeline } from "../core/pipeline/pipeline.ts";
import { REPO, runProcess } from "./support.ts";

const FIXTURE = join(REPO, "test/fixtures/pipelines/commented.yaml");
const original = readFileSync(FIXTURE, "utf8");
const dirs: string[] = [];
const tempDir = () => {
  const dir = mkdtempSync(join(tmpdir(), "cpost-apply-"));
  dirs.push(dir);
  return dir;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const updates: RequestUpdate[] = [
  { operator: "dicom-reader", cpu: 2, memory: 512 },
  { operator: "segmentation", cpu: 3, memory: 768, gpu: 1 },
  { operator: "writer", cpu: 1, memory: 256 },
  { operator: "register", cpu: 0.5, memory: 256 },
  { operator: "notify", cpu: 1, memory: 256 },
  { operator: "untouched", memory: 256 },
  { operator: "ghost", cpu: 1, memory: 256 },
];

/** Replaces `from` (which must occur exactly once) with `to`. */
function once(text: string, from: string, to: string): string {
  expect(text.split(from).length - 1).toBe(1);
  return text.replace(from, to);
}

/** The fixture with exactly the requests lines changed, written out by hand. */
const EXPECTED = [
  ["    memory: 1024   # MB, generous\n    cpu: 4         # four cores?\n", "    memory: 512   # MB, generous\n    cpu: 2         # four cores?\n"],
  ["  requests: {cpu: 2, memory: 512, gpu: 1}   # flow style\n", "  requests: {cpu: 3, memory: 768, gpu: 1}   # flow style\n"],
  ["        - path: /out\n    # writer has no requests yet\n", "        - path: /out\n    requests:\n        cpu: 1\n        memory: 256\n    # writer has no requests yet\n"],
  ["  requests:\n  input: [{from: writer, path: /in}]\n", "  requests:\n    cpu: 0.5\n    memory: 256\n  input: [{from: writer, path: /in}]\n"],
  ["input: [{from: register, path: /in}]}\n", "input: [{from: register, path: /in}], requests: {cpu: 1, memory: 256}}\n"],
].reduce((text, [from, to]) => once(text, from!, to!), original);

describe("--apply", () => {
  test("changes only the requests blocks: values in place (comments kept), missing keys and blocks added in each operator's own style", () => {
    const applied = applyRequestsToText(original, FIXTURE, updates);
    expect(applied.text).toBe(EXPECTED);
    expect(applied.changed).toEqual(["dicom-reader", "segmentation", "writer", "register", "notify"]);
    expect(applied.missing).toEqual(["ghost"]);
    // It still reads as the same pipeline, with the new requests.
    const { pipeline } = parsePipeline(applied.text, FIXTURE);
    expect(Object.fromEntries(pipeline.operators.map((op) => [op.name, op.requests]))).toEqual({
      "dicom-reader": { cpu: 2, memory: 512 },
      segmentation: { cpu: 3, memory: 768, gpu: 1 },
      writer: { cpu: 1, memory: 256 },
      register: { cpu: 0.5, memory: 256 },
      notify: { cpu: 1, memory: 256 },
      untouched: { memory: 256 },
    });
  });

  test("what yaml's toString would do instead: it reformats lines that have nothing to do with requests", () => {
    const doc = parseDocument(original);
    doc.setIn(["operators", 0, "requests", "memory"], 512);
    const rendered = doc.toString();
    expect(rendered).not.toContain("name:   spleen-commented   # odd spacing kept");
    expect(applyRequestsToText(original, FIXTURE, [{ operator: "dicom-reader", memory: 512 }]).text).toContain("name:   spleen-commented   # odd spacing kept");
  });

  test("requests that already match change nothing: same bytes, same mtime", () => {
    const dir = tempDir();
    const file = join(dir, "pipeline.yaml");
    writeFileSync(file, EXPECTED);
    const past = new Date(Date.now() - 3_600_000);
    utimesSync(file, past, past);
    const before = statSync(file).mtimeMs;
    const again = applyRequests(file, updates);
    expect(again.changed).toEqual([]);
    expect(again.text).toBe(EXPECTED);
    expect(readFileSync(file, "utf8")).toBe(EXPECTED);
    expect(statSync(file).mtimeMs).toBe(before);
    // And the first --apply wrote exactly the expected text.
    copyFileSync(FIXTURE, file);
    expect(applyRequests(file, updates).changed.length).toBe(5);
    expect(readFileSync(file, "utf8")).toBe(EXPECTED);
  });

  test("the printed diff is GNU diff's, and patch turns the old file into the new one", async () => {
    const dir = tempDir();
    const before = join(dir, "before.yaml");
    const after = join(dir, "after.yaml");
    writeFileSync(before, original);
    writeFileSync(after, EXPECTED);
    const ours = unifiedDiff(original, EXPECTED, "a/pipeline.yaml", "b/pipeline.yaml");
    const gnu = await runProcess(["diff", "-u", "--label", "a/pipeline.yaml", "--label", "b/pipeline.yaml", before, after]);
    expect(gnu.code).toBe(1);
    expect(ours).toBe(gnu.stdout);
    writeFileSync(join(dir, "requests.patch"), ours);
    const patched = await runProcess(["patch", "-s", before, join(dir, "requests.patch")]);
    expect(patched.code).toBe(0);
    expect(readFileSync(before, "utf8")).toBe(EXPECTED);
    expect(unifiedDiff(original, original, "a", "b")).toBe("");
  });

  test("diffs of texts without a final newline, additions at the end and distant changes in separate hunks match GNU diff", async () => {
    const dir = tempDir();
    const lines = Array.from({ length: 40 }, (_, i) => `line ${i}`);
    const cases: Array<[string, string]> = [
      ["a\nb\nc", "a\nB\nc"],
      ["a\nb\n", "a\nb\nc\n"],
      ["", "x\n"],
      [`${lines.join("\n")}\n`, `${lines.map((l, i) => (i === 3 || i === 30 ? `${l}!` : l)).join("\n")}\n`],
      [`${lines.join("\n")}\n`, `${lines.map((l, i) => (i === 10 || i === 16 ? `${l}!` : l)).filter((_, i) => i !== 13).join("\n")}\n`],
    ];
    for (const [a, b] of cases) {
      writeFileSync(join(dir, "a"), a);
      writeFileSync(join(dir, "b"), b);
      const gnu = await runProcess(["diff", "-u", "--label", "a", "--label", "b", join(dir, "a"), join(dir, "b")]);
      expect(unifiedDiff(a, b, "a", "b")).toBe(gnu.stdout);
    }
  });

  test("CRLF files get CRLF lines", () => {
    const crlf = "api-version: 0.4.0\r\nname: p\r\noperators:\r\n  - name: a  # first\r\n    container:\r\n      image: x\r\n";
    const applied = applyRequestsToText(crlf, "crlf.yaml", [{ operator: "a", cpu: 1, memory: 256 }]);
    expect(applied.text).toBe(`${crlf.slice(0, -2)}\r\n    requests:\r\n      cpu: 1\r\n      memory: 256\r\n`);
  });

  test("requests it cannot edit are input errors, and the text is left alone", () => {
    const base = "api-version: 0.4.0\nname: p\noperators:\n  - name: a\n    container: {image: x}\n";
    expect(() => applyRequestsToText(`${base}    requests: [1, 2]\n`, "p.yaml", [{ operator: "a", cpu: 1 }])).toThrow(expect.objectContaining({ code: "input", file: "p.yaml", line: 6, column: 15 }));
    expect(() => applyRequestsToText(`${base}    requests: {cpu: [1]}\n`, "p.yaml", [{ operator: "a", cpu: 1 }])).toThrow(expect.objectContaining({ code: "input" }));
    expect(() => applyRequestsToText("name: [", "p.yaml", [{ operator: "a", cpu: 1 }])).toThrow(expect.objectContaining({ code: "input" }));
    expect(() => applyRequestsToText("name: p\n", "p.yaml", [{ operator: "a", cpu: 1 }])).toThrow("no `operators` list");
  });
});
