/**
 * Live runs into the ES-protocol test server: a real pipeline on the real
 * Docker engine, sampled by cpost, with `--record` saying which samples were
 * taken. Every one of them arrives exactly once, across an outage of
 * Elasticsearch in the middle of the run and across a cpost restart with a
 * non-empty spool (the second run from the compiled binary).
 */
import { afterAll, expect } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readRecording } from "../core/sinks/recording.ts";
import { sampleKey, spoolFiles, startEsServer, storedSamples, type EsTestServer } from "./es-server.ts";
import { BUN, compiledBinary, defineTestScratch, dockerTest, REPO, until } from "./support.ts";

const { scratch, pids, cleanup } = defineTestScratch("es-live");
const servers: EsTestServer[] = [];
afterAll(async () => {
  for (const s of servers) s.close();
  await cleanup();
});

/** A one-operator pipeline that keeps a core busy for `seconds`, and an input dir. */
function pipeline(seconds: number): { file: string; input: string } {
  const dir = scratch();
  const file = join(dir, "pipeline.yaml");
  writeFileSync(file, `api-version: 0.4.0\nname: es-live\noperators:\n  - name: busy\n    container: {image: cpost-test/busybox, tag: "1", command: ["cpost-workload", "cpu", "1", "${seconds}"]}\n    input: [{path: /input}]\n`);
  mkdirSync(join(dir, "input"));
  writeFileSync(join(dir, "input", "x"), "x\n");
  return { file, input: join(dir, "input") };
}

/** Starts `cpost run … --sinks es,table --record …` against `server`; resolves when it exits. */
function runCpost(server: EsTestServer, spool: string, seconds: number, binary?: string) {
  const { file, input } = pipeline(seconds);
  const recording = join(scratch(), "run.msgpack");
  const args = ["run", file, input, "--interval", "5ms", "--sinks", "table,es", "--record", recording,
    "--es-url", server.url, "--es-spool-dir", spool, "--es-flush", "100ms", "--es-backoff-max", "200ms"];
  const proc = Bun.spawn(binary ? [binary, ...args] : [BUN, join(REPO, "core/main.ts"), ...args], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
  pids.push(proc.pid);
  const timer = setTimeout(() => proc.kill("SIGKILL"), 90_000);
  const done = Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]).then(([stdout, stderr, code]) => {
    clearTimeout(timer);
    return { stdout, stderr, code, recording };
  });
  return { proc, done };
}

/** The sample keys the run recorded, one per row. */
function recordedSamples(path: string): string[] {
  const recording = readRecording(path);
  expect(recording.complete).toBe(true);
  return recording.operators.flatMap((op) => op.batches.flatMap((b) => Array.from({ length: b.rows }, (_, r) => sampleKey(b.containerId, b.timestampMs[r]!, b.monotonicMs[r]!))));
}

function expectExactlyOnce(server: EsTestServer, samples: string[]): void {
  const stored = storedSamples(server);
  expect(new Set(samples).size).toBe(samples.length);
  expect([...stored.values()].filter((n) => n !== 1)).toEqual([]);
  expect(samples.filter((k) => !stored.has(k))).toEqual([]);
  expect(stored.size).toBe(samples.length);
}


dockerTest("a live run with Elasticsearch down in the middle: every sample arrives exactly once", async () => {
  const server = startEsServer();
  servers.push(server);
  const spool = scratch();
  const { done } = runCpost(server, spool, 4);
  await until("the first documents", () => (server.count("metrics-cpost.container-default") > 0 ? true : undefined), 30_000);
  server.down();
  await until("documents in the spool", () => (spoolFiles(spool).length > 0 ? true : undefined), 30_000);
  server.up();
  const run = await done;
  expect(run.stderr).toBe("");
  expect(run.code).toBe(0);
  expect(run.stdout).toContain("not answering (ECONNREFUSED); documents go to the spool");
  const samples = recordedSamples(run.recording);
  expect(samples.length).toBeGreaterThan(300); // 4 s at 5 ms
  expect(run.stdout).toMatch(new RegExp(`^elasticsearch: ${samples.length} sent \\(\\d+ from the spool\\), 0 spooled, 0 rejected$`, "m"));
  expectExactlyOnce(server, samples);
  expect(spoolFiles(spool)).toEqual([]);
}, 90_000);

dockerTest("a restart with a non-empty spool: the next cpost sends it, exactly once (compiled binary)", async () => {
  const binary = await compiledBinary();
  const server = startEsServer();
  servers.push(server);
  const spool = scratch();
  server.down();
  const first = await runCpost(server, spool, 1).done;
  expect(first.code).toBe(0);
  const before = recordedSamples(first.recording);
  expect(first.stdout).toContain(`elasticsearch: 0 sent, ${before.length} spooled in ${spool}`);
  expect(server.count()).toBe(0);

  server.up();
  const second = await runCpost(server, spool, 1, binary).done;
  expect(second.stderr).not.toContain("elasticsearch"); // (other parts may warn)
  expect(second.code).toBe(0);
  const after = recordedSamples(second.recording);
  expect(second.stdout).toContain(`${before.length} documents from earlier runs wait in ${spool}`);
  expect(second.stdout).toContain(`elasticsearch: ${before.length + after.length} sent (${before.length} from the spool), 0 spooled, 0 rejected`);
  expectExactlyOnce(server, [...before, ...after]);
  expect(spoolFiles(spool)).toEqual([]);
}, 120_000);
