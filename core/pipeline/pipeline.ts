/**
 * Clara pipeline definitions (api-version 0.3–0.4): parse, check, order,
 * and plan mounts. Every problem carries file, line and column, and all of
 * a file's problems are reported together.
 */
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node, type Pair, type YAMLMap } from "yaml";
import { CpostError, pathError } from "../contracts/errors.ts";
import type { Operator, OperatorInput, OperatorOutput, OperatorService, Pipeline, Requests } from "../contracts/types.ts";

/** Largest pipeline file cpost reads; real ones are a few KB. */
const MAX_PIPELINE_BYTES = 4 * 1024 * 1024;
/** How many problems of one file are listed. */
const MAX_REPORTED_ERRORS = 20;
/** Operator names: 1–255 of these characters, as Clara requires. */
export const OPERATOR_NAME = /^[A-Za-z0-9_-]{1,255}$/;
/** api-version values cpost understands. */
const SUPPORTED_API = /^0\.[34](\.\d+)?$/;

/** A non-fatal finding (unknown key, unusual api-version). */
/** A service the runner starts as Triton (TRTIS was its earlier name). */
export const isTritonService = (name: string): boolean => /triton|trtis/i.test(name);

/** A warning as cpost prints it: `file:line:column: message`. */
export const formatWarning = (w: PipelineWarning): string => `${w.file}:${w.line}:${w.column}: ${w.message}`;

export interface PipelineWarning {
  file: string;
  line: number;
  column: number;
  message: string;
}

export interface ParsedPipeline {
  pipeline: Pipeline;
  warnings: PipelineWarning[];
}

const TOP_KEYS = new Set(["api-version", "name", "operators", "parameters", "description"]);
const OPERATOR_KEYS = new Set([
  "name",
  "description",
  "container",
  "variables",
  "input",
  "output",
  "requests",
  "services",
  "models",
  "timeout",
]);
const CONTAINER_KEYS = new Set(["image", "tag", "command"]);
const INPUT_KEYS = new Set(["from", "name", "path"]);
const OUTPUT_KEYS = new Set(["name", "path"]);
const REQUEST_KEYS = new Set(["cpu", "gpu", "memory"]);

/** Reads and checks a pipeline file; throws one CpostError listing every problem. */
export function loadPipeline(file: string): ParsedPipeline {
  let size: number;
  let text: string;
  try {
    const stat = statSync(file);
    if (stat.isDirectory()) throw Object.assign(new Error("is a directory"), { code: "EISDIR" });
    size = stat.size;
    text = size > MAX_PIPELINE_BYTES ? "" : readFileSync(file, "utf8");
  } catch (cause) {
    throw pathError(file, "pipeline file", cause, "file", "check the path of the pipeline definition");
  }
  if (size > MAX_PIPELINE_BYTES) {
    throw new CpostError("input", `pipeline file is ${size} bytes; cpost reads at most ${MAX_PIPELINE_BYTES}`, {
      file,
      hint: "a pipeline definition is a few kilobytes; check that this is the right file",
    });
  }
  return parsePipeline(text, file);
}

/** Parses and checks pipeline YAML text; `file` names it in messages. */
export function parsePipeline(text: string, file: string): ParsedPipeline {
  if (text.length > MAX_PIPELINE_BYTES) {
    throw new CpostError("input", `pipeline text is ${text.length} characters; cpost reads at most ${MAX_PIPELINE_BYTES}`, {
      file,
      line: 1,
      column: 1,
      hint: "a pipeline definition is a few kilobytes; check that this is the right file",
    });
  }
  const checker = new Checker(text, file);
  return checker.run();
}

class Checker {
  private readonly lines = new LineCounter();
  private readonly errors: CpostError[] = [];
  private readonly warnings: PipelineWarning[] = [];
  /** Where each input entry starts, for reference errors found after parsing. */
  private readonly inputOffsets = new WeakMap<OperatorInput, number>();

  constructor(
    private readonly text: string,
    private readonly file: string,
  ) {}

  run(): ParsedPipeline {
    let doc;
    try {
      doc = parseDocument(this.text, { lineCounter: this.lines, uniqueKeys: true, prettyErrors: false });
    } catch (cause) {
      // The parser recurses; absurdly deep nesting can exhaust the stack.
      throw new CpostError("input", `cannot parse YAML: ${(cause as Error).message}`, {
        file: this.file,
        cause,
        hint: "simplify the file's nesting; a pipeline is a few levels deep",
      });
    }
    for (const e of doc.errors) {
      this.errorAt(e.pos[0], `YAML: ${firstLine(e.message)}`, yamlHint(e.code));
    }
    if (this.errors.length > 0) this.fail();

    let root: unknown;
    try {
      root = doc.contents;
      // Resolving aliases is where alias bombs explode; yaml caps their count.
      doc.toJS({ maxAliasCount: 1000 });
    } catch (cause) {
      throw new CpostError("input", `cannot read YAML: ${(cause as Error).message}`, {
        file: this.file,
        line: 1,
        column: 1,
        cause,
        hint: "remove the repeated aliases (*name); a pipeline needs none",
      });
    }
    if (!isMap(root)) {
      this.errorAt(nodeOffset(root), "a pipeline definition must be a mapping with api-version, name and operators");
      this.fail();
    }
    const top = root as YAMLMap;
    this.warnUnknown(top, TOP_KEYS, "top-level");

    const apiVersion = this.scalarString(top, "api-version", true) ?? "";
    if (apiVersion && !SUPPORTED_API.test(apiVersion)) {
      this.warnAt(this.valueNode(top, "api-version"), `api-version ${apiVersion} is not 0.3 or 0.4; reading it as 0.4`);
    }
    const name = this.scalarString(top, "name", true) ?? "";

    const operatorsNode = this.valueNode(top, "operators");
    const operators: Operator[] = [];
    if (operatorsNode === undefined) {
      this.errorAt(nodeOffset(top), "missing `operators`", "list the pipeline's operators under `operators:`");
    } else if (!isSeq(operatorsNode)) {
      this.errorAt(nodeOffset(operatorsNode), "`operators` must be a list", "write each operator as `- name: ...`");
    } else if (operatorsNode.items.length === 0) {
      this.errorAt(nodeOffset(operatorsNode), "`operators` is empty", "a pipeline needs at least one operator");
    } else {
      for (const item of operatorsNode.items) {
        const op = this.operator(item as Node);
        if (op) operators.push(op);
      }
    }

    const seen = new Map<string, Operator>();
    for (const op of operators) {
      const first = seen.get(op.name);
      if (first) {
        this.errorAtLine(op.line, `duplicate operator name "${op.name}" (first at line ${first.line})`, "operator names must be unique");
      } else seen.set(op.name, op);
    }
    this.checkReferences(operators, seen);
    if (this.errors.length > 0) this.fail();

    const order = this.executionOrder(operators);
    if (this.errors.length > 0) this.fail();
    return {
      pipeline: { file: this.file, apiVersion, name, operators, order },
      warnings: this.warnings,
    };
  }

  private operator(node: Node): Operator | undefined {
    if (!isMap(node)) {
      this.errorAt(nodeOffset(node), "each operator must be a mapping with name and container");
      return undefined;
    }
    const line = this.lineOf(nodeOffset(node));
    this.warnUnknown(node, OPERATOR_KEYS, "operator");
    const name = this.scalarString(node, "name", true);
    if (name !== undefined && !OPERATOR_NAME.test(name)) {
      this.errorAt(
        nodeOffset(this.valueNode(node, "name")),
        `operator name ${JSON.stringify(truncate(name))} is not 1–255 characters of letters, digits, '_' and '-'`,
        "rename the operator, e.g. dicom-reader",
      );
    }
    const description = this.scalarString(node, "description", false);

    let image = "";
    let tag = "latest";
    let command: string[] | undefined;
    const container = this.valueNode(node, "container");
    if (container === undefined) {
      this.errorAt(nodeOffset(node), `operator ${name ?? "?"}: missing \`container\``, "add container: {image: ..., tag: ...}");
    } else if (!isMap(container)) {
      this.errorAt(nodeOffset(container), "`container` must be a mapping with image, tag and command");
    } else {
      this.warnUnknown(container, CONTAINER_KEYS, "container");
      const img = this.scalarString(container, "image", false);
      if (img === undefined || img.trim() === "") {
        this.errorAt(nodeOffset(container), `operator ${name ?? "?"}: missing container image`, "add `image:` with the image name");
      } else if (/\s|[\u0000-\u001f]/.test(img)) {
        this.errorAt(nodeOffset(this.valueNode(container, "image")), `image name ${JSON.stringify(truncate(img))} contains spaces or control characters`);
      } else image = img;
      tag = this.scalarString(container, "tag", false) ?? "latest";
      if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/.test(tag)) {
        this.errorAt(nodeOffset(this.valueNode(container, "tag")), `tag ${JSON.stringify(truncate(tag))} is not a valid image tag`);
      }
      command = this.stringList(container, "command");
    }

    const variables: Record<string, string> = {};
    const vars = this.valueNode(node, "variables");
    if (vars !== undefined && vars !== null && !isNullScalar(vars)) {
      if (!isMap(vars)) {
        this.errorAt(nodeOffset(vars), "`variables` must be a mapping of NAME: value");
      } else {
        for (const pair of vars.items as Pair[]) {
          const key = isScalar(pair.key) ? String(pair.key.value) : undefined;
          if (key === undefined || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
            this.errorAt(nodeOffset(pair.key as Node), `variable name ${JSON.stringify(truncate(String(key)))} is not a valid environment variable name`);
            continue;
          }
          const value = pair.value as Node | null;
          if (value === null || isNullScalar(value)) variables[key] = "";
          else if (isScalar(value)) variables[key] = String(value.value);
          else this.errorAt(nodeOffset(value), `variable ${key} must be a single value, not a list or mapping`);
        }
      }
    }

    const inputs = this.list(node, "input", (item) => this.input(item));
    const outputs = this.list(node, "output", (item) => this.output(item));
    const outputNames = new Set<string>();
    for (const o of outputs) {
      if (o.name === undefined) continue;
      if (outputNames.has(o.name)) this.errorAtLine(line, `operator ${name}: duplicate output name "${o.name}"`);
      outputNames.add(o.name);
    }
    const requests = this.requests(node);
    const services = this.list(node, "services", (item) => this.service(item));
    const models = this.list(node, "models", (item) => this.model(item));
    const needsTriton = models.length > 0 || services.some((s) => isTritonService(s.name));

    if (name === undefined) return undefined;
    return {
      name,
      description,
      image,
      tag,
      command,
      variables,
      inputs,
      outputs,
      requests,
      services,
      models,
      needsTriton,
      line,
    };
  }

  private input(node: Node): OperatorInput | undefined {
    if (!isMap(node)) {
      this.errorAt(nodeOffset(node), "each input must be a mapping with path (and from, name)");
      return undefined;
    }
    this.warnUnknown(node, INPUT_KEYS, "input");
    const from = this.scalarString(node, "from", false);
    const name = this.scalarString(node, "name", false);
    const path = this.containerPath(node);
    if (name !== undefined && from === undefined) {
      this.errorAt(nodeOffset(this.valueNode(node, "name")), "input `name` needs `from` (the operator whose named output it reads)");
    }
    if (path === undefined) return undefined;
    const input: OperatorInput = { path };
    if (from !== undefined) input.from = from;
    if (name !== undefined) input.name = name;
    this.inputOffsets.set(input, nodeOffset(node));
    return input;
  }

  private output(node: Node): OperatorOutput | undefined {
    if (!isMap(node)) {
      this.errorAt(nodeOffset(node), "each output must be a mapping with path (and name)");
      return undefined;
    }
    this.warnUnknown(node, OUTPUT_KEYS, "output");
    const name = this.scalarString(node, "name", false);
    if (name !== undefined && !OPERATOR_NAME.test(name)) {
      this.errorAt(nodeOffset(this.valueNode(node, "name")), `output name ${JSON.stringify(truncate(name))} is not letters, digits, '_' and '-'`);
    }
    const path = this.containerPath(node);
    if (path === undefined) return undefined;
    return name === undefined ? { path } : { name, path };
  }

  private containerPath(node: YAMLMap): string | undefined {
    const path = this.scalarString(node, "path", false);
    if (path === undefined) {
      this.errorAt(nodeOffset(node), "missing `path`", "give the absolute path inside the container, e.g. /input");
      return undefined;
    }
    const at = nodeOffset(this.valueNode(node, "path"));
    if (!path.startsWith("/")) {
      this.errorAt(at, `path ${JSON.stringify(truncate(path))} is not absolute`, "container paths start with /, e.g. /input");
      return undefined;
    }
    if (path.split("/").some((part) => part === ".." || part === ".") || /[\u0000-\u001f:]/.test(path) || path === "/") {
      this.errorAt(at, `path ${JSON.stringify(truncate(path))} is not a plain absolute directory`, "use a path such as /input, without '..', ':' or control characters");
      return undefined;
    }
    return path.length > 1 && path.endsWith("/") ? path.replace(/\/+$/, "") : path;
  }

  private requests(node: YAMLMap): Requests {
    const requests: Requests = {};
    const r = this.valueNode(node, "requests");
    if (r === undefined || isNullScalar(r)) return requests;
    if (!isMap(r)) {
      this.errorAt(nodeOffset(r), "`requests` must be a mapping with cpu, gpu and memory");
      return requests;
    }
    this.warnUnknown(r, REQUEST_KEYS, "requests");
    for (const key of ["cpu", "gpu", "memory"] as const) {
      const v = this.valueNode(r, key);
      if (v === undefined || isNullScalar(v)) continue;
      const value = isScalar(v) ? v.value : undefined;
      const n = typeof value === "number" ? value : typeof value === "string" && value.trim() !== "" ? Number(value) : NaN;
      if (!Number.isFinite(n) || n < 0 || (key === "gpu" && !Number.isInteger(n))) {
        this.errorAt(nodeOffset(v), `requests.${key} must be a ${key === "gpu" ? "whole " : ""}number ≥ 0`, key === "memory" ? "memory is in MB, e.g. memory: 4096" : undefined);
        continue;
      }
      requests[key] = n;
    }
    return requests;
  }

  private service(node: Node): OperatorService | undefined {
    if (!isMap(node)) {
      this.errorAt(nodeOffset(node), "each service must be a mapping with name and container");
      return undefined;
    }
    const name = this.scalarString(node, "name", true);
    if (name === undefined) return undefined;
    const service: OperatorService = { name };
    const c = this.valueNode(node, "container");
    if (c !== undefined && isMap(c)) {
      const image = this.scalarString(c, "image", false);
      const tag = this.scalarString(c, "tag", false);
      const command = this.stringList(c, "command");
      if (image !== undefined) service.image = image;
      if (tag !== undefined) service.tag = tag;
      if (command !== undefined) service.command = command;
    }
    return service;
  }

  private model(node: Node): string | undefined {
    if (isScalar(node) && node.value !== null) return String(node.value);
    if (isMap(node)) return this.scalarString(node, "name", true);
    this.errorAt(nodeOffset(node), "each model must be a name or a mapping with name");
    return undefined;
  }

  private checkReferences(operators: Operator[], byName: Map<string, Operator>): void {
    for (const op of operators) {
      for (const input of op.inputs) {
        if (input.from === undefined) continue;
        const at = this.inputOffsets.get(input) ?? 0;
        const upstream = byName.get(input.from);
        if (input.from === op.name) {
          this.errorAt(at, `operator ${op.name} takes input from itself`, "an input `from` must name an upstream operator");
        } else if (!upstream) {
          const known = [...byName.keys()].filter((n) => n !== op.name).join(", ");
          this.errorAt(at, `operator ${op.name}: input from unknown operator "${truncate(input.from)}"`, `name one of: ${known}`);
        } else if (input.name !== undefined) {
          if (!upstream.outputs.some((o) => o.name === input.name)) {
            const named = upstream.outputs.filter((o) => o.name !== undefined).map((o) => o.name);
            this.errorAt(
              at,
              `operator ${op.name}: operator ${upstream.name} has no output named "${truncate(input.name)}"`,
              named.length > 0 ? `its named outputs are: ${named.join(", ")}` : `give ${upstream.name}'s output a \`name: ${input.name}\``,
            );
          }
        } else if (upstream.outputs.length === 0) {
          this.errorAt(at, `operator ${op.name}: operator ${upstream.name} has no output to read`, `add an output to ${upstream.name}`);
        }
      }
    }
  }

  /** Kahn's algorithm, always taking the earliest ready operator in file order. */
  private executionOrder(operators: Operator[]): Operator[] {
    const deps = new Map<string, Set<string>>();
    for (const op of operators) deps.set(op.name, new Set(op.inputs.flatMap((i) => (i.from ? [i.from] : []))));
    const done = new Set<string>();
    const order: Operator[] = [];
    while (order.length < operators.length) {
      const next = operators.find((op) => !done.has(op.name) && [...deps.get(op.name)!].every((d) => done.has(d)));
      if (!next) break;
      done.add(next.name);
      order.push(next);
    }
    if (order.length < operators.length) {
      const cycle = findCycle(operators.filter((op) => !done.has(op.name)), deps);
      const first = operators.find((op) => op.name === cycle[0])!;
      this.errorAtLine(
        first.line,
        `operators form a cycle: ${[...cycle, cycle[0]].join(" -> ")}`,
        "an operator cannot depend, directly or not, on its own output; remove one of these `from`s",
      );
    }
    return order;
  }

  // ------------------------------------------------------------ small readers

  private valueNode(map: YAMLMap, key: string): Node | undefined {
    for (const pair of map.items as Pair[]) {
      if (isScalar(pair.key) && pair.key.value === key) return (pair.value as Node | null) ?? undefined;
    }
    return undefined;
  }

  /** A scalar value as a string (numbers and booleans converted), checking its type. */
  private scalarString(map: YAMLMap, key: string, required: boolean): string | undefined {
    const node = this.valueNode(map, key);
    if (node === undefined || isNullScalar(node)) {
      if (required) this.errorAt(nodeOffset(map), `missing \`${key}\``, `add \`${key}: ...\``);
      return undefined;
    }
    if (!isScalar(node) || typeof node.value === "object") {
      this.errorAt(nodeOffset(node), `\`${key}\` must be a single value, not a list or mapping`);
      return undefined;
    }
    const value = String(node.value);
    if (/[\u0000-\u0008\u000b-\u001f\u007f]/.test(value)) {
      this.errorAt(nodeOffset(node), `\`${key}\` contains control characters`);
      return undefined;
    }
    return value;
  }

  private stringList(map: YAMLMap, key: string): string[] | undefined {
    const node = this.valueNode(map, key);
    if (node === undefined || isNullScalar(node)) return undefined;
    if (!isSeq(node)) {
      this.errorAt(
        nodeOffset(node),
        `\`${key}\` must be a list of strings (argv)`,
        `write it as ${key}: ["program", "arg"]; cpost runs no shell, so wrap shell lines as ["sh", "-c", "..."]`,
      );
      return undefined;
    }
    const out: string[] = [];
    for (const item of node.items as Node[]) {
      if (!isScalar(item) || item.value === null || typeof item.value === "object") {
        this.errorAt(nodeOffset(item), `every \`${key}\` item must be a string`);
        return undefined;
      }
      const s = String(item.value);
      if (s.includes("\u0000")) {
        this.errorAt(nodeOffset(item), `a \`${key}\` item contains a NUL character`);
        return undefined;
      }
      out.push(s);
    }
    return out;
  }

  private list<T>(map: YAMLMap, key: string, each: (node: Node) => T | undefined): T[] {
    const node = this.valueNode(map, key);
    if (node === undefined || isNullScalar(node)) return [];
    if (!isSeq(node)) {
      this.errorAt(nodeOffset(node), `\`${key}\` must be a list`, `write each entry as \`- ...\` under ${key}:`);
      return [];
    }
    const out: T[] = [];
    for (const item of node.items as Node[]) {
      const value = each(item);
      if (value !== undefined) out.push(value);
    }
    return out;
  }

  private warnUnknown(map: YAMLMap, known: Set<string>, where: string): void {
    for (const pair of map.items as Pair[]) {
      const key = isScalar(pair.key) ? String(pair.key.value) : "?";
      if (!known.has(key)) {
        const pos = this.lines.linePos(nodeOffset(pair.key as Node));
        this.warnings.push({
          file: this.file,
          line: pos.line,
          column: pos.col,
          message: `unknown ${where} key "${truncate(key)}" ignored`,
        });
      }
    }
  }

  private warnAt(node: Node | undefined, message: string): void {
    const pos = this.lines.linePos(nodeOffset(node));
    this.warnings.push({ file: this.file, line: pos.line, column: pos.col, message });
  }

  private lineOf(offset: number): number {
    return this.lines.linePos(offset).line;
  }

  private errorAt(offset: number, message: string, hint?: string): void {
    const pos = this.lines.linePos(offset);
    this.errors.push(new CpostError("input", message, { file: this.file, line: pos.line, column: pos.col, hint }));
  }

  private errorAtLine(line: number, message: string, hint?: string): void {
    this.errors.push(new CpostError("input", message, { file: this.file, line, column: 1, hint }));
  }

  private fail(): never {
    const n = this.errors.length;
    if (n === 1) throw this.errors[0]!;
    // A broken file can yield thousands of follow-on errors; the first few say what to fix.
    const shown = this.errors.slice(0, MAX_REPORTED_ERRORS);
    throw new CpostError("input", `${this.file}: ${n} problems${n > shown.length ? ` (the first ${shown.length} shown)` : ""}`, {
      file: this.file,
      line: this.errors[0]!.line,
      column: this.errors[0]!.column,
      related: shown,
      hint: "fix them and run `cpost validate` again",
    });
  }
}

function nodeOffset(node: unknown): number {
  const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
  return range ? range[0] : 0;
}

function isNullScalar(node: unknown): boolean {
  return isScalar(node) && node.value === null;
}

function firstLine(s: string): string {
  return s.split("\n")[0] ?? s;
}

function truncate(s: string): string {
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function yamlHint(code: string): string | undefined {
  switch (code) {
    case "DUPLICATE_KEY":
      return "each key may appear once in a mapping; remove or rename the repeated one";
    case "BAD_INDENT":
    case "MISSING_CHAR":
    case "UNEXPECTED_TOKEN":
      return "check the indentation and punctuation around this place";
    default:
      return undefined;
  }
}

/** One cycle among operators that Kahn's algorithm could not place. */
function findCycle(stuck: Operator[], deps: Map<string, Set<string>>): string[] {
  const names = new Set(stuck.map((op) => op.name));
  const start = stuck[0]!.name;
  const path: string[] = [];
  const onPath = new Map<string, number>();
  let current = start;
  // Every stuck operator has at least one stuck dependency, so walking deps must revisit.
  while (!onPath.has(current)) {
    onPath.set(current, path.length);
    path.push(current);
    const next = [...deps.get(current)!].find((d) => names.has(d))!;
    current = next;
  }
  return path.slice(onPath.get(current)!).reverse();
}

// ---------------------------------------------------------------- mounts

/** One bind mount of an operator's container. */
export interface Mount {
  /** Directory on the host. */
  hostPath: string;
  /** Absolute path in the container. */
  containerPath: string;
  readOnly: boolean;
  /** What it is, for `cpost validate` and logs. */
  kind: "input" | "upstream" | "output" | "models";
  /** For upstream mounts: which operator's output. */
  from?: string;
}

/** Host directory for an operator's output (unique per output). */
export function outputHostDir(workDir: string, operator: Operator, index: number): string {
  const output = operator.outputs[index]!;
  return join(workDir, operator.name, output.name === undefined ? `output-${index}` : `named-${output.name}`);
}

/** Which output of `upstream` an input reading it refers to. */
function upstreamOutputIndex(upstream: Operator, input: OperatorInput): number {
  if (input.name !== undefined) return upstream.outputs.findIndex((o) => o.name === input.name);
  const unnamed = upstream.outputs.findIndex((o) => o.name === undefined);
  return unnamed >= 0 ? unnamed : 0;
}

/**
 * The bind mounts of an operator, as the original CPOST made them: input
 * without `from` -> the user's input dir; `from: X` -> X's output dir; each
 * output -> a fresh host dir under `workDir`.
 */
export function mountsFor(pipeline: Pipeline, operator: Operator, inputDir: string, workDir: string): Mount[] {
  const mounts: Mount[] = [];
  for (const input of operator.inputs) {
    if (input.from === undefined) {
      mounts.push({ hostPath: inputDir, containerPath: input.path, readOnly: true, kind: "input" });
      continue;
    }
    const upstream = pipeline.operators.find((op) => op.name === input.from)!;
    const index = upstreamOutputIndex(upstream, input);
    mounts.push({
      hostPath: outputHostDir(workDir, upstream, index),
      containerPath: input.path,
      readOnly: true,
      kind: "upstream",
      from: upstream.name,
    });
  }
  operator.outputs.forEach((_, index) => {
    mounts.push({
      hostPath: outputHostDir(workDir, operator, index),
      containerPath: operator.outputs[index]!.path,
      readOnly: false,
      kind: "output",
    });
  });
  return mounts;
}

/** Names of the operators each operator reads from (its direct upstreams). */
export function upstreamsOf(operator: Operator): string[] {
  return [...new Set(operator.inputs.flatMap((i) => (i.from ? [i.from] : [])))];
}
