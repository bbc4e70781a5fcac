/**
 * OOM and throttling against the real engine: with --enforce-requests an
 * operator whose memory request is too small is killed by the kernel's OOM
 * killer under that limit (exit 137, the engine's OOMKilled, the cgroup's
 * oom_kill count), and one whose cpu request is too small is throttled.
 * Both are flagged as lower bounds; with --retry-oom the killed one runs
 * again with double the memory, succeeds, and is sized above its peak, and
 * --apply writes that into the pipeline file.
 */
import { afterAll, describe, expect } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readRecording } from "../core/sinks/recording.ts";
import { BUN, dockerTest, REPO } from "./support.ts";

const dir = mkdtempSync(join(tmpdir(), "cpost-oom-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const input = join(dir, "in");
mkdirSync(input);
writeFileSync(join(input, "a.txt"), "x\n");

/** 150 MiB under a 96 MB limit; two busy threads under a tenth of a core (throttled even on a loaded machine). */
const PIPELINE = `api-version: 0.4.0
name: oom-live
operators:
  # needs about 158 MB
  - name: hog
    container: {image: cpost-test/busybox, tag: "1", command: ["cpost-workload", "mem", "150", "0.5"]}
    requests: {memory: 96}
    input: [{path: /input}]
  - name: capped
    container: {image: cpost-test/busybox, tag: "1", command: ["cpost-workload", "cpu", "2", "0.8"]}
    requests: {cpu: 0.1}   # too little
    input: [{path: /input}]
`;

/** Runs cpost from source; also says whether any container of that process is left on the engine. */
async function cpost(args: string[]): Promise<{ code: number; stdout: string; stderr: string; leftovers: number }> {
  const proc = Bun.spawn([BUN, join(REPO, "core/main.ts"), ...args], { cwd: dir, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 90_000);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  const filters = encodeURIComponent(JSON.stringify({ label: [`cpost.pid=${proc.pid}`] }));
  const left = (await (await fetch(`http://docker/v1.41/containers/json?all=1&filters=${filters}`, { unix: "/var/run/docker.sock" })).json()) as unknown[];
  return { code, stdout, stderr, leftovers: left.length };
}

describe("OOM and throttling (live)", () => {
  dockerTest("a memory limit too small: OOM-killed and flagged as a lower bound; a cpu limit too small: throttled and flagged", async () => {
    const file = join(dir, "flagged.yaml");
    writeFileSync(file, PIPELINE);
    const run = await cpost(["size", file, input, "--enforce-requests", "--force", "cont", "--metrics_dir", join(dir, "flagged")]);
    expect(run.leftovers).toBe(0);
    expect(run.code).toBe(1);
    expect(run.stdout).toContain("Operator failed with exitcode is: 137");
    expect(run.stdout).toMatch(/\n {2}hog {5}cpu: \d+, memory: \d+ {3}from max [\d.]+ s (?:\(its whole run\) )?CPU [\d.]+ % ± [\d.]+ and max working set [\d.]+ MB over \d+ readings {2}\[LOWER BOUND: OOM killed\] {2}\(failed, exit code 137\)\n/);
    expect(run.stdout).toContain("- lower bound: OOM killed under a memory limit of 96 MB; retry with more (--retry-oom doubles it: next 192 MB)");
    expect(run.stdout).toMatch(/\n {2}capped {2}cpu: \d+, memory: 256 .*\[LOWER BOUND: CPU throttled\]\n {10}- lower bound: CPU throttled \d+ times? \([\d.]+ s\) under a CPU limit of 0\.1 cores;/);

    const recording = readRecording(join(dir, "flagged", "oom-live.msgpack"));
    const [hog, capped] = recording.operators;
    expect(hog!.result).toMatchObject({ status: "failed", exitCode: 137, oomKilled: true, limits: { memoryMb: 96 } });
    const hogEvidence = hog!.summary!.recommendation.evidence!;
    expect(hogEvidence).toMatchObject({ oomKills: 1, limits: { memoryMb: 96 }, lowerBound: { memory: true, cpu: false } });
    // It died at its limit: what was seen is at most the limit.
    expect(hogEvidence.memory.valueMb).toBeLessThanOrEqual(96);
    expect(capped!.result).toMatchObject({ status: "succeeded", limits: { cpu: 0.1 } });
    const cappedEvidence = capped!.summary!.recommendation.evidence!;
    expect(cappedEvidence.lowerBound).toEqual({ memory: false, cpu: true });
    expect(cappedEvidence.throttled!.periods).toBeGreaterThan(0);
    expect(cappedEvidence.throttled!.seconds).toBeGreaterThan(0);
  }, 90_000);

  dockerTest("--retry-oom: the killed operator runs again with double the memory, succeeds, is sized above its peak, and --apply writes it", async () => {
    const file = join(dir, "retried.yaml");
    writeFileSync(file, PIPELINE);
    const run = await cpost(["size", file, input, "--enforce-requests", "--retry-oom", "--force", "cont", "--metrics_dir", join(dir, "retried"), "--apply"]);
    expect(run.leftovers).toBe(0);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain("Operator hog was killed for lack of memory under its 96 MB limit: running it again with 192 MB (--retry-oom)");

    const recording = readRecording(join(dir, "retried", "oom-live.msgpack"));
    const hog = recording.operators[0]!;
    expect(hog.result).toMatchObject({ status: "succeeded", exitCode: 0, oomKilled: false, limits: { memoryMb: 192 } });
    expect(hog.result!.attempts).toEqual([expect.objectContaining({ exitCode: 137, oomKilled: true, limits: { memoryMb: 96 } })]);
    // Both containers fed the summary; 150 MiB (157.3 MB) touched under the larger limit.
    expect(new Set(hog.batches.map((b) => b.containerId)).size).toBe(2);
    const rec = hog.summary!.recommendation;
    const peakMb = rec.evidence!.memory.valueMb;
    expect(peakMb).toBeGreaterThan(150 * 1.048576);
    expect(rec.memory).toBeGreaterThan(peakMb);
    expect(rec.evidence!.lowerBound).toBeUndefined();
    expect(rec.notes).toEqual(["OOM killed at 96 MB; succeeded with 192 MB"]);
    expect(run.stdout).toContain(`  hog     cpu: ${rec.cpu}, memory: ${rec.memory}   from max `);
    expect(run.stdout).toContain("\n          - OOM killed at 96 MB; succeeded with 192 MB\n");

    // hog's requests get the new figures; capped keeps its throttled cpu and gains its memory; the comments stay.
    const capped = recording.operators[1]!.summary!.recommendation;
    const expected = PIPELINE.replace("requests: {memory: 96}", `requests: {memory: ${rec.memory}, cpu: ${rec.cpu}}`).replace("requests: {cpu: 0.1}   # too little", `requests: {cpu: 0.1, memory: ${capped.memory}}   # too little`);
    expect(readFileSync(file, "utf8")).toBe(expected);
    expect(run.stdout).toContain(`-    requests: {memory: 96}\n+    requests: {memory: ${rec.memory}, cpu: ${rec.cpu}}\n`);
    expect(run.stderr).toContain("warning: capped: cpu not applied: it was throttled under its CPU limit");
  }, 90_000);
});
