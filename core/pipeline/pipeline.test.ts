import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { CpostError } from "../contracts/errors.ts";
import { loadPipeline, mountsFor, parsePipeline } from "./pipeline.ts";
import { REPO } from "../../test/support.ts";

const fixture = (name: string) => join(REPO, "test/fixtures/pipelines", `${name}.yaml`);
const order = (name: string) => loadPipeline(fixture(name)).pipeline.order.map((op) => op.name);

/** The errors of a fixture as `line:column message`, in the order reported. */
function errors(name: string): string[] {
  try {
    loadPipeline(fixture(name));
  } catch (e) {
    expect(e).toBeInstanceOf(CpostError);
    const err = e as CpostError;
    expect(err.code).toBe("input");
    const all = err.related.length > 0 ? err.related : [err];
    for (const one of all) expect(one.file).toBe(fixture(name));
    return all.map((one) => `${one.line}:${one.column} ${one.message}`);
  }
  throw new Error(`${name} was accepted`);
}

describe("execution order", () => {
  test("linear", () => expect(order("linear")).toEqual(["first", "second", "third"]));
  test("producers first even when written consumer-first", () => expect(order("reversed")).toEqual(["start", "middle", "last"]));
  test("diamond with a side job keeps every operator, stable in file order", () =>
    expect(loadPipeline(join(REPO, "examples/diamond/pipeline.yaml")).pipeline.order.map((o) => o.name)).toEqual([
      "reader",
      "segment",
      "measure",
      "writer",
      "audit",
    ]));
  test("fan-in with named outputs", () => expect(order("fan-in-named")).toEqual(["left", "right", "join"]));
  test("operators no one depends on are kept", () => expect(order("independent")).toEqual(["alpha", "beta", "gamma", "delta"]));
});

describe("errors name file, line and column", () => {
  test("cycle names its operators", () => expect(errors("cycle")).toEqual(["11:1 operators form a cycle: b -> c -> a -> b"]));
  test("unknown from", () => expect(errors("unknown-from")).toEqual(['10:9 operator writer: input from unknown operator "raeder"']));
  test("unknown output name", () =>
    expect(errors("unknown-output-name")).toEqual(['10:9 operator writer: operator reader has no output named "volumes"']));
  test("duplicate operator names", () => expect(errors("duplicate-names")).toEqual(['8:1 duplicate operator name "step" (first at line 4)']));
  test("bad name", () =>
    expect(errors("bad-name")).toEqual([`4:11 operator name "dicom reader!" is not 1–255 characters of letters, digits, '_' and '-'`]));
  test("missing image", () => expect(errors("missing-image")).toEqual(["8:7 operator broken: missing container image"]));
  test("malformed YAML", () => {
    const [first] = errors("malformed");
    expect(first).toStartWith("6:3 YAML:");
  });
  test("duplicate key", () => expect(errors("duplicate-key")).toEqual(["6:5 YAML: Map keys must be unique"]));
  test("wrong types: every problem reported together", () =>
    expect(errors("wrong-types")).toEqual([
      "7:16 `command` must be a list of strings (argv)",
      "8:16 `variables` must be a mapping of NAME: value",
      "9:12 `input` must be a list",
      "11:12 requests.cpu must be a number ≥ 0",
      "13:12 requests.gpu must be a whole number ≥ 0",
      "12:15 requests.memory must be a number ≥ 0",
    ]));
  test("unknown keys warn, not fail", () => {
    const { warnings } = loadPipeline(fixture("unknown-keys"));
    expect(warnings.map((w) => `${w.line}:${w.column} ${w.message}`)).toEqual([
      '3:1 unknown top-level key "colour" ignored',
      '6:5 unknown operator key "contaner" ignored',
    ]);
  });
  test("missing file", () => expect(() => loadPipeline("/nonexistent/p.yaml")).toThrow(/cannot read pipeline file/));
  test("relative and escaping paths are refused", () => {
    const text = `api-version: 0.4.0\nname: p\noperators:\n  - name: a\n    container: {image: x}\n    input: [{path: /in/../etc}]\n`;
    expect(() => parsePipeline(text, "p.yaml")).toThrow(/not a plain absolute directory/);
  });
  test("alias bombs are refused", () => {
    let text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
    for (let i = 1; i < 12; i++) text += `a${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(", ")}]\n`;
    expect(() => parsePipeline(`api-version: 0.4.0\nname: bomb\n${text}operators: []\n`, "bomb.yaml")).toThrow(CpostError);
  });
});

describe("mounts", () => {
  test("input dir, upstream outputs by name, fresh outputs", () => {
    const { pipeline } = loadPipeline(fixture("fan-in-named"));
    const join = pipeline.operators.find((o) => o.name === "join")!;
    expect(mountsFor(pipeline, join, "/data", "/w").map((m) => `${m.containerPath}<-${m.hostPath}${m.readOnly ? " ro" : ""}`)).toEqual([
      "/right<-/w/right/named-seg ro",
      "/left-meta<-/w/left/named-meta ro",
      "/left-seg<-/w/left/named-seg ro",
    ]);
    const left = pipeline.operators.find((o) => o.name === "left")!;
    expect(mountsFor(pipeline, left, "/data", "/w").map((m) => m.hostPath)).toEqual(["/w/left/named-seg", "/w/left/named-meta"]);
  });
});
