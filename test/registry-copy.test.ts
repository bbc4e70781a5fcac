/**
 * How a collector is added: copy a built-in's folder, rename it, add one
 * registry line, and the shared contract picks it up. Done here for real
 * with collectors/cgroup/ (the copy lives beside it while the test runs, so
 * its relative imports resolve as a new built-in's would).
 */
import { afterAll, expect, test } from "bun:test";
import { cpSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { builtinCollectors, type CollectorModule } from "../collectors/index.ts";
import { collectorContracts } from "./collectors-contract.ts";
import { REPO } from "./support.ts";

const copy = join(REPO, "collectors", `.copied-${process.pid}`);
cpSync(join(REPO, "collectors/cgroup"), copy, { recursive: true });
// The rename a developer makes: the name users type, which is also its registry name.
const index = join(copy, "index.ts");
writeFileSync(index, readFileSync(index, "utf8").replaceAll('"cgroup"', '"copied"'));
afterAll(() => rmSync(copy, { recursive: true, force: true }));

// The one registry line (collectors/index.ts has the same shape).
const registry: Record<string, () => Promise<CollectorModule>> = { ...builtinCollectors, copied: () => import(index) };

test("the copy is a new collector of its own name, beside the original", async () => {
  const copied = (await registry.copied!()).default;
  const original = (await builtinCollectors.cgroup!()).default;
  expect(copied.name).toBe("copied");
  expect(copied).not.toBe(original);
  expect(copied.metrics.map((m) => m.name)).toEqual(original.metrics.map((m) => m.name));
});

collectorContracts({ copied: registry.copied! }, {}, registry);
