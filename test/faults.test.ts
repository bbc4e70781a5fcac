/**
 * Faults, for real: the engine restarting mid-run, an operator's container
 * killed or removed from outside, its cgroup vanishing under an open probe,
 * the metrics dir filling up, and cpost itself killed with SIGKILL. Each
 * ends cleanly: the samples taken are kept, files are not corrupt, and
 * nothing labelled by the run outlives it. What each check tried and what
 * happened goes to docs/reliability.md (test/reliability-log.ts).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCgroupCollector } from "../collectors/cgroup.ts";
import { connectDocker, type DockerClient } from "../core/docker.ts";
import { readRecording, type Recording } from "../core/recording.ts";
import { Sampler } from "../core/sampler.ts";
import { isUnavailable, type MetricBuffer, type Probe, type SampleBatch, type Target } from "../core/types.ts";
import { defineReliabilityLog } from "./reliability-log.ts";
import { BUN, compiledBinary, dockerTest, hasDocker, REPO } from "./support.ts";
import { removeContainer, removeMine, startContainer, until } from "./test-containers.ts";

const log = defineReliabilityLog("faults");
const temp = mkdtempSync(join(tmpdir(), "cpost-faults-"));
const INPUT = join(REPO, "examples/diamond/input");
/** Every cpost process this file started: their labelled containers are removed in afterAll. */
const pids: number[] = [];
let engine: DockerClient | undefined;
const docker = async () => (engine ??= await connectDocker({ host: "unix:///var/run/docker.sock" }));

afterAll(async () => {
  if (hasDocker) {
    const d = await docker();
    for (const pid of pids) {
      for (const c of await d.listContainers([`cpost.pid=${pid}`]).catch(() => [])) await d.removeContainer(c.id, { force: true });
    }
    await removeMine();
  }
  rmSync(temp, { recursive: true, force: true });
});

let counter = 0;
function scratch(): string {
  const dir = join(temp, `t${++counter}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** A pipeline file of busybox operators; each is [name, argv]. */
function pipelineFile(operators: Array<[string, string[]]>): string {
  const file = join(scratch(), "pipeline.yaml");
  const ops = operators.map(([name, argv]) => `  - name: ${name}\n    container: {image: cpost-test/busybox, tag: "1", command: ${JSON.stringify(argv)}}\n`);
  writeFileSync(file, `api-version: 0.4.0\nname: faults\noperators:\n${ops.join("")}`);
  return file;
}

interface Finished {
  code: number;
  stdout: string;
  stderr: string;
}

/** Starts cpost (from source, or the compiled binary) with its own TMPDIR. */
function spawnCpost(args: string[], options: { binary?: string; tmp?: string } = {}) {
  const tmp = options.tmp ?? scratch();
  const argv = options.binary ? [options.binary, ...args] : [BUN, join(REPO, "core/main.ts"), ...args];
  const proc = Bun.spawn(argv, { cwd: REPO, env: { ...process.env, TMPDIR: tmp }, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  pids.push(proc.pid);
  const done = (async (): Promise<Finished> => {
    const timer = setTimeout(() => proc.kill("SIGKILL"), 100_000);
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    clearTimeout(timer);
    return { code, stdout, stderr };
  })();
  return { proc, tmp, done };
}

/** Containers labelled with that cpost process, and work dirs it left in its TMPDIR. */
async function leftovers(pid: number, tmp: string): Promise<string[]> {
  const d = await docker();
  const containers = await d.listContainers([`cpost.pid=${pid}`]);
  const networks = await d.listNetworks([`cpost.pid=${pid}`]);
  const dirs = existsSync(tmp) ? readdirSync(tmp).filter((f) => f.startsWith("cpost-")) : [];
  return [...containers.map((c) => `container ${c.names[0]}`), ...networks.map((n) => `network ${n.name}`), ...dirs.map((f) => `dir ${f}`)];
}

/** The running container of that operator of that cpost process. */
async function runningContainer(pid: number, operator: string): Promise<string> {
  const d = await docker();
  return until(`the container of ${operator} to run`, async () => (await d.listContainers([`cpost.pid=${pid}`, `cpost.operator=${operator}`])).find((c) => c.state === "running")?.id, 30_000);
}

/** A recording read while the run is still writing it (the reader stops at the last complete record). */
function readPartial(path: string): Recording | undefined {
  try {
    return existsSync(path) ? readRecording(path) : undefined;
  } catch {
    return undefined;
  }
}

function rowsOf(recording: Recording, operator: string): number {
  return recording.operators.filter((o) => (o.operator?.name ?? o.result?.operator) === operator).reduce((n, o) => n + o.batches.reduce((m, b) => m + b.rows, 0), 0);
}

/** Waits until the recording holds at least `rows` samples of the operator. */
async function sampled(path: string, operator: string, rows: number): Promise<number> {
  return until(`${rows} recorded samples of ${operator}`, () => {
    const r = readPartial(path);
    const n = r ? rowsOf(r, operator) : 0;
    return n >= rows ? n : undefined;
  }, 30_000);
}

/** A CSV the way the original wrote it: every line complete (CRLF), every row as wide as the header, every number a number. */
function checkCsv(path: string): number {
  const text = readFileSync(path, "utf8");
  expect(text.endsWith("\r\n")).toBe(true);
  const lines = text.slice(0, -2).split("\r\n");
  const width = lines[0]!.split(",").length;
  expect(lines[0]).toStartWith("timestamp,cpu_percent,memory");
  for (const line of lines.slice(1)) {
    const cells = line.split(",");
    expect(cells.length).toBe(width);
    expect(Number.isFinite(Number(cells[0]))).toBe(true);
    for (const cell of cells) if (cell !== "") expect(Number.isNaN(Number(cell))).toBe(false);
  }
  return lines.length - 1;
}

describe("an operator's container ended from outside cpost", () => {
  for (const how of ["killed", "removed"] as const) {
    dockerTest(`${how} mid-run: that operator fails with the reason, the rest runs, samples kept, nothing left`, async () => {
      const tried = how === "killed" ? "An operator's container killed from outside (SIGKILL through the engine) mid-run" : "An operator's container removed from outside (`docker rm -f`) mid-run";
      await log.check("Faults", tried, async () => {
        const metrics = scratch();
        const recording = join(metrics, "run.msgpack");
        const file = pipelineFile([["victim", ["cpost-workload", "cpu", "1", "60"]], ["after", ["cpost-workload", "mem", "16", "0.3"]]]);
        const run = spawnCpost(["run", file, INPUT, "--force", "cont", "--sinks", "csv", "--metrics_dir", metrics, "--record", recording]);
        const id = await runningContainer(run.proc.pid, "victim");
        const before = await sampled(recording, "victim", 20);
        const d = await docker();
        if (how === "killed") await d.killContainer(id, "SIGKILL");
        else await d.removeContainer(id, { force: true });
        const result = await run.done;
        expect(result.stderr).not.toContain("cpost:");
        expect(result.code).toBe(1);
        const rec = readRecording(recording);
        expect(rec.complete).toBe(true);
        const victim = rec.operators.find((o) => o.operator?.name === "victim")!;
        expect(victim.result?.status).toBe("failed");
        expect(victim.result?.exitCode).toBe(137);
        expect(rowsOf(rec, "victim")).toBeGreaterThanOrEqual(before);
        expect(rec.operators.find((o) => o.operator?.name === "after")?.result?.status).toBe("succeeded");
        const rows = checkCsv(join(metrics, "victim_final_result.csv"));
        expect(rows).toBeGreaterThanOrEqual(before - 1);
        expect(await leftovers(run.proc.pid, run.tmp)).toEqual([]);
        return `operator failed with exit code 137 (${victim.result?.reason}); ${rowsOf(rec, "victim")} samples kept in the recording, ${rows} CSV rows; the next operator ran; exit 1; no container or work dir left`;
      });
    });
  }
});

describe("cpost itself killed", () => {
  dockerTest("SIGKILL mid-run: the next run removes what the dead run left; its partial recording replays", async () => {
    await log.check("Faults", "cpost (the compiled binary) killed with SIGKILL mid-run; then cpost run again, and cpost replay of its recording", async () => {
      const binary = await compiledBinary();
      const metrics = scratch();
      const recording = join(metrics, "run.msgpack");
      const tmp = scratch();
      const file = pipelineFile([["victim", ["cpost-workload", "cpu", "1", "60"]], ["never", ["true"]]]);
      const dead = spawnCpost(["run", file, INPUT, "--sinks", "csv", "--metrics_dir", metrics, "--record", recording], { binary, tmp });
      const id = await runningContainer(dead.proc.pid, "victim");
      const taken = await sampled(recording, "victim", 20);
      const csv = join(metrics, "victim_final_result.csv");
      await until("CSV rows on disk", () => (existsSync(csv) && readFileSync(csv, "utf8").split("\r\n").length > 3 ? true : undefined), 30_000);
      dead.proc.kill("SIGKILL");
      await dead.done;
      // What a killed cpost cannot clean up: its running container and its work dir.
      const left = await leftovers(dead.proc.pid, tmp);
      expect(left.filter((l) => l.startsWith("container"))).toHaveLength(1);
      expect(left.filter((l) => l.startsWith("dir cpost-"))).toHaveLength(1);
      // Rows flushed before the kill are whole rows.
      const csvRows = checkCsv(csv);

      const next = await spawnCpost(["run", pipelineFile([["quick", ["true"]]]), INPUT, "--sinks", "table"], { binary, tmp }).done;
      expect(next.code).toBe(0);
      const runId = readRecording(recording).run.id;
      expect(next.stderr).toContain(`removing 1 container(s) and 0 network(s) left by ended cpost run(s) ${runId}`);
      expect(next.stderr).toContain(`removed the work dir ${join(tmp, `cpost-${runId}`)} of ended cpost run ${runId}`);
      expect(await leftovers(dead.proc.pid, tmp)).toEqual([]);
      expect((await (await docker()).listContainers([`cpost.run=${runId}`])).map((c) => c.id)).not.toContain(id);

      const partial = readRecording(recording);
      expect(partial.complete).toBe(false);
      const recorded = rowsOf(partial, "victim");
      expect(recorded).toBeGreaterThanOrEqual(taken);
      const replayDir = scratch();
      const replay = await spawnCpost(["replay", recording, "--sinks", "csv,table", "--metrics_dir", replayDir], { binary }).done;
      expect(replay.code).toBe(0);
      expect(replay.stderr).toContain("ends before the run did");
      expect(replay.stdout).toContain("victim");
      const replayRows = checkCsv(join(replayDir, "victim_final_result.csv"));
      expect(replayRows).toBe(recorded - 1);
      return `the killed run left 1 running container and its work dir; the next run removed both and said so; ${recorded} samples were in the partial recording (${csvRows} whole CSV rows flushed before the kill), and cpost replay rebuilt ${replayRows} CSV rows and the table from it (exit 0, with a warning that the recording ends early)`;
    });
  });
});

describe("the metrics dir fills up", () => {
  dockerTest("a small tmpfs: a clear error naming the file, the samples so far intact, CSV and msgpack not corrupt", async () => {
    await log.check("Faults", "The metrics dir fills up mid-run (a 512 KiB tmpfs; CSV and msgpack sinks at 1 ms)", async () => {
      const metrics = scratch();
      const mount = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=512k", "cpost-faults-full", metrics]);
      if (mount.exitCode !== 0) throw new Error(`cannot mount a tmpfs (root needed): ${mount.stderr.toString()}`);
      try {
        const recording = join(metrics, "run.msgpack");
        const csv = join(metrics, "filler_final_result.csv");
        const file = pipelineFile([["filler", ["cpost-workload", "cpu", "1", "5"]], ["after", ["cpost-workload", "mem", "16", "0.3"]]]);
        const run = spawnCpost(["run", file, INPUT, "--force", "cont", "--interval", "1ms", "--sinks", "csv", "--metrics_dir", metrics, "--record", recording]);
        const result = await run.done;
        // Operators are not at fault: they succeed, and each sink says once what it could not keep.
        expect(result.code).toBe(0);
        expect(result.stdout).toContain("Executing Operator after");
        expect(result.stderr).toContain(`warning: csv: write failed: cannot write ${csv}: no space left on device; it keeps the `);
        expect(result.stderr).toContain(`warning: msgpack: write failed: cannot write ${recording}: no space left on device; it keeps the `);
        expect(result.stderr).not.toContain("ENOSPC: no space left on device, write"); // no bare, uncaught error from a background flush
        expect(result.stderr).not.toContain("cpost:");
        const rows = checkCsv(csv);
        const rec = readRecording(recording);
        expect(rec.complete).toBe(false);
        const recorded = rowsOf(rec, "filler");
        expect(rows).toBeGreaterThan(100);
        expect(recorded).toBeGreaterThan(100);
        // Intact, not just well-formed: the CSV on the full disk and the CSV replayed from the recording agree row for row.
        const replayDir = scratch();
        const replay = await spawnCpost(["replay", recording, "--sinks", "csv", "--metrics_dir", replayDir]).done;
        expect(replay.code).toBe(0);
        const onDisk = readFileSync(csv, "utf8");
        const replayed = readFileSync(join(replayDir, "filler_final_result.csv"), "utf8");
        const [shorter, longer] = onDisk.length <= replayed.length ? [onDisk, replayed] : [replayed, onDisk];
        expect(longer.startsWith(shorter)).toBe(true);
        expect(await leftovers(run.proc.pid, run.tmp)).toEqual([]);
        return `each sink said once "cannot write <file>: no space left on device; it keeps the … bytes of whole rows/records written before"; the CSV kept ${rows} whole rows and the recording ${recorded} samples (it replays; its CSV agrees row for row with the one on the full disk); both operators ran, exit 0, nothing left`;
      } finally {
        Bun.spawnSync(["umount", metrics]);
      }
    });
  });
});
