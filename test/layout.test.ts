/**
 * The layout README's "Layout" section describes, held to the code: product
 * files import only their own layer or the layers below it, and no file
 * imports itself back through others (no cycles). Read from the sources'
 * import statements (static and import()), as text.
 */
import { expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { REPO } from "./support.ts";

/** Layers from the bottom: a file may import its own layer and those below. */
const LAYERS: Array<[layer: string, folders: string[]]> = [
  ["contracts", ["core/contracts"]],
  ["engine, pipeline, sizing, native, collectors", ["core/engine", "core/pipeline", "core/sizing", "native", "collectors"]],
  ["sinks (core)", ["core/sinks"]],
  ["plugins (the sinks)", ["plugins"]],
  ["registry", ["core/registry"]],
  ["sampling", ["core/sampling"]],
  ["run", ["core/run"]],
  ["cli", ["core/cli", "core/main.ts"]],
];

function layerOf(file: string): number {
  const index = LAYERS.findIndex(([, folders]) => folders.some((f) => file === f || file.startsWith(`${f}/`)));
  if (index < 0) throw new Error(`${file} is in no layer of LAYERS (and of README's Layout)`);
  return index;
}

function productFiles(): string[] {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(join(REPO, dir), { withFileTypes: true })) {
      if (entry.name.startsWith(".")) continue;
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory()) walk(path);
      // unit tests live beside the code they test, but are not product files
      else if (/\.(ts|js)$/.test(entry.name) && !/\.(d|test)\.ts$/.test(entry.name)) files.push(path);
    }
  };
  for (const dir of ["core", "collectors", "plugins", "native"]) walk(dir);
  return files;
}

const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)["'](\.{1,2}\/[^"']+)["']/g;

function importsOf(file: string): string[] {
  const text = readFileSync(join(REPO, file), "utf8");
  return [...text.matchAll(IMPORT)].map((m) => relative(REPO, resolve(dirname(join(REPO, file)), m[1]!)));
}

test("product files import only their own layer or the layers below", () => {
  const upward: string[] = [];
  let edges = 0;
  for (const file of productFiles()) {
    for (const target of importsOf(file)) {
      if (!/\.(ts|js)$/.test(target)) continue;
      edges++;
      if (layerOf(target) > layerOf(file)) upward.push(`${file} (${LAYERS[layerOf(file)]![0]}) -> ${target} (${LAYERS[layerOf(target)]![0]})`);
    }
  }
  expect(upward).toEqual([]);
  // the reader sees the imports at all (today about 200 of them)
  expect(edges).toBeGreaterThan(150);
});

test("no import cycles among product files", () => {
  const files = productFiles();
  const edges = new Map(files.map((f) => [f, importsOf(f).filter((t) => files.includes(t))]));
  const state = new Map<string, "open" | "done">();
  const cycles: string[] = [];
  const visit = (file: string, path: string[]) => {
    if (state.get(file) === "done") return;
    if (state.get(file) === "open") {
      cycles.push([...path.slice(path.indexOf(file)), file].join(" -> "));
      return;
    }
    state.set(file, "open");
    for (const next of edges.get(file) ?? []) visit(next, [...path, file]);
    state.set(file, "done");
  };
  for (const file of files) visit(file, []);
  expect(cycles).toEqual([]);
});

test("no folder holds more than 40 % of the product's lines in its own files", () => {
  const lines = new Map<string, number>();
  let total = 0;
  for (const file of productFiles()) {
    const n = readFileSync(join(REPO, file), "utf8").split("\n").length;
    total += n;
    lines.set(dirname(file), (lines.get(dirname(file)) ?? 0) + n);
  }
  const heavy = [...lines].filter(([, n]) => n > 0.4 * total).map(([dir, n]) => `${dir}: ${Math.round((100 * n) / total)} %`);
  expect(heavy).toEqual([]);
});
