/**
 * Operator output (issue 23), on the real engine: streamed live with -v,
 * kept in <metrics_dir>/<operator>.log, the last lines of a failure printed
 * without a metrics dir, and 300 MB of output through the compiled binary in
 * bounded memory (peak RSS from /proc, with and without -v).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { createReadStream, existsSync, linkSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { defineLogDemuxer, type LogChunk } from "../core/engine/docker.ts";
import { defineOperatorOutput, FAILURE_TAIL_LINES, LOG_IDLE_AFTER_EXIT_MS } from "../core/run/operator-log.ts";
import { readRecording } from "../core/sinks/recording.ts";
import { compiledBinary, defineTestScratch, docker, dockerTest, leftovers, TEST_IMAGE, until } from "./support.ts";

const { temp, scratch, pids, cleanup } = defineTestScratch("operator-output", [process.pid]);
const LABEL = "cpost.test.owner";
const MINE = `operator-output-${process.pid}`;

afterAll(cleanup);

/** Peak RSS the bounded-output runs must stay under, 300 MB of operator output or not (measured here: about 100 MB either way). */
const RSS_BOUND_MB = 200;
const BIG_LINES = 300_000;
/** 300,000 lines of 1006 bytes: 301.8 MB on stdout. */
const BIG_SCRIPT = `busybox awk 'BEGIN{s=sprintf("%0990d",0); for(i=0;i<${BIG_LINES};i++) printf "line %09d %s\\n", i, s}'`;

function pipelineFile(dir: string, operators: string): string {
  const file = join(dir, "pipeline.yaml");
  writeFileSync(file, `api-version: 0.4.0\nname: operator-output\noperators:\n${operators}`);
  return file;
}

function op(name: string, script: string, extra = "    input: [{path: /in}]\n"): string {
  return `  - name: ${name}\n    container: {image: cpost-test/busybox, tag: "1", command: ["sh", "-c", ${JSON.stringify(script)}]}\n${extra}`;
}

/** An operator that says it waits, then waits until the test creates `go` in the input dir: the run is still on while the test looks. */
const GATE = op("gate", "echo gate waiting; echo gate on stderr >&2; until [ -e /in/go ]; do sleep 0.05; done; echo gate passed");

let ownBinary: Promise<string> | undefined;
/** The compiled binary, linked into this file's temp dir: a test process building other sources removes the cached one. */
function binary(): Promise<string> {
  ownBinary ??= compiledBinary().then((bin) => {
    const mine = join(temp, "cpost");
    linkSync(bin, mine);
    return mine;
  });
  return ownBinary;
}

/** Starts the compiled binary, handing each stdout line to `onLine` as it comes (nothing accumulated). */
async function startBinary(args: string[], onLine: (line: string) => void) {
  const bin = await binary();
  const proc = Bun.spawn([bin, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, TMPDIR: scratch() } });
  pids.push(proc.pid);
  const timer = setTimeout(() => proc.kill("SIGKILL"), 200_000);
  const stdout = (async () => {
    const decoder = new TextDecoder();
    let rest = "";
    for await (const bytes of proc.stdout) {
      rest += decoder.decode(bytes, { stream: true });
      let nl: number;
      let from = 0;
      while ((nl = rest.indexOf("\n", from)) >= 0) {
        onLine(rest.slice(from, nl));
        from = nl + 1;
      }
      rest = rest.slice(from);
    }
    if (rest) onLine(rest);
  })();
  const done = Promise.all([stdout, new Response(proc.stderr).text(), proc.exited]).then(([, stderr, code]) => {
    clearTimeout(timer);
    return { code, stderr, pid: proc.pid, tmp: "" };
  });
  return { pid: proc.pid, done };
}

/** Peak resident memory of a live process, MB, from /proc (VmHWM). */
function peakRssMb(pid: number): number {
  const kb = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  if (kb === undefined) throw new Error(`no VmHWM for ${pid}`);
  return Number(kb) / 1024;
}

/** Checks a .log holds big's lines, every one, in order, as whole stdout records; returns the count. */
async function checkBigLog(file: string): Promise<number> {
  let next = 0;
  const record = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z stdout F line (\d{9}) 0{990}$/;
  for await (const line of createInterface({ input: createReadStream(file), crlfDelay: Infinity })) {
    const n = record.exec(line)?.[1];
    if (n === undefined) throw new Error(`unexpected record in ${file} after line ${next}: ${line.slice(0, 120)}`);
    if (Number(n) !== next) throw new Error(`${file}: line ${n} where ${next} was due`);
    next++;
  }
  return next;
}

describe("300 MB of operator output through the compiled binary", () => {
  for (const verbose of [false, true]) {
    dockerTest(`${verbose ? "with" : "without"} -v: peak RSS under ${RSS_BOUND_MB} MB, the .log keeps every line in order${verbose ? ", shown live in order" : ""}`, async () => {
      const dir = scratch();
      const input = join(dir, "in");
      const metrics = join(dir, "metrics");
      Bun.spawnSync(["mkdir", "-p", input]);
      const pipeline = pipelineFile(dir, op("big", BIG_SCRIPT) + GATE);
      let shownBig = 0;
      let outOfOrder = "";
      const other: string[] = [];
      const run = await startBinary(["run", pipeline, input, "--metrics_dir", metrics, "--record", join(dir, "run.msgpack"), "--sinks", "csv", ...(verbose ? ["-v"] : [])], (line) => {
        const n = /^\| line (\d{9}) 0{990}$/.exec(line)?.[1];
        if (n === undefined) return void other.push(line);
        if (Number(n) !== shownBig && !outOfOrder) outOfOrder = `line ${n} shown where ${shownBig} was due`;
        shownBig++;
      });
      // The gate runs (and cannot end) until the test says so: every byte of big has passed through cpost by now.
      if (verbose) await until("the gate's first line on cpost's stdout", () => (other.includes("| gate waiting") ? true : undefined), 150_000);
      else await until("the gate's first line in gate.log", () => (existsSync(join(metrics, "gate.log")) && readFileSync(join(metrics, "gate.log"), "utf8").includes(" stdout F gate waiting\n") ? true : undefined), 150_000);
      const peak = peakRssMb(run.pid);
      console.log(`peak RSS of cpost ${verbose ? "with" : "without"} -v after 301.8 MB of output: ${peak.toFixed(1)} MB`);
      writeFileSync(join(input, "go"), "");
      const finished = await run.done;
      expect(finished.stderr).toBe("");
      expect(finished.code).toBe(0);
      expect(peak).toBeLessThan(RSS_BOUND_MB);
      if (verbose) {
        expect(outOfOrder).toBe("");
        expect(shownBig).toBe(BIG_LINES);
        expect(other).toContain("| gate passed");
      } else {
        expect(shownBig).toBe(0);
        expect(other.some((line) => line.startsWith("| "))).toBe(false);
      }
      expect(await checkBigLog(join(metrics, "big.log"))).toBe(BIG_LINES);
      const gateLog = readFileSync(join(metrics, "gate.log"), "utf8");
      expect(gateLog).toMatch(/^\S+Z stdout F gate waiting\n/m);
      expect(gateLog).toMatch(/^\S+Z stderr F gate on stderr\n/m);
      expect(gateLog).toMatch(/^\S+Z stdout F gate passed\n/m);
      const recording = readRecording(join(dir, "run.msgpack"));
      expect(recording.operators.map((o) => [o.result?.operator, o.result?.logFile, o.result?.logCut])).toEqual([
        ["big", join(metrics, "big.log"), undefined],
        ["gate", join(metrics, "gate.log"), undefined],
      ]);
      rmSync(dir, { recursive: true, force: true });
      expect(await leftovers({ pid: run.pid, tmp: temp })).toEqual([]);
    }, 240_000);
  }
});

describe("a failed operator's output", () => {
  const failing = () => op("broken", "i=1; while [ $i -le 30 ]; do echo \"out $i\"; i=$((i+1)); done; sleep 0.3; echo 'why: bad input' >&2; exit 3");

  dockerTest(`without --metrics_dir: its last ${FAILURE_TAIL_LINES} lines are printed with its failure`, async () => {
    const dir = scratch();
    const lines: string[] = [];
    const run = await startBinary(["run", pipelineFile(dir, failing()), dir, "--force", "stop"], (line) => lines.push(line));
    const finished = await run.done;
    expect(finished.code).toBe(1);
    const at = lines.indexOf("Operator failed with exitcode is: 3");
    expect(at).toBeGreaterThan(0);
    expect(lines[at + 1]).toBe(`Last ${FAILURE_TAIL_LINES} lines of the output of operator broken:`);
    const tail = lines.slice(at + 2, at + 2 + FAILURE_TAIL_LINES);
    // both streams in the engine's order (stderr's line comes 0.3 s after the last of stdout's)
    expect(tail).toEqual([...Array.from({ length: 19 }, (_, i) => `| out ${i + 12}`), "| why: bad input"]);
    expect(lines).not.toContain("| out 11");
  });

  dockerTest("with --metrics_dir: all of it in <operator>.log, the last lines printed naming the file", async () => {
    const dir = scratch();
    const metrics = join(dir, "m");
    const lines: string[] = [];
    const run = await startBinary(["run", pipelineFile(dir, failing()), dir, "--force", "stop", "--metrics_dir", metrics], (line) => lines.push(line));
    expect((await run.done).code).toBe(1);
    const log = join(metrics, "broken.log");
    expect(lines).toContain(`Last ${FAILURE_TAIL_LINES} lines of the output of operator broken (all of it in ${log}):`);
    const records = readFileSync(log, "utf8").trimEnd().split("\n");
    expect(records.filter((r) => / stdout F /.test(r)).map((r) => r.replace(/^\S+ stdout F /, ""))).toEqual(Array.from({ length: 30 }, (_, i) => `out ${i + 1}`));
    expect(records.filter((r) => / stderr F /.test(r)).map((r) => r.replace(/^\S+ stderr F /, ""))).toEqual(["why: bad input"]);
    // the engine's timestamps, never going back
    const times = records.map((r) => r.split(" ")[0]!);
    expect([...times].sort()).toEqual(times);
  });

  dockerTest("-v shows it live instead, prefixed `| ` when stdout is not a terminal; --quiet shows nothing", async () => {
    const dir = scratch();
    const lines: string[] = [];
    const verbose = await startBinary(["run", pipelineFile(dir, failing()), dir, "--force", "stop", "-v"], (line) => lines.push(line));
    expect((await verbose.done).code).toBe(1);
    expect(lines.filter((l) => l.startsWith("| out "))).toHaveLength(30);
    expect(lines.some((l) => l.startsWith("Last "))).toBe(false);
    const quiet: string[] = [];
    const q = await startBinary(["run", pipelineFile(dir, failing()), dir, "--force", "stop", "--quiet", "-v"], (line) => quiet.push(line));
    expect((await q.done).code).toBe(1);
    expect(quiet.filter((l) => /out \d|bad input|^Last /.test(l))).toEqual([]);
  });
});

/** A Unix socket that passes everything to the real engine and notes each request line (method and path). */
function engineProxy(path: string) {
  const requests: string[] = [];
  type Side = { peer?: Bun.Socket<Side>; backlog: Uint8Array[] };
  const send = (to: Bun.Socket<Side> | undefined, bytes: Uint8Array, self: Side) => {
    if (!to || self.backlog.length > 0) return void self.backlog.push(bytes.slice());
    const n = to.write(bytes);
    if (n < bytes.length) self.backlog.push(bytes.slice(n));
  };
  const flush = (from: Side, to: Bun.Socket<Side>) => {
    while (from.backlog.length > 0) {
      const bytes = from.backlog[0]!;
      const n = to.write(bytes);
      if (n < bytes.length) return void (from.backlog[0] = bytes.slice(n));
      from.backlog.shift();
    }
  };
  const server = Bun.listen<Side>({
    unix: path,
    socket: {
      async open(client) {
        client.data = { backlog: [] };
        const upstream = await Bun.connect<Side>({
          unix: "/var/run/docker.sock",
          data: { peer: client, backlog: [] },
          socket: {
            data: (s, bytes) => send(client, bytes, s.data),
            drain: (s) => flush(s.data, client),
            close: () => void client.end(),
            error: () => void client.end(),
          },
        });
        client.data.peer = upstream;
        flush(client.data, upstream);
      },
      data(client, bytes) {
        for (const m of Buffer.from(bytes).toString("latin1").matchAll(/^(GET|POST|DELETE|HEAD|PUT) (\S+) HTTP\/1\.1\r$/gm)) requests.push(`${m[1]} ${m[2]}`);
        send(client.data.peer, bytes, client.data);
      },
      drain: (client) => void (client.data.peer && flush(client.data.peer.data, client)),
      close: (client) => void client.data.peer?.end(),
      error: (client) => void client.data.peer?.end(),
    },
  });
  return { requests, stop: () => server.stop(true) };
}

dockerTest("--quiet without --metrics_dir never asks the engine for output; with --metrics_dir it reads it once, to keep it", async () => {
  const dir = scratch();
  const socket = join(dir, "engine.sock");
  const proxy = engineProxy(socket);
  try {
    const pipeline = pipelineFile(dir, op("chatty", "echo hello; echo oops >&2; exit 2"));
    const bin = await binary();
    const env = { ...process.env, DOCKER_HOST: `unix://${socket}`, TMPDIR: scratch() };
    // not spawnSync: the proxy serves from this process's event loop
    const run = async (args: string[]) => {
      const proc = Bun.spawn([bin, "run", pipeline, dir, ...args], { env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
      const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
      return { stdout, stderr, code };
    };
    const quiet = await run(["--quiet", "-v", "--force", "stop"]);
    expect(quiet.code).toBe(1);
    expect(quiet.stdout).not.toMatch(/hello|oops/);
    expect(proxy.requests.some((r) => r.startsWith("POST") && r.includes("/containers/create"))).toBe(true);
    expect(proxy.requests.filter((r) => r.includes("/logs"))).toEqual([]);
    const metrics = join(dir, "m");
    const kept = await run(["--quiet", "--force", "stop", "--metrics_dir", metrics]);
    expect(kept.code).toBe(1);
    expect(kept.stdout).not.toMatch(/hello|oops/);
    expect(proxy.requests.filter((r) => r.includes("/logs")).map((r) => new URL(r.split(" ")[1]!, "http://d").searchParams.get("follow"))).toEqual(["1"]);
    expect(readFileSync(join(metrics, "chatty.log"), "utf8")).toMatch(/^\S+Z (stdout F hello\n\S+Z stderr F oops|stderr F oops\n\S+Z stdout F hello)\n$/);
  } finally {
    proxy.stop();
  }
});

describe("the log module on the engine", () => {
  async function container(script: string): Promise<string> {
    const d = await docker();
    const id = await d.createContainer({ image: TEST_IMAGE, cmd: ["sh", "-c", script], env: {}, labels: { [LABEL]: MINE }, mounts: [] });
    await d.startContainer(id);
    return id;
  }
  afterAll(async () => {
    const d = await docker();
    for (const c of await d.listContainers([`${LABEL}=${MINE}`])) await d.removeContainer(c.id, { force: true });
  });

  dockerTest("a log past its limit is cut with a marker, and the run is told", async () => {
    const d = await docker();
    const metrics = scratch();
    const warnings: string[] = [];
    const output = defineOperatorOutput({ engine: d, metricsDir: metrics, live: false, quiet: false, out: { write: () => true }, operators: ["chatty"], warn: (m) => warnings.push(m), limitBytes: 4096 });
    const id = await container("i=0; while [ $i -lt 500 ]; do echo \"line $i\"; i=$((i+1)); done");
    const kept = await output.follow("chatty", id, new AbortController().signal).finish();
    const file = join(metrics, "chatty.log");
    expect(kept).toEqual({ logFile: file, logCut: true });
    const records = readFileSync(file, "utf8").split("\n");
    expect(records.pop()).toBe("");
    const marker = records.pop()!;
    expect(marker).toMatch(/^\S+Z cpost F log cut: it reached cpost's limit of 4 KiB; the rest of chatty's output is not kept$/);
    expect(records.length).toBeGreaterThan(50);
    expect(records.map((r) => r.replace(/^\S+ stdout F /, ""))).toEqual(Array.from({ length: records.length }, (_, i) => `line ${i}`));
    expect(Buffer.byteLength(records.join("\n") + "\n")).toBeLessThanOrEqual(4096);
    expect(warnings).toEqual([`operator chatty wrote more than 4 KiB of output: its log ${file} is cut there (marked in the file)`]);
    await d.removeContainer(id, { force: true });
  });

  dockerTest("a 200 KB line of two-byte characters (cut by the engine every 16 KiB, mid-character) is kept whole under its first timestamp, in 64 Ki-character pieces", async () => {
    const d = await docker();
    const metrics = scratch();
    const shown: string[] = [];
    const output = defineOperatorOutput({ engine: d, metricsDir: metrics, live: true, quiet: false, out: { write: (t: string) => shown.push(t), isTTY: true }, operators: ["wide", "a-longer-name"], warn: (m) => { throw new Error(m); } });
    const id = await container("busybox awk 'BEGIN{for(i=0;i<100000;i++) printf \"\\303\\251\"; printf \"\\n\"}'; echo after >&2");
    await output.follow("wide", id, new AbortController().signal).finish();
    const records = readFileSync(join(metrics, "wide.log"), "utf8").trimEnd().split("\n");
    const stdout = records.filter((r) => / stdout /.test(r));
    expect(stdout.map((r) => r.split(" ").slice(1, 3).join(" "))).toEqual(["stdout P", "stdout F"]);
    expect(new Set(stdout.map((r) => r.split(" ")[0])).size).toBe(1);
    expect(stdout.map((r) => r.split(" ").slice(3).join(" ")).join("")).toBe("é".repeat(100_000));
    expect(records.filter((r) => / stderr /.test(r)).map((r) => r.replace(/^\S+ /, ""))).toEqual(["stderr F after"]);
    // on a terminal, each shown line carries the operator's name, padded as docker compose does
    const text = shown.join("").replaceAll("\r\x1b[2K", "");
    expect(text).toContain(`wide          | ${"é".repeat(65_536)}\nwide          | ${"é".repeat(100_000 - 65_536)}\n`);
    expect(text).toContain("wide          | after\n");
    await d.removeContainer(id, { force: true });
  });
});

test("the demuxer holds no more than one piece: a 200 KB frame split anywhere comes out in ≤ 64 KiB pieces, the rest marked continued", () => {
  const payload = new Uint8Array(200_000).map((_, i) => i % 251);
  const frame = (kind: number, data: Uint8Array) => {
    const out = new Uint8Array(8 + data.length);
    out[0] = kind;
    new DataView(out.buffer).setUint32(4, data.length);
    out.set(data, 8);
    return out;
  };
  const stream = Buffer.concat([frame(1, Buffer.from("small\n")), frame(2, payload), frame(1, Buffer.from("tail\n"))]);
  for (const step of [1, 7, 8, 4096, 65_536, 70_001, stream.length]) {
    const out: LogChunk[] = [];
    const demux = defineLogDemuxer((c) => out.push(c));
    for (let at = 0; at < stream.length; at += step) demux.push(stream.subarray(at, at + step));
    demux.end();
    expect(out[0]).toEqual({ stream: "stdout", data: new Uint8Array(Buffer.from("small\n")) });
    expect(out.at(-1)).toEqual({ stream: "stdout", data: new Uint8Array(Buffer.from("tail\n")) });
    const pieces = out.slice(1, -1);
    expect(pieces.every((p) => p.stream === "stderr" && p.data.length <= 64 * 1024)).toBe(true);
    expect(pieces.map((p) => p.continued ?? false)).toEqual([false, true, true, true]);
    expect(Buffer.concat(pieces.map((p) => p.data)).equals(Buffer.from(payload))).toBe(true);
  }
});

describe("an engine that keeps the log stream open after the container exited", () => {
  // The real engine here cannot be made to do it on cue, so this stand-in serves the engine client's
  // logStream contract (demuxed chunks per read, ending on its signal): one read, then silence.
  test("the run stops reading after LOG_IDLE_AFTER_EXIT_MS of silence past the exit, keeps what came, and says so", async () => {
    const metrics = scratch();
    const warnings: string[] = [];
    const stalled = {
      async *logStream(_id: string, options: { signal?: AbortSignal } = {}): AsyncIterable<LogChunk[]> {
        yield [{ stream: "stdout", data: new TextEncoder().encode("2026-12-04T10:00:00.000000000Z last words\n") }];
        await new Promise((_, reject) => options.signal?.addEventListener("abort", () => reject(options.signal!.reason)));
      },
    };
    const output = defineOperatorOutput({ engine: stalled as unknown as Parameters<typeof defineOperatorOutput>[0]["engine"], metricsDir: metrics, live: false, quiet: false, out: { write: () => true }, operators: ["quiet"], warn: (m) => warnings.push(m) });
    const followed = output.follow("quiet", "0".repeat(64), new AbortController().signal);
    const started = performance.now();
    const kept = await followed.finish();
    const waitedMs = performance.now() - started;
    expect(waitedMs).toBeGreaterThanOrEqual(LOG_IDLE_AFTER_EXIT_MS);
    expect(kept).toEqual({ logFile: join(metrics, "quiet.log") });
    expect(readFileSync(join(metrics, "quiet.log"), "utf8")).toContain("stdout F last words\n");
    expect(warnings).toEqual([`the engine kept operator quiet's output stream open after it exited; stopped reading after ${LOG_IDLE_AFTER_EXIT_MS / 1000} s of silence`]);
  }, 30_000);
});
