/**
 * The runner against Podman's Docker-compatible socket: the same pipeline,
 * the same CLI, DOCKER_HOST pointing at a `podman system service` this test
 * starts (and stops). Skipped with its reason where podman is absent; in CI,
 * which installs it (test/setup.sh), its absence is a failure.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectDocker } from "../core/engine/docker.ts";
import { readRecording } from "../core/sinks/recording.ts";
import { BUN, hasDocker, IN_CI, pingDocker, REPO, runProcess, TEST_IMAGE } from "./support.ts";

const podman = Bun.which("podman");
const temp = mkdtempSync(join(tmpdir(), "cpost-podman-test-"));
const socket = join(temp, "podman.sock");
let service: ReturnType<typeof Bun.spawn> | undefined;

beforeAll(async () => {
  if (!podman || !hasDocker) return;
  // Podman's default rlimits exceed what containers may get here (TESTING.md).
  const conf = join(temp, "containers.conf");
  writeFileSync(conf, '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n');
  service = Bun.spawn([podman, "system", "service", "--time=0", `unix://${socket}`], {
    env: { ...process.env, CONTAINERS_CONF: conf },
    stdout: "ignore",
    stderr: "ignore",
  });
  const deadline = Date.now() + 30_000;
  while (!(await pingDocker(socket, 1000))) {
    if (Date.now() > deadline) throw new Error("podman system service did not answer within 30 s");
    await Bun.sleep(100);
  }
  // The test image lives in Docker (test/setup.sh); hand it to Podman through both engines' APIs.
  const image = await fetch(`http://d/images/${TEST_IMAGE}/get`, { unix: "/var/run/docker.sock" });
  const loaded = await fetch("http://d/v1.41/images/load", { unix: socket, method: "POST", body: await image.arrayBuffer(), headers: { "Content-Type": "application/x-tar" } });
  if (!loaded.ok) throw new Error(`podman could not load ${TEST_IMAGE}: ${await loaded.text()}`);
}, 60_000);

afterAll(async () => {
  if (service) {
    const engine = await connectDocker({ host: `unix://${socket}` }).catch(() => undefined);
    for (const c of (await engine?.listContainers(["cpost.run"])) ?? []) await engine!.removeContainer(c.id, { force: true });
    await fetch(`http://d/v1.41/images/${TEST_IMAGE}?force=true`, { unix: socket, method: "DELETE" }).catch(() => undefined);
    service.kill();
    await service.exited;
  }
  rmSync(temp, { recursive: true, force: true });
});

const reason = !podman ? "podman is not installed (test/setup.sh installs it)" : !hasDocker ? "no Docker engine to take the test image from" : "";

if (reason && IN_CI) {
  test("a pipeline on Podman's Docker-compatible socket", () => {
    throw new Error(`cannot run in CI: ${reason}`);
  });
} else {
  test.skipIf(reason !== "")(`a pipeline on Podman's Docker-compatible socket${reason ? ` (skipped: ${reason})` : ""}`, async () => {
    const engine = await connectDocker({ host: `unix://${socket}` });
    expect(engine.info.engine).toBe("podman");
    const work = join(temp, "tmp");
    mkdirSync(work, { recursive: true });
    const input = join(REPO, "examples/diamond/input");
    const recording = join(temp, "run.msgpack");
    const run = await runProcess([BUN, join(REPO, "core/main.ts"), "run", join(REPO, "examples/diamond/pipeline.yaml"), input, "--keep-outputs", "-v", "--record", recording], {
      env: { DOCKER_HOST: `unix://${socket}`, TMPDIR: work },
    });
    expect(run.stderr).not.toContain("cpost:");
    expect(run.code).toBe(0);
    expect(run.stdout).toContain("Engine: podman ");
    expect(run.stdout.match(/The container id is: [0-9a-f]{64}\n/g)?.length).toBe(5);

    const kept = /Operator outputs are kept in (\S+)/.exec(run.stdout)![1]!;
    const all = readdirSync(input).sort().map((f) => readFileSync(join(input, f), "utf8")).join("");
    const words = all.split(/\s+/).filter(Boolean).length;
    expect(readFileSync(join(kept, "writer", "output-0", "report.txt"), "utf8")).toBe(`${all.toUpperCase()}${words}\n`);
    // Sampled where Podman keeps its containers' cgroups: segment touched 64 MiB.
    const recorded = readRecording(recording);
    expect(recorded.run.host.engine).toBe("podman");
    const segment = recorded.operators.find((o) => o.operator?.name === "segment")!;
    expect(segment.summary!.samples).toBeGreaterThan(10);
    expect(segment.summary!.memoryMb.max).toBeGreaterThan(60);
    // Everything the run made on Podman is gone.
    expect(await engine.listContainers([`cpost.run`])).toEqual([]);
  }, 120_000);
}
