/**
 * The runner end to end, through the real CLI against the real Docker engine
 * and the busybox test image: outputs reach their consumers, failures obey
 * --force, interrupts clean up, bad input fails before anything starts, and
 * nothing labelled with a run outlives it.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { parseForce, parseInterval } from "../core/cli/commands/run.ts";
import { parseArgs, type FlagsDef } from "../core/cli/flags.ts";
import { CpostError } from "../core/contracts/errors.ts";
import { loadCollectors } from "../collectors/index.ts";
import { loadPipeline } from "../core/pipeline/pipeline.ts";
import { readRecording } from "../core/sinks/recording.ts";
import { centre, runPipeline, TRITON_NETWORK } from "../core/run/runner.ts";
import type { Sink } from "../core/contracts/types.ts";
import { BUN, compiledBinary, defineTestScratch, docker, dockerTest, hasDocker, leftovers, REPO, TEST_IMAGE } from "./support.ts";

const EXAMPLE = join(REPO, "examples/diamond/pipeline.yaml");
const INPUT = join(REPO, "examples/diamond/input");
// In-process runs label their containers with this process's pid.
const { temp, scratch, pids, cleanup } = defineTestScratch("runner-test", [process.pid]);

afterAll(async () => {
  if (hasDocker) {
    const d = await docker();
    for (const c of await d.listContainers([`cpost.test.owner=runner-test-${process.pid}`])) await d.removeContainer(c.id, { force: true });
  }
  await cleanup();
});

function pipelineFile(yaml: string): string {
  const file = join(scratch(), "pipeline.yaml");
  writeFileSync(file, `api-version: 0.4.0\nname: runner-test\noperators:\n${yaml}`);
  return file;
}

/** A busybox operator in YAML; `extra` is more YAML at the operator's indentation. */
function op(name: string, script: string, extra = ""): string {
  return `  - name: ${name}\n    container: {image: cpost-test/busybox, tag: "1", command: ["sh", "-c", ${JSON.stringify(script)}]}\n${extra}`;
}

interface Finished {
  code: number;
  stdout: string;
  stderr: string;
  pid: number;
  /** The TMPDIR the run had: its work dirs appear here. */
  tmp: string;
}

/** Starts cpost (source, or the compiled binary) with its own TMPDIR. */
function spawnCpost(args: string[], options: { binary?: string; env?: Record<string, string>; stdin?: "ignore" | "pipe" } = {}) {
  const tmp = scratch();
  const argv = options.binary ? [options.binary, ...args] : [BUN, join(REPO, "core/main.ts"), ...args];
  const proc = Bun.spawn(argv, {
    cwd: REPO,
    env: { ...process.env, TMPDIR: tmp, ...options.env },
    stdin: options.stdin ?? "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  pids.push(proc.pid);
  const done = (async (): Promise<Finished> => {
    const timer = setTimeout(() => proc.kill("SIGKILL"), 100_000);
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    clearTimeout(timer);
    return { code, stdout, stderr, pid: proc.pid, tmp };
  })();
  return { proc, tmp, done };
}

const cpost = (args: string[], options: Parameters<typeof spawnCpost>[1] = {}) => spawnCpost(args, options).done;

/** The operators whose banner was printed and whose container id followed, in order. */
function executed(stdout: string): string[] {
  const sections = stdout.split(/\n_+Executing Operator (\S+?)_+\n/);
  const names: string[] = [];
  for (let i = 1; i < sections.length; i += 2) {
    if (/Running operator \.\.\.\n(?:.*\n)*?The container id is: [0-9a-f]{64}\n/.test(sections[i + 1]!)) names.push(sections[i]!);
  }
  return names;
}

/** The one work dir a --keep-outputs run left, from the path it printed. */
function keptDir(run: Finished): string {
  const m = /Operator outputs are kept in (\S+)/.exec(run.stdout);
  expect(m).not.toBeNull();
  expect(m![1]!.startsWith(run.tmp)).toBe(true);
  return m![1]!;
}

describe("the example pipeline", () => {
  dockerTest("runs end to end from the compiled binary: each output reaches its consumers", async () => {
    const binary = await compiledBinary();
    const recording = join(scratch(), "run.msgpack");
    const run = await cpost(["run", EXAMPLE, INPUT, "--keep-outputs", "--sinks", "table", "--record", recording], { binary });
    expect(run.stderr).not.toContain("cpost:");
    expect(run.code).toBe(0);
    expect(executed(run.stdout)).toEqual(["reader", "segment", "measure", "writer", "audit"]);

    const work = keptDir(run);
    const inputs = readdirSync(INPUT).sort();
    const all = inputs.map((f) => readFileSync(join(INPUT, f), "utf8")).join("");
    const words = all.split(/\s+/).filter(Boolean).length;
    const read = (...p: string[]) => readFileSync(join(work, ...p), "utf8");
    expect(read("reader", "output-0", "all.txt")).toBe(all);
    expect(read("reader", "output-0", "lines.txt").trim()).toBe(String(all.split("\n").length - 1));
    expect(read("segment", "named-masks", "upper.txt")).toBe(all.toUpperCase());
    expect(read("measure", "named-stats", "words.txt").trim()).toBe(String(words));
    // The fan-in: writer read both workers' named outputs.
    expect(read("writer", "output-0", "report.txt")).toBe(`${all.toUpperCase()}${words}\n`);
    expect(read("audit", "output-0", "listing.txt")).toBe(`${inputs.join("\n")}\n`);
    rmSync(work, { recursive: true });
    expect(await leftovers(run)).toEqual([]);

    // --record: the whole run, replayable.
    const recorded = readRecording(recording);
    expect(recorded.complete).toBe(true);
    expect(recorded.run.sinks).toEqual(["table", "msgpack"]);
    expect(recorded.run.host.engine).toBe("docker");
    expect(recorded.operators.map((o) => `${o.operator?.name} ${o.result?.status}`)).toEqual(["reader", "segment", "measure", "writer", "audit"].map((n) => `${n} succeeded`));
    expect(recorded.operators[1]!.batches.length).toBeGreaterThan(0);
  });

  dockerTest("the CPOST-compatible form prints the original's console lines and cleans up", async () => {
    const metrics = join(scratch(), "metrics");
    const run = await cpost([EXAMPLE, INPUT, "--metrics_dir", metrics]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`\n${centre("Executing Operator segment")}\nRunning operator \\.\\.\\.\nThe container id is: [0-9a-f]{64}\n`));
    expect(executed(run.stdout)).toEqual(["reader", "segment", "measure", "writer", "audit"]);
    // Every container id printed was a real container of this run, and is gone now.
    expect(await leftovers(run)).toEqual([]);
    for (const operator of ["reader", "segment", "measure", "writer", "audit"]) {
      expect(run.stdout).toContain(`Results are stored in ${join(metrics, `${operator}_final_result.csv`)}`);
      expect(run.stdout).toContain(centre(`Operator ${operator} Summary`));
    }
    // segment spins a core for 1.5 s and touches 64 MiB: its CSV has the rows, the CPU and the memory of that.
    const rows = readFileSync(join(metrics, "segment_final_result.csv"), "utf8").trim().split("\r\n");
    expect(rows[0]).toStartWith("timestamp,cpu_percent,memory");
    expect(rows.length).toBeGreaterThan(20);
    const column = (i: number) => rows.slice(1).map((r) => Number(r.split(",")[i]));
    expect(Math.max(...column(1))).toBeGreaterThan(5);
    expect(Math.max(...column(2))).toBeGreaterThan(60);
  });
});

describe("operator failures", () => {
  // first -> broken (exits 3) -> after-broken; independent reads only the input.
  const failing = () =>
    pipelineFile(
      [
        op("first", "echo one > /out/one.txt", "    input: [{path: /in}]\n    output: [{path: /out}]\n"),
        op("broken", "echo going down; exit 3", "    input: [{from: first, path: /in}]\n    output: [{path: /out}]\n"),
        op("after-broken", "cat /in/* > /out/copy.txt", "    input: [{from: broken, path: /in}]\n    output: [{path: /out}]\n"),
        op("independent", "ls /in > /out/listing.txt", "    input: [{path: /in}]\n    output: [{path: /out}]\n"),
      ].join(""),
    );

  dockerTest("--force cont: the rest runs, downstream of the failure is skipped, status 1", async () => {
    const run = await cpost(["run", failing(), INPUT, "--force", "cont", "--keep-outputs", "-v"]);
    expect(run.code).toBe(1);
    expect(executed(run.stdout)).toEqual(["first", "broken", "independent"]);
    expect(run.stdout).toContain("| going down\n");
    expect(run.stdout).toContain("Operator failed with exitcode is: 3\n");
    expect(run.stdout).toContain("Operator broken failed with exitcode 3\n");
    expect(run.stdout).toContain("Operator after-broken skipped: its input from broken (failed) is missing\n");
    const work = keptDir(run);
    expect(readFileSync(join(work, "independent", "output-0", "listing.txt"), "utf8")).toBe(`${readdirSync(INPUT).sort().join("\n")}\n`);
    expect(existsSync(join(work, "after-broken", "output-0", "copy.txt"))).toBe(false);
    rmSync(work, { recursive: true });
    expect(await leftovers(run)).toEqual([]);
  });

  dockerTest("--force stop: nothing after the failure runs", async () => {
    const run = await cpost(["run", failing(), INPUT, "--force", "stop"]);
    expect(run.code).toBe(1);
    expect(executed(run.stdout)).toEqual(["first", "broken"]);
    expect(run.stdout).toContain("Operator independent not run: the pipeline stopped after broken failed\n");
    expect(await leftovers(run)).toEqual([]);
  });

  dockerTest("--force none without a terminal stops and says why", async () => {
    const run = await cpost([failing(), INPUT]);
    expect(run.code).toBe(1);
    expect(executed(run.stdout)).toEqual(["first", "broken"]);
    expect(run.stderr).toContain("operator broken failed and stdin is not a terminal, so cpost cannot ask whether to continue: stopping");
    expect(await leftovers(run)).toEqual([]);
  });

  dockerTest("--force none on a terminal asks, and 'y' continues", async () => {
    // script(1) gives cpost a real pseudo-terminal; our piped "y" is typed into it.
    const file = failing();
    const line = [BUN, join(REPO, "core/main.ts"), file, INPUT].map((a) => `'${a}'`).join(" ");
    const tmp = scratch();
    const proc = Bun.spawn(["script", "-qfec", line, "/dev/null"], { cwd: REPO, env: { ...process.env, TMPDIR: tmp }, stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    let seen = "";
    const reader = (async () => {
      const decoder = new TextDecoder();
      for await (const bytes of proc.stdout) {
        seen += decoder.decode(bytes);
        if (seen.includes("(y/n): ") && !seen.includes("answered")) {
          seen += "answered";
          proc.stdin.write("y\n");
          proc.stdin.flush();
        }
      }
    })();
    const timer = setTimeout(() => proc.kill("SIGKILL"), 60_000);
    const code = await proc.exited;
    clearTimeout(timer);
    await reader;
    expect(seen).toContain("Would you like to continue execution at the risk of the rest of pipeline failing (y)? If (n), cpost will stop and cleanup. (y/n): ");
    expect(code).toBe(1);
    // What a reader of the terminal sees: progress lines (drawn and cleared in place) and escapes left out.
    const lines = seen.replace(/\x1b\[2K▶[^\r\n]*/g, "").replace(/\x1b\[[0-9;]*[A-Za-z]/g, "").replace(/\r+\n/g, "\n").replace(/\r/g, "");
    expect(executed(lines)).toEqual(["first", "broken", "independent"]);
    expect(readdirSync(tmp).filter((f) => f.startsWith("cpost-"))).toEqual([]);
  });

  dockerTest("a container the engine cannot start fails with the operator and the engine's reason", async () => {
    const file = pipelineFile(`  - name: no-program\n    container: {image: cpost-test/busybox, tag: "1", command: ["no-such-program"]}\n` + op("next", "true"));
    const run = await cpost(["run", file, INPUT, "--force", "cont"]);
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/Operator no-program failed: the engine could not start its container: .*no-such-program.*executable file not found/);
    expect(executed(run.stdout)).toEqual(["next"]);
    expect(await leftovers(run)).toEqual([]);
  });
});

describe("interrupts", () => {
  for (const signals of [["SIGINT"], ["SIGTERM"], ["SIGINT", "SIGINT"]] as const) {
    dockerTest(`${signals.join(" then ")} during a long operator: exit 130 within 2 s, nothing left`, async () => {
      const file = pipelineFile(op("sleeper", "sleep 30") + op("never", "true"));
      const started = spawnCpost(["run", file, INPUT, "--sinks", "table"]);
      const d = await docker();
      const deadline = Date.now() + 30_000;
      // Wait until its container really runs.
      while (!(await d.listContainers([`cpost.pid=${started.proc.pid}`])).some((c) => c.state === "running")) {
        if (Date.now() > deadline) throw new Error("the operator's container never ran");
        await Bun.sleep(50);
      }
      const at = performance.now();
      for (const signal of signals) started.proc.kill(signal);
      const run = await started.done;
      const took = performance.now() - at;
      expect(run.code).toBe(130);
      expect(took).toBeLessThan(2000);
      expect(run.stdout).not.toContain("Executing Operator never");
      expect(await leftovers(run)).toEqual([]);
    });
  }
});

describe("bad input: a clear error, exit 2, nothing left behind", () => {
  const simple = () => pipelineFile(op("only", "true"));

  dockerTest("a missing image that cannot be pulled", async () => {
    const file = pipelineFile(`  - name: ghost\n    container: {image: cpost-test/not-here, tag: "7"}\n`);
    const run = await cpost(["run", file, INPUT]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("image cpost-test/not-here:7 is not on this machine and pulling it failed");
    expect(run.stderr).toContain("docker load");
    expect(run.stdout).not.toContain("Executing Operator");
    expect(await leftovers(run)).toEqual([]);
  });

  dockerTest("an image pull the registry refuses", async () => {
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: () =>
        new Response(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }), {
          status: 401,
          headers: { "Docker-Distribution-API-Version": "registry/2.0", "Content-Type": "application/json", "WWW-Authenticate": 'Basic realm="test"' },
        }),
    });
    try {
      const image = `127.0.0.1:${server.port}/private/op`;
      const file = pipelineFile(`  - name: private\n    container: {image: ${image}, tag: "1"}\n`);
      const run = await cpost(["run", file, INPUT], { env: { DOCKER_CONFIG: join(temp, "no-docker-config") } });
      expect(run.code).toBe(2);
      expect(run.stderr).toContain(`image ${image}:1 is not on this machine and pulling it failed`);
      expect(run.stderr).toContain("docker login");
      expect(await leftovers(run)).toEqual([]);
    } finally {
      server.stop(true);
    }
  });

  test("an unreachable engine socket", async () => {
    const socket = join(temp, "no-engine.sock");
    const run = await cpost(["run", simple(), INPUT], { env: { DOCKER_HOST: `unix://${socket}` } });
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(`cannot reach the container engine at unix://${socket} (no such socket)`);
    expect(run.stderr).toContain("DOCKER_HOST=unix://");
    expect(readdirSync(run.tmp)).toEqual([]);
  });

  test("a metrics dir that cannot be created or written", async () => {
    const file = join(scratch(), "a-file");
    writeFileSync(file, "");
    const under = await cpost([simple(), INPUT, "--metrics_dir", join(file, "metrics")]);
    expect(under.code).toBe(2);
    expect(under.stderr).toContain(`--metrics_dir ${join(file, "metrics")}: cannot create it (ENOTDIR)`);
    // Root may write anywhere, but not into a read-only file system.
    const readOnly = await cpost(["run", simple(), INPUT, "--metrics_dir", "/proc/cpost-metrics"]);
    expect(readOnly.code).toBe(2);
    expect(readOnly.stderr).toContain("--metrics_dir /proc/cpost-metrics: cannot create it");
    expect(existsSync("/proc/cpost-metrics")).toBe(false);
    expect(readdirSync(under.tmp)).toEqual([]);
  });

  test("an input dir that does not exist", async () => {
    const missing = join(temp, "no-input");
    const run = await cpost([simple(), missing]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(`${missing}: cannot read input directory: it does not exist`);
  });

  test("--models_dir missing when the pipeline uses Triton", async () => {
    const file = pipelineFile(op("infer", "true", "    models: [spleen]\n"));
    const run = await cpost([file, INPUT]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("--models_dir is required: operator infer uses Triton (models: spleen)");
    const models = scratch();
    const noModel = await cpost([file, INPUT, "--models_dir", models]);
    expect(noModel.code).toBe(2);
    expect(noModel.stderr).toContain(`model \`spleen\` is missing in the models directory ${models}`);
  });

  test("bad flags are usage errors", async () => {
    for (const args of [["run", simple(), INPUT, "--interval", "0ms"], ["run", simple(), INPUT, "--force", "maybe"], [simple(), INPUT, "--es-url", "http://x"], ["run", simple(), INPUT, "--es-url", "http://x"]]) {
      const run = await cpost(args);
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(/^cpost: /m);
    }
  });
});

describe("Triton and cpost_net", () => {
  /** A models dir whose files busybox httpd serves as a Triton stand-in would: /v2/health/ready answers 200. */
  function modelsDir(): string {
    const dir = scratch();
    mkdirSync(join(dir, "m1"), { recursive: true });
    writeFileSync(join(dir, "m1", "config.pbtxt"), 'name: "m1"\n');
    mkdirSync(join(dir, "v2", "health"), { recursive: true });
    writeFileSync(join(dir, "v2", "health", "ready"), "ready\n");
    return dir;
  }
  const tritonPipeline = () =>
    pipelineFile(
      op("infer", "busybox wget -qO /out/ready http://$NVIDIA_TRITON_HTTPURI/v2/health/ready && env | grep -E 'TRITON|TRTIS|NOSYNC' | sort > /out/env", "    output: [{path: /out}]\n    models: [m1]\n    services:\n      - name: trtis\n        container: {image: cpost-test/busybox, tag: \"1\", command: [busybox, httpd, -f, -p, \"8000\", -h, /models]}\n") +
        op("plain", "true"),
    );

  dockerTest("a Triton stand-in on cpost_net: the operator reaches it through the four variables; all removed after", async () => {
    // --record too: its directory check once asked again for --models_dir, without it
    const recording = join(scratch(), "triton.msgpack");
    const run = await cpost(["run", tritonPipeline(), INPUT, "--models_dir", modelsDir(), "--keep-outputs", "--record", recording]);
    expect(run.stderr).not.toContain("cpost:");
    expect(run.code).toBe(0);
    const recorded = readRecording(recording);
    expect(recorded.complete).toBe(true);
    expect(recorded.operators).toHaveLength(2);
    const work = keptDir(run);
    expect(readFileSync(join(work, "infer", "output-0", "ready"), "utf8")).toBe("ready\n");
    const env = readFileSync(join(work, "infer", "output-0", "env"), "utf8");
    const ip = /NVIDIA_TRITON_HTTPURI=(\d+\.\d+\.\d+\.\d+):8000/.exec(env)?.[1];
    expect(ip).toBeDefined();
    expect(env).toBe(`CLARA_TRITON_URI=${ip}:8000\nNVIDIA_CLARA_NOSYNCLOCK=1\nNVIDIA_CLARA_TRTISURI=${ip}:8000\nNVIDIA_TRITON_GRPCURI=${ip}:8001\nNVIDIA_TRITON_HTTPURI=${ip}:8000\n`);
    rmSync(work, { recursive: true });
    expect(await leftovers(run)).toEqual([]);
    expect(await (await docker()).findNetwork(TRITON_NETWORK)).toBeUndefined();
  });

  dockerTest("cpost_net made by someone else: a clear error saying how to remove it, nothing started", async () => {
    const d = await docker();
    const id = await d.createNetwork(TRITON_NETWORK, { "cpost.test.owner": `runner-test-${process.pid}` });
    try {
      const run = await cpost(["run", tritonPipeline(), INPUT, "--models_dir", modelsDir()]);
      expect(run.code).toBe(2);
      expect(run.stderr).toContain("network cpost_net already exists and was not created by cpost");
      expect(run.stderr).toContain("docker network rm cpost_net");
      expect(await leftovers(run)).toEqual([]);
    } finally {
      await d.removeNetwork(id);
    }
  });

  dockerTest("cpost_net of another live cpost run is reused and left to it", async () => {
    const d = await docker();
    // Labelled as a live run on this host: this test process stands for it.
    const id = await d.createNetwork(TRITON_NETWORK, { "cpost.run": "other-run", "cpost.pid": String(process.pid), "cpost.host": hostname() });
    try {
      const run = await cpost(["run", tritonPipeline(), INPUT, "--models_dir", modelsDir()]);
      expect(run.code).toBe(0);
      expect((await d.findNetwork(TRITON_NETWORK))?.id).toBe(id);
      expect(await leftovers(run)).toEqual([]);
    } finally {
      await d.removeNetwork(id);
    }
  });

  dockerTest("leftovers of a dead run on this host are removed at the start, and said so", async () => {
    const d = await docker();
    const gone = Bun.spawn(["true"]);
    await gone.exited;
    const labels = { "cpost.run": "dead-run", "cpost.pid": String(gone.pid), "cpost.host": hostname(), "cpost.test.owner": `runner-test-${process.pid}` };
    const stale = await d.createContainer({ image: TEST_IMAGE, cmd: ["sleep", "30"], env: {}, labels, mounts: [] });
    await d.startContainer(stale);
    const run = await cpost(["run", pipelineFile(op("only", "true")), INPUT]);
    expect(run.code).toBe(0);
    expect(run.stderr).toContain("removing 1 container(s) and 0 network(s) left by ended cpost run(s) dead-run");
    expect((await d.listContainers(["cpost.run=dead-run"])).length).toBe(0);
  });
});

describe("in process", () => {
  const base = { inputDir: INPUT, intervalMs: 10, verbose: false, keepOutputs: false, quiet: true };

  dockerTest("sinks hear every hook in order, batches inside their operator; a throwing sink is reported once and the others go on", async () => {
    const { pipeline } = loadPipeline(
      pipelineFile(op("busy", "cpost-workload cpu 1 0.6", "    output: [{path: /out}]\n") + op("fails", "exit 3", "    output: [{path: /out}]\n") + op("downstream", "true", "    input: [{from: fails, path: /in}]\n")),
    );
    const events: string[] = [];
    let current = "";
    const recorder: Sink = {
      name: "recorder",
      start: (run) => void events.push(`start ${run.pipeline.name} ${run.collectors.join(",")}`),
      operatorStart: (operator) => void events.push(`operatorStart ${(current = operator.name)}`),
      // Slow on purpose: the sampler must not wait for it, and nothing may overtake it.
      write: async (batch) => {
        await Bun.sleep(2);
        events.push(batch.operator === current ? "write" : `write of ${batch.operator} during ${current}`);
      },
      operatorDone: (result, summary) => void events.push(`operatorDone ${result.operator} ${result.status} ${result.exitCode} ${summary.samples > 0 ? "sampled" : "unsampled"}`),
      end: (result) => void events.push(`end interrupted=${result.interrupted} ${result.results.map((r) => r.status).join(",")}`),
    };
    const thrower: Sink = { name: "thrower", start() {}, write: () => Promise.reject(new Error("disk full")), operatorDone() {}, end() {} };
    const warnings: string[] = [];
    const result = await runPipeline({ ...base, pipeline, collectors: await loadCollectors(["cgroup"]), sinks: [thrower, recorder], force: "cont", warn: (m) => warnings.push(m) });

    expect(events.filter((e) => e !== "write")).toEqual([
      "start runner-test cgroup",
      "operatorStart busy",
      "operatorDone busy succeeded 0 sampled",
      "operatorStart fails",
      `operatorDone fails failed 3 ${events.includes("operatorDone fails failed 3 sampled") ? "sampled" : "unsampled"}`,
      "operatorStart downstream",
      "operatorDone downstream skipped null unsampled",
      "end interrupted=false succeeded,failed,skipped",
    ]);
    expect(events.filter((e) => e === "write").length).toBeGreaterThan(1);
    expect(warnings.filter((w) => w.includes("disk full"))).toEqual(["thrower: write failed: disk full"]);
    const busy = result.summaries.find((s) => s.operator === "busy")!;
    // One thread spinning for 0.6 s: up to one core at its peak (less on this shared, often busy machine, but never idle).
    expect(busy.cpuPercent.max).toBeGreaterThan(5);
    expect(busy.cpuPercent.max).toBeLessThan(250);
    expect(result.results.map((r) => r.reason ?? "")).toEqual(["", "exit code 3", "skipped: its input from fails (failed) is missing"]);
    expect(result.interval.target).toBe(10);
  });

  dockerTest("a container not created and started in time fails as the original's -15 case; the late container is removed", async () => {
    const { pipeline } = loadPipeline(pipelineFile(op("slow-start", "true") + op("then", "true")));
    const out: string[] = [];
    const result = await runPipeline({ ...base, quiet: false, out: { write: (t: string) => out.push(t) }, pipeline, collectors: [], sinks: [], force: "cont", startTimeoutMs: 1 });
    expect(result.results[0]).toMatchObject({ operator: "slow-start", status: "failed", exitCode: null });
    expect(result.results[0]!.reason).toBe("its container could not be created and started within 0.001 s (the original CPOST's exit code -15)");
    expect(out.join("")).toContain("Operator slow-start failed: its container could not be created and started within 0.001 s");
    expect(await (await docker()).listContainers([`cpost.pid=${process.pid}`])).toEqual([]);
  });
});

describe("flags", () => {
  test("--interval", () => {
    expect(parseInterval("5ms")).toBe(5);
    expect(parseInterval("1s")).toBe(1000);
    expect(parseInterval("10")).toBe(10);
    expect(parseInterval("0.5s")).toBe(500);
    expect(() => parseInterval("0")).toThrow(CpostError);
    expect(() => parseInterval("fast")).toThrow("not an interval");
  });

  test("--force, bare or with a value, and pass-through sink options", () => {
    expect(parseForce(undefined)).toBe("none");
    expect(() => parseForce("maybe")).toThrow("expected none, cont or stop");
    const args: FlagsDef = {
      metrics_dir: { type: "string" },
      sinks: { type: "string" },
      verbose: { type: "boolean", alias: "v" },
      force: { type: "string", optionalValue: ["none", "cont", "stop"] },
    };
    const parseFlags = (raw: string[], options: { sinkPrefixes: string[] }) => parseArgs(raw, args, options);
    const spec = { sinkPrefixes: ["es", "elasticsearch", "csv"] };
    expect(parseFlags(["p.yaml", "--force", "--metrics-dir=m", "in", "-v"], spec)).toEqual({ positionals: ["p.yaml", "in"], flags: { force: true, "metrics-dir": "m", verbose: true }, sinkOptions: {} });
    expect(parseFlags(["--force", "stop", "p.yaml", "in", "--es-url", "http://127.0.0.1:9200"], spec)).toEqual({
      positionals: ["p.yaml", "in"],
      flags: { force: "stop" },
      // as typed: the sink reads it under its name or alias (core/sinks/definition.ts)
      sinkOptions: { "es-url": "http://127.0.0.1:9200" },
    });
    expect(() => parseFlags(["--bogus"], spec)).toThrow("unknown option --bogus");
    expect(() => parseFlags(["--sinks"], spec)).toThrow("--sinks needs a value");
  });

  test("banners are centred in 60 underscores as Python's {:_^60} does", () => {
    expect(centre("Executing Operator dicom-reader")).toBe("______________Executing Operator dicom-reader_______________");
    expect(centre("Executing Operator register-volume-images-for-rendering")).toBe("__Executing Operator register-volume-images-for-rendering___");
    expect(centre("x".repeat(70))).toBe("x".repeat(70));
  });
});
