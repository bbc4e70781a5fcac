import { expect, test } from "bun:test";
import { join } from "node:path";
import { VERSION } from "../core/contracts/version.ts";
import { compiledBinary, REPO, runProcess } from "./support.ts";

test("the compiled executable runs without node_modules or bun", async () => {
  const bin = await compiledBinary();
  // A bare environment and a cwd outside the repo: nothing to borrow.
  const env = { PATH: "/usr/bin:/bin", HOME: "/tmp", NODE_PATH: undefined, BUN_INSTALL: undefined };
  const version = await runProcess([bin, "--version"], { cwd: "/tmp", env });
  expect(version).toMatchObject({ code: 0, stdout: `cpost ${VERSION}\n` });

  const ok = await runProcess([bin, "validate", join(REPO, "examples/diamond/pipeline.yaml")], { cwd: "/tmp", env });
  expect(ok.code).toBe(0);
  expect(ok.stdout).toContain("1. reader");
  expect(ok.stdout).toContain("5. audit");

  const bad = await runProcess([bin, "validate", join(REPO, "test/fixtures/pipelines/cycle.yaml")], { cwd: "/tmp", env });
  expect(bad.code).toBe(2);
  expect(bad.stderr).toContain("cycle.yaml:11:1: operators form a cycle: b -> c -> a -> b");
}, 120_000);

test("usage errors exit 2 and help exits 0", async () => {
  const bin = await compiledBinary();
  expect((await runProcess([bin, "validate"])).code).toBe(2);
  const help = await runProcess([bin, "--help"]);
  expect(help.code).toBe(0);
  expect(help.stdout).toContain("validate <pipeline.yaml>");
  const sub = await runProcess([bin, "validate", "--help"]);
  expect(sub.code).toBe(0);
  expect(sub.stdout).toContain("PIPELINE");
}, 120_000);
