/**
 * Operators that last a few milliseconds get real samples: the runner
 * watches each container before starting it, and the sampler opens the
 * container's cgroup the moment the engine makes it. Real dockerd, real
 * cgroup files, the busybox test image. Also: a pending watch whose
 * container never shows up ends with one note and no samples, and
 * `--collectors nvml` asked for on a host without NVML is a usage error
 * before anything starts.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadCollectors } from "../collectors/index.ts";
import { connectDocker } from "../core/engine/docker.ts";
import { loadPipeline } from "../core/pipeline/pipeline.ts";
import { runPipeline } from "../core/run/runner.ts";
import { Sampler } from "../core/sampling/sampler.ts";
import type { SampleBatch, Sink, Target } from "../core/contracts/types.ts";
import { cpostSource, dockerTest, hasDocker, REPO } from "./support.ts";

const temp = mkdtempSync(join(tmpdir(), "cpost-short-test-"));
const INPUT = join(REPO, "examples/diamond/input");

afterAll(async () => {
  if (hasDocker) {
    // in-process runs label their containers with this process's pid; the runner removes them, this is the safety net
    const d = await connectDocker({ host: "unix:///var/run/docker.sock" });
    for (const c of await d.listContainers([`cpost.pid=${process.pid}`])) await d.removeContainer(c.id, { force: true });
  }
  rmSync(temp, { recursive: true, force: true });
});

/** Per operator: rows taken, and rows whose memory.usage_bytes was above zero. */
function recorder() {
  const seen = new Map<string, { rows: number; memoryRows: number }>();
  const sink: Sink = {
    name: "recorder",
    start() {},
    write(batch: SampleBatch) {
      const at = batch.columns.findIndex((c) => c.key === "memory.usage_bytes");
      const entry = seen.get(batch.operator) ?? { rows: 0, memoryRows: 0 };
      entry.rows += batch.rows;
      for (let r = 0; at >= 0 && r < batch.rows; r++) if (batch.values[r * batch.columns.length + at]! > 0) entry.memoryRows++;
      seen.set(batch.operator, entry);
    },
    operatorDone() {},
    end() {},
  };
  return { sink, seen };
}

const COMMANDS: Record<string, string[]> = {
  true: ["true"],
  cat: ["cat", "/etc/hostname"],
  sleep20: ["cpost-workload", "sleep-ms", "20"],
};
const RUNS = 10;

describe("very short operators", () => {
  dockerTest(`true, cat /etc/hostname and a 20 ms sleep each have samples with memory in ${RUNS} runs out of ${RUNS}`, async () => {
    const names: string[] = [];
    let yaml = "api-version: 0.4.0\nname: short-operators\noperators:\n";
    for (let run = 1; run <= RUNS; run++) {
      for (const [kind, command] of Object.entries(COMMANDS)) {
        const name = `${kind}-${run}`;
        names.push(name);
        yaml += `  - name: ${name}\n    container: {image: cpost-test/busybox, tag: "1", command: ${JSON.stringify(command)}}\n`;
      }
    }
    const file = join(temp, "short.yaml");
    writeFileSync(file, yaml);
    const { sink, seen } = recorder();
    const warnings: string[] = [];
    const result = await runPipeline({
      pipeline: loadPipeline(file).pipeline,
      inputDir: INPUT,
      collectors: await loadCollectors(["cgroup", "blkio"]),
      sinks: [sink],
      intervalMs: 10,
      force: "cont",
      verbose: false,
      keepOutputs: false,
      quiet: true,
      warn: (message) => warnings.push(message),
    });
    const report = names.map((n) => `${n}: ${seen.get(n)?.rows ?? 0} rows, ${seen.get(n)?.memoryRows ?? 0} with memory`);
    console.log(`short operators at 10 ms: ${report.join("; ")}`);
    expect(result.results.map((r) => r.status)).toEqual(names.map(() => "succeeded"));
    expect(names.filter((n) => !(seen.get(n)?.memoryRows! > 0))).toEqual([]);
    expect(result.summaries.every((s) => s.samples > 0 && s.memoryMb.max > 0)).toBe(true);
    expect(warnings).toEqual([]);
  }, 180_000);

  dockerTest("every operator of the example pipeline has samples", async () => {
    const { sink, seen } = recorder();
    const warnings: string[] = [];
    const { pipeline } = loadPipeline(join(REPO, "examples/diamond/pipeline.yaml"));
    const result = await runPipeline({
      pipeline,
      inputDir: INPUT,
      collectors: await loadCollectors(["cgroup", "blkio"]),
      sinks: [sink],
      intervalMs: 10,
      force: "cont",
      verbose: false,
      keepOutputs: false,
      quiet: true,
      warn: (message) => warnings.push(message),
    });
    expect(result.results.map((r) => `${r.operator} ${r.status}`)).toEqual(["reader", "segment", "measure", "writer", "audit"].map((n) => `${n} succeeded`));
    expect(pipeline.order.filter((op) => !(seen.get(op.name)?.memoryRows! > 0)).map((op) => op.name)).toEqual([]);
    expect(warnings).toEqual([]);
  });
});

describe("a pending watch", () => {
  // a container id no engine has: its cgroup never appears
  const ghost = (operator: string): Target => ({ kind: "container", containerId: `${"0".repeat(56)}${String(process.pid).padStart(8, "0")}`, pid: 0, engine: "docker", cgroupDriver: "cgroupfs", operator });

  for (const mainThread of [false, true]) {
    test(`whose cgroup never appears: finish() ends it with no samples and one note, no crash (${mainThread ? "main thread" : "worker"})`, async () => {
      const warnings: string[] = [];
      const batches: SampleBatch[] = [];
      const sampler = new Sampler({ intervalMs: 2, collectors: await loadCollectors(["cgroup", "blkio"]), onBatch: (b) => batches.push(b), onWarning: (m) => warnings.push(m), mainThread });
      try {
        const watch = sampler.watch(ghost("never-started"), { pending: true });
        expect(watch.columns).toEqual([]);
        // it keeps looking, quietly, tick after tick
        const until = performance.now() + 50;
        while (performance.now() < until) await Bun.sleep(5);
        expect(warnings).toEqual([]);
        await watch.finish(100);
        expect(watch.samples).toBe(0);
        expect(batches).toEqual([]);
        expect(warnings.length).toBe(1);
        expect(warnings[0]).toContain("never-started: never saw its cgroup, so it has no samples");
        // the same target not pending: not available, said once, as before
        sampler.watch(ghost("late"));
        sampler.watch(ghost("later"));
        expect(warnings.slice(1).map((w) => w.replace(/:.*/s, ""))).toEqual(["cgroup", "blkio"]);
        expect(warnings[1]).toContain("cgroup: not available: no cgroup for container");
      } finally {
        sampler.close();
      }
    });
  }
});

describe("--collectors nvml without NVML", () => {
  test("is a usage error (exit 2) naming the reason, before any container starts", async () => {
    const missing = join(temp, "no-such-libnvidia-ml.so.1");
    const run = await cpostSource(["run", join(REPO, "examples/diamond/pipeline.yaml"), INPUT, "--collectors", "cgroup,nvml"], { env: { CPOST_NVML_LIB: missing } });
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("nvml");
    expect(run.stderr).toContain(missing);
    expect(run.stdout).not.toContain("Executing Operator");
  });
});
