/**
 * core/engine/docker.ts against the real Docker engine: connection, containers,
 * logs, networks, pulls (with a registry stand-in on 127.0.0.1 that answers
 * as a token-auth registry does), and the errors users see.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectDocker, defineLogDemuxer, engineEndpoint, registryAuth, registryOf, splitImage, type LogChunk } from "../core/engine/docker.ts";
import { CpostError } from "../core/contracts/errors.ts";
import { docker, dockerTest, hasDocker, TEST_IMAGE } from "./support.ts";

const LABEL = "cpost.test";
const MINE = `docker-test-${process.pid}`;
const temp = mkdtempSync(join(tmpdir(), "cpost-docker-test-"));

afterAll(async () => {
  if (hasDocker) {
    const d = await docker();
    for (const c of await d.listContainers([`${LABEL}=${MINE}`])) await d.removeContainer(c.id, { force: true });
    for (const n of await d.listNetworks([`${LABEL}=${MINE}`])) await d.removeNetwork(n.id);
  }
  rmSync(temp, { recursive: true, force: true });
});

const text = (chunks: LogChunk[], stream: "stdout" | "stderr") =>
  Buffer.concat(chunks.filter((c) => c.stream === stream).map((c) => c.data)).toString("utf8");

describe("connecting", () => {
  dockerTest("reads the engine, its API version and cgroup layout from the engine itself", async () => {
    const d = await docker();
    const version = (await (await fetch("http://d/version", { unix: "/var/run/docker.sock" })).json()) as { Version: string };
    const info = (await (await fetch("http://d/info", { unix: "/var/run/docker.sock" })).json()) as { CgroupDriver: string; CgroupVersion: string };
    expect(d.info.engine).toBe("docker");
    expect(d.info.version).toBe(version.Version);
    expect(d.info.apiVersion).toBe("1.41");
    expect(d.info.cgroupDriver).toBe(info.CgroupDriver as "cgroupfs");
    expect(String(d.info.cgroupVersion)).toBe(info.CgroupVersion);
    await d.ping();
  });

  test("an unreachable socket is a clear engine error naming the socket and what to do", async () => {
    const missing = join(temp, "no-engine.sock");
    const error = await connectDocker({ host: `unix://${missing}` }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CpostError);
    expect((error as CpostError).code).toBe("engine");
    expect((error as CpostError).message).toBe(`cannot reach the container engine at unix://${missing} (no such socket)`);
    expect((error as CpostError).hint).toContain("DOCKER_HOST=unix://");

    // A path that exists but where nothing listens.
    writeFileSync(join(temp, "not-a-socket"), "");
    const refused = await connectDocker({ host: `unix://${join(temp, "not-a-socket")}` }).catch((e: unknown) => e);
    expect((refused as CpostError).message).toContain("nothing listens there");
  });

  test("DOCKER_HOST forms", () => {
    expect(engineEndpoint("unix:///run/podman/podman.sock")).toEqual({ socketPath: "/run/podman/podman.sock", baseUrl: "http://docker", display: "unix:///run/podman/podman.sock" });
    expect(engineEndpoint(undefined).socketPath).toBe("/var/run/docker.sock");
    expect(engineEndpoint("tcp://127.0.0.1:2375").baseUrl).toBe("http://127.0.0.1:2375");
    expect(() => engineEndpoint("ssh://host")).toThrow("is not a unix:// or tcp:// address");
  });
});

describe("containers", () => {
  dockerTest("create, start, wait, inspect, logs (demultiplexed), remove", async () => {
    const d = await docker();
    const input = join(temp, "in");
    const output = join(temp, "out");
    mkdirSync(input);
    mkdirSync(output);
    writeFileSync(join(input, "x.txt"), "hello\n");
    // 300 KB on stdout interleaved with stderr: frames cross the chunk boundaries of the socket.
    const script = 'cat /in/x.txt > /out/copy.txt; echo "$GREETING" >&2; i=0; while [ $i -lt 3000 ]; do echo "line $i ......................................................................................"; i=$((i+1)); done; echo done >&2; touch /in/forbidden 2>/dev/null || echo read-only >&2; exit 3';
    const id = await d.createContainer({
      name: `cpost-docker-test-${process.pid}`,
      image: TEST_IMAGE,
      cmd: ["sh", "-c", script],
      env: { GREETING: "hi there" },
      labels: { [LABEL]: MINE },
      mounts: [
        { source: input, target: "/in", readOnly: true },
        { source: output, target: "/out", readOnly: false },
      ],
    });
    expect(id).toMatch(/^[0-9a-f]{64}$/);
    await d.startContainer(id);
    expect(await d.waitContainer(id)).toEqual({ exitCode: 3, error: undefined });
    const state = await d.inspectContainer(id);
    expect(state).toMatchObject({ id, running: false, exitCode: 3, oomKilled: false, status: "exited" });
    expect(state.labels[LABEL]).toBe(MINE);

    const chunks: LogChunk[] = [];
    for await (const chunk of d.containerLogs(id)) chunks.push(chunk);
    const stdout = text(chunks, "stdout").split("\n");
    expect(stdout.length).toBe(3001);
    expect(stdout[0]).toStartWith("line 0 ");
    expect(stdout[2999]).toStartWith("line 2999 ");
    expect(text(chunks, "stderr")).toBe("hi there\ndone\nread-only\n");
    expect(readFileSync(join(output, "copy.txt"), "utf8")).toBe("hello\n");

    expect((await d.listContainers([`${LABEL}=${MINE}`])).map((c) => c.id)).toContain(id);
    await d.removeContainer(id);
    await d.removeContainer(id); // already gone: not an error
    expect((await d.listContainers([`${LABEL}=${MINE}`])).map((c) => c.id)).not.toContain(id);
  });

  dockerTest("kill stops a running container; killing it again is not an error", async () => {
    const d = await docker();
    const id = await d.createContainer({ image: TEST_IMAGE, cmd: ["sleep", "30"], env: {}, labels: { [LABEL]: MINE }, mounts: [] });
    await d.startContainer(id);
    const running = await d.inspectContainer(id);
    expect(running.running).toBe(true);
    expect(running.pid).toBeGreaterThan(0);
    const waited = d.waitContainer(id);
    await d.killContainer(id);
    expect((await waited).exitCode).toBe(137);
    await d.killContainer(id);
    await d.removeContainer(id, { force: true });
  });

  dockerTest("an aborted wait rejects at once as an interruption", async () => {
    const d = await docker();
    const id = await d.createContainer({ image: TEST_IMAGE, cmd: ["sleep", "30"], env: {}, labels: { [LABEL]: MINE }, mounts: [] });
    await d.startContainer(id);
    const controller = new AbortController();
    const waited = d.waitContainer(id, controller.signal).catch((e: unknown) => e);
    controller.abort();
    const error = (await waited) as CpostError;
    expect(error.code).toBe("interrupted");
    await d.removeContainer(id, { force: true });
  });

  dockerTest("a command that does not exist fails at start with the engine's reason", async () => {
    const d = await docker();
    const id = await d.createContainer({ image: TEST_IMAGE, cmd: ["no-such-program"], env: {}, labels: { [LABEL]: MINE }, mounts: [] });
    const error = (await d.startContainer(id).catch((e: unknown) => e)) as CpostError;
    expect(error.code).toBe("engine");
    expect(error.message).toContain("no-such-program");
    expect(error.message).toContain("executable file not found");
    await d.removeContainer(id, { force: true });
  });

  dockerTest("a missing image is reported by create, and imageExists tells", async () => {
    const d = await docker();
    expect(await d.imageExists(TEST_IMAGE)).toBe(true);
    expect(await d.imageExists("cpost-test/busybox:no-such-tag")).toBe(false);
    const error = (await d.createContainer({ image: "cpost-test/busybox:no-such-tag", env: {}, labels: { [LABEL]: MINE }, mounts: [] }).catch((e: unknown) => e)) as CpostError;
    expect(error.code).toBe("engine");
    expect(error.message).toContain("No such image");
  });
});

describe("networks", () => {
  dockerTest("create, find by exact name, list by label, remove twice", async () => {
    const d = await docker();
    const name = `cpost_test_net_${process.pid}`;
    const id = await d.createNetwork(name, { [LABEL]: MINE });
    expect(await d.findNetwork(name)).toEqual({ id, name, labels: { [LABEL]: MINE } });
    // The engine's name filter matches substrings; findNetwork does not.
    expect(await d.findNetwork(name.slice(0, -1))).toBeUndefined();
    expect((await d.listNetworks([`${LABEL}=${MINE}`])).map((n) => n.id)).toContain(id);
    const again = (await d.createNetwork(name, {}).catch((e: unknown) => e)) as CpostError;
    expect(again.message).toContain("already exists");
    await d.removeNetwork(id);
    await d.removeNetwork(id);
    expect(await d.findNetwork(name)).toBeUndefined();
  });
});

describe("pulling", () => {
  /** A registry stand-in: token auth as Docker Hub does it; only user "u" with password "p" gets a token that reads. */
  function startRegistry() {
    const seen: string[] = [];
    const server: Bun.Server<undefined> = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(req): Response {
        const url = new URL(req.url);
        seen.push(`${req.method} ${url.pathname} ${req.headers.get("authorization") ?? "-"}`);
        const headers = { "Docker-Distribution-API-Version": "registry/2.0", "Content-Type": "application/json" };
        if (url.pathname === "/token") {
          return Response.json({ token: req.headers.get("authorization") === `Basic ${btoa("u:p")}` ? "reader" : "anonymous" });
        }
        if (req.headers.get("authorization") === "Bearer reader") {
          return new Response(JSON.stringify({ errors: [{ code: "MANIFEST_UNKNOWN", message: "manifest unknown" }] }), { status: 404, headers });
        }
        return new Response(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }), {
          status: 401,
          headers: { ...headers, "WWW-Authenticate": `Bearer realm="http://127.0.0.1:${server.port}/token",service="test",scope="repository:private/op:pull"` },
        });
      },
    });
    return { server, seen, image: `127.0.0.1:${server.port}/private/op:1` };
  }

  dockerTest("a refused pull says docker login or docker load; credentials from config.json reach the registry", async () => {
    const d = await docker();
    const { server, seen, image } = startRegistry();
    const saved = process.env.DOCKER_CONFIG;
    try {
      process.env.DOCKER_CONFIG = join(temp, "no-config");
      const refused = (await d.pullImage(image).catch((e: unknown) => e)) as CpostError;
      expect(refused.code).toBe("engine");
      expect(refused.message).toBe(`image ${image} is not on this machine and pulling it failed: unauthorized`);
      expect(refused.hint).toContain("docker login");
      expect(refused.hint).toContain("docker load");
      expect(seen.some((s) => s.includes("Bearer anonymous"))).toBe(true);

      const config = join(temp, "docker-config");
      mkdirSync(config, { recursive: true });
      writeFileSync(join(config, "config.json"), JSON.stringify({ auths: { [`127.0.0.1:${server.port}`]: { auth: btoa("u:p") } } }));
      process.env.DOCKER_CONFIG = config;
      const past = (await d.pullImage(image).catch((e: unknown) => e)) as CpostError;
      // Authenticated, the registry lets cpost in and says the tag is not there.
      expect(past.message).toContain("manifest unknown");
      expect(seen).toContain(`GET /token Basic ${btoa("u:p")}`);
      expect(seen.some((s) => s.endsWith("Bearer reader"))).toBe(true);
    } finally {
      if (saved === undefined) delete process.env.DOCKER_CONFIG;
      else process.env.DOCKER_CONFIG = saved;
      server.stop(true);
    }
  });

  dockerTest("a registry that cannot be reached says so and suggests docker load", async () => {
    const d = await docker();
    // Port 9 on 127.0.0.1: nothing listens, the engine's dial is refused at once.
    const error = (await d.pullImage("127.0.0.1:9/nothing/here:1").catch((e: unknown) => e)) as CpostError;
    expect(error.code).toBe("engine");
    expect(error.message).toContain("connection refused");
    expect(error.hint).toContain("docker load");
  });
});

describe("pure parts", () => {
  test("the log demultiplexer gives the same frames however the stream is cut", () => {
    // Recorded from the engine: stderr "err\n", stdout "out\n", stdout "" (empty frame), stderr 300 bytes.
    const frame = (kind: number, body: Uint8Array) => {
      const head = new Uint8Array(8);
      head[0] = kind;
      new DataView(head.buffer).setUint32(4, body.length);
      return Buffer.concat([head, body]);
    };
    const big = new Uint8Array(300).fill(65);
    const stream = Buffer.concat([frame(2, Buffer.from("err\n")), frame(1, Buffer.from("out\n")), frame(1, new Uint8Array(0)), frame(2, big)]);
    const expected = JSON.stringify([
      ["stderr", "err\n"],
      ["stdout", "out\n"],
      ["stdout", ""],
      ["stderr", "A".repeat(300)],
    ]);
    for (let cut1 = 0; cut1 <= stream.length; cut1 += 3) {
      for (const cut2 of [cut1, Math.min(stream.length, cut1 + 1), Math.min(stream.length, cut1 + 9)]) {
        const out: Array<[string, string]> = [];
        const demux = defineLogDemuxer((c) => out.push([c.stream, Buffer.from(c.data).toString()]));
        demux.push(stream.subarray(0, cut1));
        demux.push(stream.subarray(cut1, cut2));
        demux.push(stream.subarray(cut2));
        demux.end();
        expect(JSON.stringify(out)).toBe(expected);
      }
    }
  });

  test("image names: registry and tag", () => {
    expect(splitImage("nvcr.io/nvidia/tritonserver:20.07-v1-py3")).toEqual({ name: "nvcr.io/nvidia/tritonserver", tag: "20.07-v1-py3" });
    expect(splitImage("localhost:5000/op")).toEqual({ name: "localhost:5000/op", tag: "latest" });
    expect(registryOf("nvcr.io/nvidia/tritonserver")).toBe("nvcr.io");
    expect(registryOf("localhost:5000/op")).toBe("localhost:5000");
    expect(registryOf("cpost-test/busybox")).toBe("docker.io");
    expect(registryOf("busybox")).toBe("docker.io");
  });

  test("registry credentials from a Docker config: inline auth, Hub keys, helpers cpost does not run", () => {
    const dir = join(temp, "auth-config");
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({
        auths: { "https://index.docker.io/v1/": { auth: btoa("hub:secret:with:colons") }, "nvcr.io": { auth: btoa("$oauthtoken:key") } },
        credHelpers: { "gcr.io": "gcloud" },
      }),
    );
    const decode = (h: string | undefined) => JSON.parse(Buffer.from(h!, "base64url").toString());
    expect(decode(registryAuth("docker.io", dir).header)).toEqual({ username: "hub", password: "secret:with:colons", serveraddress: "https://index.docker.io/v1/" });
    expect(decode(registryAuth("nvcr.io", dir).header)).toEqual({ username: "$oauthtoken", password: "key", serveraddress: "nvcr.io" });
    expect(registryAuth("gcr.io", dir)).toEqual({ helper: "gcloud" });
    expect(registryAuth("quay.io", join(temp, "nowhere"))).toEqual({});
  });
});
