/**
 * Sizing beyond the requests, without an engine: the CFS throttling
 * simulator against hand-computed cases, the slower samplers' views, the GPU
 * partitions, and `cpost size --json / --check / --format k8s` from the
 * fixture recordings (the JSON validated against the schema in
 * docs/sizing.md).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chooseCpuLimit, defineCfsModel, periodDemands, simulateCfs } from "../core/sizing/cfs.ts";
import { fitGpuMemory, MIG_GPUS } from "../core/sizing/gpu-partitions.ts";
import { resample, SLOWER_SAMPLERS, slowerSamplerViews } from "../core/sizing/slower-samplers.ts";
import { k8sCpu } from "../core/sizing/size-report.ts";
import type { Recording } from "../core/sinks/recording.ts";
import { loadFixtureRun, recordTo, RUNS_DIR } from "./fixtures/runs/fixture-run.ts";
import { cpostSource, REPO } from "./support.ts";

const dirs: string[] = [];
const tempDir = () => {
  const dir = mkdtempSync(join(tmpdir(), "cpost-beyond-"));
  dirs.push(dir);
  return dir;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));


/** A trace of `demands` ms of CPU per 100 ms, read every `stepMs` with the work spread evenly inside each period. */
function traceOf(demandsMs: number[], stepMs = 10) {
  const timesMs: number[] = [];
  const usageNs: number[] = [];
  let used = 0;
  for (let t = 0; t <= demandsMs.length * 100; t += stepMs) {
    timesMs.push(1e6 + t);
    usageNs.push(used * 1e6);
    const k = Math.floor(t / 100);
    used += ((demandsMs[k] ?? 0) * stepMs) / 100;
  }
  return { timesMs, usageNs };
}

describe("CFS bandwidth simulation (hand-computed cases)", () => {
  test("60 ms of work per period under a 40 ms quota: every period throttled, the backlog grows and is worked off after the trace", () => {
    // Backlog after 10 periods: 10 * (60 - 40) = 200 ms, done at 40 per period: 5 more periods (200, 160, 120, 80 throttled; 40 not).
    expect(simulateCfs(Array(10).fill(60), 40)).toEqual({ periods: 15, throttled: 14, extraMs: 500 });
  });
  test("the same work under 80 ms: never throttled; no idle period after the end (the container is gone)", () => {
    expect(simulateCfs(Array(10).fill(60), 80)).toEqual({ periods: 10, throttled: 0, extraMs: 0 });
  });
  test("a burst of 120 ms every other period under 80 ms: the burst period is throttled, its 40 ms are done in the next", () => {
    expect(simulateCfs([120, 0, 120, 0], 80)).toEqual({ periods: 4, throttled: 2, extraMs: 0 });
  });
  test("idle gaps: only the first idle period after work is counted, as the kernel's timer stops after it", () => {
    expect(simulateCfs([50, 0, 0, 50], 100)).toEqual({ periods: 3, throttled: 0, extraMs: 0 });
  });
  test("the counter's jitter is not throttling: 104 / 96 around a 100 ms quota with an 8 ms tolerance", () => {
    expect(simulateCfs([104, 96, 104, 96], 100, { toleranceMs: 8 }).throttled).toBe(0);
    expect(simulateCfs([104, 96, 104, 96], 100).throttled).toBe(2);
  });
  test("carried work runs no faster than the operator's parallelism", () => {
    // 300 ms of work once, quota 250, capacity 200: throttled once, 100 ms left (capacity, not quota, bounds it), then 0.
    expect(simulateCfs([300], 250, { capacityMs: 200 })).toEqual({ periods: 2, throttled: 1, extraMs: 50 });
  });
  test("period demands interpolate the counter at the period boundaries, at any alignment", () => {
    const trace = { timesMs: [0, 100, 200, 300], usageNs: [0, 50e6, 50e6, 150e6] };
    expect(Array.from(periodDemands(trace, 100, 0))).toEqual([0, 50, 0, 100]);
    expect(Array.from(periodDemands(trace, 100, 50))).toEqual([25, 25, 50, 50]);
  });
  test("the limit: the smallest step whose mean throttled share meets the target, never below the request; the curve reaches a limit that never throttles", () => {
    // Two threads busy 30 ms of every 100 ms: 60 ms of work in every period, at every alignment.
    const model = defineCfsModel([traceOf(Array(40).fill(60), 1)], { toleranceMs: 1 });
    expect(model.peakCores).toBeCloseTo(0.6, 6);
    expect(model.predict(0.4).throttledPercent).toBeGreaterThan(95);
    expect(model.predict(0.7).throttledPercent).toBe(0);
    const choice = chooseCpuLimit(model, { request: 0.1, step: 0.1, targetPercent: 1 });
    expect(choice.limit).toBe(0.6);
    expect(choice.atLimit.throttledPercent).toBe(0);
    expect(choice.atRequest.throttledPercent).toBeGreaterThan(95);
    expect(choice.atRequest.stretchPercent).toBeGreaterThan(400); // 0.6 cores of work at 0.1: six times as long
    expect(choice.curve.map((p) => p.cpu)).toEqual([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]);
    expect(chooseCpuLimit(model, { request: 1, step: 1, targetPercent: 1 }).limit).toBe(1);
  });
  test("one burst of 2 cores for 500 ms in 2 s: a 1-core limit throttles the burst and the work it carries", () => {
    const demands = [...Array(5).fill(200), ...Array(15).fill(0)];
    const model = defineCfsModel([traceOf(demands, 1)], { phases: 1 });
    // 5 burst periods (200 > 100) and 4 carried (500 backlog: 400, 300, 200, 100 -> the last equals the quota): 9 of 10 + 1 idle.
    expect(model.predict(1)).toMatchObject({ periods: 11, throttledPeriods: 9, throttledPercent: round3((9 / 11) * 100) });
    expect(model.predict(2).throttledPercent).toBe(0);
  });
});

const round3 = (x: number) => Number(x.toFixed(3));

describe("slower samplers", () => {
  // 256 MB held for 100 ms every 2 s over 10 s, read every 10 ms; 4 MB otherwise.
  const times: number[] = [];
  const need: number[] = [];
  const usage: number[] = [];
  for (let t = 0; t <= 10_000; t += 10) {
    times.push(5e6 + t);
    need.push(t % 2000 >= 500 && t % 2000 < 600 ? 256e6 : 4e6);
    usage.push(t * 0.5e6); // 50 % of a core
  }
  const trace = { timesMs: times, usageNs: usage, needBytes: need };

  test("a 1 s sampler reads the latest fine reading at each second: it catches the spike only when a reading falls inside it", () => {
    const docker = SLOWER_SAMPLERS.find((s) => s.name.startsWith("docker stats"))!;
    expect(resample(trace, docker, 0).memoryMb).toBe(4);
    expect(resample(trace, docker, 550).memoryMb).toBe(256);
    expect(resample(trace, docker, 0).cpuPercent).toBeCloseTo(50, 6);
  });
  test("the views: median over ten start offsets; the 1 s, 5 s views miss the spike, Nextflow's high-water mark keeps it", () => {
    const views = Object.fromEntries(slowerSamplerViews([trace], 256).map((v) => [v.sampler, v]));
    expect(views["docker stats / cAdvisor 1 s"]).toMatchObject({ memoryMb: 4, memoryMbRange: [4, 256], sawMemoryPeakPercent: 10 });
    expect(views["below 5 s"]!.memoryMb).toBe(4);
    expect(views["CPOST 5 Hz"]).toMatchObject({ memoryMb: 4, sawMemoryPeakPercent: 50 });
    expect(views["Nextflow trace"]!.memoryMb).toBe(256);
    expect(views["Nextflow trace"]!.cpuPercent).toBeCloseTo(50, 3);
  });
});

describe("GPU partitions", () => {
  test("the MIG tables: four GPUs, six profiles each, memory from the profile name", () => {
    expect(MIG_GPUS.map((g) => [g.gpu, g.profiles.map((p) => p.profile).join(" ")])).toEqual([
      ["A100 40GB", "1g.5gb 1g.10gb 2g.10gb 3g.20gb 4g.20gb 7g.40gb"],
      ["A100 80GB", "1g.10gb 1g.20gb 2g.20gb 3g.40gb 4g.40gb 7g.80gb"],
      ["H100 80GB", "1g.10gb 1g.20gb 2g.20gb 3g.40gb 4g.40gb 7g.80gb"],
      ["H200 141GB", "1g.18gb 1g.35gb 2g.35gb 3g.71gb 4g.71gb 7g.141gb"],
    ]);
  });
  test("9 GiB of GPU memory asks 11 GB: 3g.20gb on an A100 40GB, 1g.20gb on the 80 GB GPUs, 1g.18gb on an H200", () => {
    const fit = fitGpuMemory(9 * 2 ** 30, "gpu.process_memory_bytes")!;
    expect(fit.memoryGb).toBe(11);
    expect(fit.partitions.map((p) => `${p.gpu} ${p.profile}`)).toEqual(["A100 40GB 3g.20gb", "A100 80GB 1g.20gb", "H100 80GB 1g.20gb", "H200 141GB 1g.18gb"]);
  });
  test("70 GB: no partition of the 40/80 GB GPUs; a whole 80 GB GPU, too big for an A100 40GB; 4g.71gb on an H200", () => {
    const fit = fitGpuMemory(70e9, "gpu.process_memory_bytes")!;
    expect(fit.memoryGb).toBe(77);
    expect(fit.partitions.map((p) => `${p.gpu} ${p.profile}`)).toEqual([]);
    expect(fit.wholeGpu).toEqual(["A100 80GB", "H100 80GB", "H200 141GB"]);
    expect(fit.tooSmall).toEqual(["A100 40GB"]);
  });
  test("the GPU fixture run recommends GPU memory and names the partitions it fits", async () => {
    const dir = tempDir();
    const recording = await recordTo(loadFixtureRun("disk-gpu"), dir);
    writeFileSync(join(dir, "pipeline.yaml"), pipelineFor(loadFixtureRun("disk-gpu")));
    const run = await cpostSource(["size", join(dir, "pipeline.yaml"), "--from", recording, "--json"]);
    expect(run.code).toBe(0);
    const doc = JSON.parse(run.stdout);
    const seg = doc.operators.find((o: { name: string }) => o.name.startsWith("spleen"));
    expect(seg.gpuMemoryGb).toBeGreaterThan(0);
    expect(seg.evidence.gpu.metric).toBe("gpu.process_memory_bytes");
    expect(seg.evidence.gpu.memoryGb).toBe(Math.ceil(Number(((seg.evidence.gpu.peakMb * 1.1) / 1000).toFixed(9))));
    expect(seg.gpuPartitions.length).toBeGreaterThan(0);
    const text = await cpostSource(["size", join(dir, "pipeline.yaml"), "--from", recording]);
    expect(text.stdout).toContain(`gpu: GPU memory ${seg.gpuMemoryGb} GB`);
    expect(text.stdout).toContain(`fits MIG ${seg.gpuPartitions.map((p: { gpu: string; profile: string }) => `${p.gpu} ${p.profile}`).join(", ")}`);
    const k8s = await cpostSource(["size", join(dir, "pipeline.yaml"), "--from", recording, "--format", "k8s"]);
    expect(k8s.stdout).toContain(`nvidia.com/mig-${seg.gpuPartitions[0].profile}`);
    expect(k8s.stdout).toContain("      nvidia.com/gpu: 1");
  });
});

/** A pipeline file for a fixture run's operators, with `requests` per operator. */
function pipelineFor(recording: Recording, requests: Record<string, string> = {}): string {
  const ops = recording.run.pipeline.operators.map((op) => `  - name: ${op.name}\n    container: {image: cpost-test/busybox, tag: "1"}\n${requests[op.name] ? `    requests: ${requests[op.name]}\n` : ""}`);
  return `api-version: 0.4.0\nname: ${recording.run.pipeline.name}\noperators:\n${ops.join("")}`;
}

// ---------------------------------------------------------------- --json against the documented schema

type Schema = { type?: string | string[]; required?: string[]; properties?: Record<string, Schema>; items?: Schema; enum?: unknown[]; additionalProperties?: boolean | Schema; minItems?: number; const?: unknown };

/** The JSON Schema subset docs/sizing.md uses: type (with null), required, properties, additionalProperties, items, enum, const, minItems. */
function validate(value: unknown, schema: Schema, path = "$"): string[] {
  const errors: string[] = [];
  const kind = value === null ? "null" : Array.isArray(value) ? "array" : Number.isInteger(value) ? "integer" : typeof value;
  if (schema.type) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((t) => t === kind || (t === "number" && kind === "integer"))) return [`${path}: ${kind}, not ${types.join("|")}`];
  }
  if (schema.enum && !schema.enum.includes(value)) errors.push(`${path}: ${JSON.stringify(value)} not in ${JSON.stringify(schema.enum)}`);
  if (schema.const !== undefined && value !== schema.const) errors.push(`${path}: not ${JSON.stringify(schema.const)}`);
  if (kind === "object") {
    const obj = value as Record<string, unknown>;
    for (const key of schema.required ?? []) if (!(key in obj)) errors.push(`${path}: missing ${key}`);
    for (const [key, v] of Object.entries(obj)) {
      const sub = schema.properties?.[key];
      if (sub) errors.push(...validate(v, sub, `${path}.${key}`));
      else if (schema.additionalProperties === false) errors.push(`${path}: unexpected ${key}`);
      else if (typeof schema.additionalProperties === "object") errors.push(...validate(v, schema.additionalProperties, `${path}.${key}`));
    }
  }
  if (kind === "array") {
    const arr = value as unknown[];
    if (schema.minItems !== undefined && arr.length < schema.minItems) errors.push(`${path}: fewer than ${schema.minItems} items`);
    if (schema.items) arr.forEach((v, i) => errors.push(...validate(v, schema.items!, `${path}[${i}]`)));
  }
  return errors;
}

/** The schema as docs/sizing.md states it: the ```json block after "### The --json document". */
function documentedSchema(): Schema {
  const doc = readFileSync(join(REPO, "docs/sizing.md"), "utf8");
  const block = /### The --json document[\s\S]*?```json\n([\s\S]*?)\n```/.exec(doc);
  if (!block) throw new Error("docs/sizing.md has no JSON schema block under '### The --json document'");
  return JSON.parse(block[1]!) as Schema;
}

describe("cpost size --json, --check, --format k8s from recordings (no engine)", () => {
  test("--json is one document that validates against the schema in docs/sizing.md, for every fixture run", async () => {
    const schema = documentedSchema();
    for (const fixture of ["classic", "disk-gpu", "oom-killed"]) {
      const dir = tempDir();
      const recording = loadFixtureRun(fixture);
      const file = await recordTo(recording, dir);
      writeFileSync(join(dir, "pipeline.yaml"), pipelineFor(recording));
      const run = await cpostSource(["size", join(dir, "pipeline.yaml"), "--from", file, "--json"]);
      expect({ fixture, code: run.code, stderr: run.stderr }).toEqual({ fixture, code: 0, stderr: "" });
      const doc = JSON.parse(run.stdout);
      expect({ fixture, errors: validate(doc, schema) }).toEqual({ fixture, errors: [] });
      expect(doc.operators.map((o: { name: string }) => o.name)).toEqual(recording.operators.map((op) => op.result!.operator));
    }
  });

  test("--check exits 1 naming the operator whose memory request is too low, 0 when every request suffices", async () => {
    const dir = tempDir();
    const recording = loadFixtureRun("oom-killed");
    const file = await recordTo(recording, dir);
    const json = JSON.parse((await cpostSource(["size", join(RUNS_DIR, "oom-killed", "pipeline.yaml"), "--from", file, "--json"])).stdout);
    const need = Object.fromEntries(json.operators.map((o: { name: string; requests: { cpu: number; memory: number } }) => [o.name, o.requests]));
    const enough = Object.fromEntries(Object.entries(need).map(([name, r]) => [name, `{cpu: ${(r as { cpu: number }).cpu}, memory: ${(r as { memory: number }).memory}}`]));
    const pipeline = join(dir, "pipeline.yaml");
    writeFileSync(pipeline, pipelineFor(recording, enough));
    const ok = await cpostSource(["size", pipeline, "--from", file, "--check", "--format", "k8s"]);
    expect(ok.code).toBe(0);
    expect(ok.stderr).toContain("cpost size --check: every operator's requests cover its need");
    // steady's memory request one step below its need.
    writeFileSync(pipeline, pipelineFor(recording, { ...enough, steady: `{cpu: ${need.steady.cpu}, memory: ${need.steady.memory - 128}}` }));
    const low = await cpostSource(["size", pipeline, "--from", file, "--check"]);
    expect(low.code).toBe(1);
    const failed = low.stderr.split("\n").filter((l) => l.startsWith("check failed: "));
    expect(failed).toEqual([`check failed: steady: memory request ${need.steady.memory - 128} MB, below the ${need.steady.memory} MB it needs (max working set ${json.operators[0].evidence.memory.valueMb.toFixed(3)} MB)`]);
    // Far above: a warning, not a failure.
    writeFileSync(pipeline, pipelineFor(recording, { ...enough, steady: `{cpu: ${need.steady.cpu}, memory: ${need.steady.memory * 4}}` }));
    const high = await cpostSource(["size", pipeline, "--from", file, "--check"]);
    expect(high.code).toBe(0);
    expect(high.stderr).toContain(`warning: steady: memory request ${need.steady.memory * 4} MB is 4.0x the ${need.steady.memory} MB it needs`);
  });

  test("--format k8s prints each operator's resources block with requests and limits", async () => {
    const dir = tempDir();
    const file = await recordTo(loadFixtureRun("oom-killed"), dir);
    const run = await cpostSource(["size", join(RUNS_DIR, "oom-killed", "pipeline.yaml"), "--from", file, "--format", "k8s"]);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('steady:\n  resources:\n    requests:\n      cpu: "1"\n      memory: 256M\n    limits:\n      cpu: "1"\n      memory: 256M\n');
    expect([k8sCpu(0.5), k8sCpu(2), k8sCpu(0.25)]).toEqual(["500m", '"2"', "250m"]);
    const bad = await cpostSource(["size", join(RUNS_DIR, "oom-killed", "pipeline.yaml"), "--from", file, "--format", "yaml"]);
    expect(bad.code).toBe(2);
  });
});
