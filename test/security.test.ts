/**
 * Security, shown by behaviour rather than by grepping the source: commands
 * reach the engine as argv (shell metacharacters run literally, and cpost
 * starts no process of its own); secrets (Elasticsearch credentials,
 * registry auth) never appear in cpost's output, its process arguments, its
 * recordings or CSVs, yet do reach the server that asked for them; the
 * monitor's control API is loopback-only unless a token guards it; sinks and
 * collectors load only by their built-in names (no file is imported because
 * of where cpost runs). What each check tried goes to docs/reliability.md.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { readRecording } from "../core/sinks/recording.ts";
import { startEsServer } from "./es-server.ts";
import { defineReliabilityLog } from "./reliability-log.ts";
import { BUN, compiledBinary, defineTestScratch, dockerTest, hasDocker, REPO } from "./support.ts";
import { until } from "./test-containers.ts";

const log = defineReliabilityLog("security");
const INPUT = join(REPO, "examples/diamond/input");
const { scratch, pids, cleanup } = defineTestScratch("security");
afterAll(cleanup);

function pipelineFile(operators: string): string {
  const file = join(scratch(), "pipeline.yaml");
  writeFileSync(file, `api-version: 0.4.0\nname: security\noperators:\n${operators}`);
  return file;
}

interface Watched {
  code: number;
  stdout: string;
  stderr: string;
  /** Every /proc/<pid>/cmdline of cpost read while it ran (distinct), and how many looks were taken. */
  cmdlines: string[];
  looks: number;
  /** Child processes of cpost seen while it ran (pid: command line). */
  children: string[];
}

/** Runs cpost and watches it from outside while it runs: its argv as `ps` shows it, and any process it starts. */
function watchCpost(args: string[], options: { env?: Record<string, string>; cwd?: string; binary?: string } = {}): Promise<Watched> {
  return watchProcess(options.binary ? [options.binary, ...args] : [BUN, join(REPO, "core/main.ts"), ...args], options);
}

async function watchProcess(argv: string[], options: { env?: Record<string, string>; cwd?: string } = {}): Promise<Watched> {
  const proc = Bun.spawn(argv, { cwd: options.cwd ?? REPO, env: { ...process.env, TMPDIR: scratch(), ...options.env }, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  pids.push(proc.pid);
  const cmdlines = new Set<string>();
  const children = new Set<string>();
  let running = true;
  let looks = 0;
  const watcher = (async () => {
    while (running) {
      looks++;
      try {
        cmdlines.add(readFileSync(`/proc/${proc.pid}/cmdline`, "utf8").split("\0").join(" "));
        for (const task of readdirSync(`/proc/${proc.pid}/task`)) {
          for (const child of readFileSync(`/proc/${proc.pid}/task/${task}/children`, "utf8").split(" ").filter(Boolean)) {
            children.add(`${child}: ${readFileSync(`/proc/${child}/cmdline`, "utf8").split("\0").join(" ")}`);
          }
        }
      } catch {
        // it ended between two reads
      }
      await Bun.sleep(5);
    }
  })();
  const timer = setTimeout(() => proc.kill("SIGKILL"), 100_000);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  running = false;
  await watcher;
  return { code, stdout, stderr, cmdlines: [...cmdlines], looks, children: [...children] };
}

/** Every form a secret could leak in: as is, base64 (Basic auth, X-Registry-Auth), URL-encoded. */
function formsOf(secret: string, user?: string): string[] {
  const forms = [secret, Buffer.from(secret).toString("base64"), encodeURIComponent(secret)];
  if (user !== undefined) forms.push(Buffer.from(`${user}:${secret}`).toString("base64"), Buffer.from(`${user}:${secret}`).toString("base64url"));
  return forms;
}

function expectAbsent(where: string, text: string, forms: string[]): void {
  for (const form of forms) if (text.includes(form)) throw new Error(`the secret (as ${JSON.stringify(form.slice(0, 6))}…) appears in ${where}`);
}

/** Every file under a directory, as text. */
function filesUnder(dir: string): Array<{ path: string; text: string }> {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name))
    .map((path) => ({ path, text: readFileSync(path).toString("latin1") }));
}

describe("no shell anywhere", () => {
  dockerTest("shell metacharacters in a command and in variables reach the container as literal argv and env; cpost starts no process", async () => {
    await log.check("Security", "Shell metacharacters in an operator's command and variables (`$(…)`, backticks, `;`, `|`, `&&`, `>`); cpost watched from outside for child processes", async () => {
      const hostile = "$(touch /out/pwned1); `touch /out/pwned2` | tee /out/pwned3 && rm -rf /out > /out/pwned4; echo x";
      const file = pipelineFile(
        `  - name: literal\n    container: {image: cpost-test/busybox, tag: "1", command: ${JSON.stringify(["echo", hostile])}}\n    output: [{path: /out}]\n` +
          `  - name: environment\n    container: {image: cpost-test/busybox, tag: "1", command: ["env"]}\n    variables: {HOSTILE: ${JSON.stringify(hostile)}, SUB: "$(id -u)"}\n` +
          `  - name: lasting\n    container: {image: cpost-test/busybox, tag: "1", command: ["cpost-workload", "sleep-ms", "1500"]}\n`,
      );
      const run = await watchCpost(["run", file, INPUT, "-v", "--keep-outputs", "--sinks", "table"]);
      expect(run.stderr).not.toContain("cpost:");
      expect(run.code).toBe(0);
      expect(run.stdout).toContain(`| ${hostile}\n`);
      expect(run.stdout).toContain(`| HOSTILE=${hostile}\n`);
      expect(run.stdout).toContain("| SUB=$(id -u)\n");
      const kept = /Operator outputs are kept in (\S+)/.exec(run.stdout)![1]!;
      expect(readdirSync(join(kept, "literal", "output-0"))).toEqual([]);
      rmSync(kept, { recursive: true, force: true });
      expect(run.looks).toBeGreaterThan(50);
      expect(run.children).toEqual([]);
      // The watch does see children when there are some: a shell running sleep.
      const control = await watchProcess(["sh", "-c", "sleep 0.3; true"]);
      expect(control.children.some((c) => c.includes("sleep 0.3"))).toBe(true);
      return `the command ran as argv: echo printed the text literally and created none of the files it names; the variables reached the container verbatim; over ${run.looks} looks at /proc/<pid>/task/*/children during the run, cpost started no process (no shell, no docker CLI)`;
    });
  });
});

describe("secrets", () => {
  dockerTest("Elasticsearch credentials from a file: used, but never in output, process arguments, recording, CSV or spool", async () => {
    await log.check("Security", "Elasticsearch password given in a file (--es-password-file), the run recorded with --record and CSVs, -v; cpost's /proc/<pid>/cmdline read throughout", async () => {
      const secret = `es-S3cret-${crypto.randomUUID()}`;
      const server = startEsServer({ auth: { user: "elastic", password: secret } });
      try {
        const dir = scratch();
        const passwordFile = join(dir, "password");
        writeFileSync(passwordFile, `${secret}\n`, { mode: 0o600 });
        const metrics = join(dir, "metrics");
        const spool = join(dir, "spool");
        const recording = join(metrics, "run.msgpack");
        const file = pipelineFile(`  - name: work\n    container: {image: cpost-test/busybox, tag: "1", command: ["cpost-workload", "cpu", "1", "1"]}\n`);
        const run = await watchCpost(
          ["run", file, INPUT, "-v", "--sinks", "es,csv,table", "--metrics_dir", metrics, "--record", recording, "--es-url", server.url, "--es-password-file", passwordFile, "--es-spool-dir", spool],
          { env: { CPOST_ES_USER: "elastic" } },
        );
        expect(run.stderr).not.toContain("cpost:");
        expect(run.code).toBe(0);
        // The password did its job: every request carried it, and documents were stored.
        expect(server.requests.length).toBeGreaterThan(0);
        expect(server.requests.every((r) => r.authorization)).toBe(true);
        expect(server.count()).toBeGreaterThan(0);
        const forms = formsOf(secret, "elastic");
        expectAbsent("stdout", run.stdout, forms);
        expectAbsent("stderr", run.stderr, forms);
        for (const cmdline of run.cmdlines) expectAbsent("the process arguments", cmdline, forms);
        const files = [...filesUnder(metrics), ...filesUnder(spool)];
        expect(files.some((f) => f.path.endsWith(".csv"))).toBe(true);
        for (const f of files) expectAbsent(f.path, f.text, forms);
        expect(readRecording(recording).complete).toBe(true);
        return `${server.requests.length} requests reached the Elasticsearch stand-in, each with the credentials, ${server.count()} documents stored; the password was in none of stdout, stderr, ${run.looks} readings of /proc/<pid>/cmdline, the recording, the CSV or the spool (checked as is, base64, base64url and URL-encoded)`;
      } finally {
        server.close();
      }
    });
  });

  test("a password on the command line is refused without echoing it; a refused password is not echoed either", async () => {
    await log.check("Security", "An Elasticsearch password typed on the command line (--es-password), and a wrong password from CPOST_ES_PASSWORD", async () => {
      const secret = `inline-S3cret-${crypto.randomUUID()}`;
      const file = pipelineFile(`  - name: work\n    container: {image: cpost-test/busybox, tag: "1", command: ["true"]}\n`);
      const inline = await watchCpost(["run", file, INPUT, "--sinks", "es", "--es-url", "http://127.0.0.1:9", "--es-password", secret]);
      expect(inline.code).toBe(2);
      expect(inline.stderr).toContain("--es-password takes no secret on the command line");
      expectAbsent("stderr", inline.stderr, formsOf(secret));
      expectAbsent("stdout", inline.stdout, formsOf(secret));

      const server = startEsServer({ auth: { user: "elastic", password: "the-right-one" } });
      try {
        const wrong = `wrong-S3cret-${crypto.randomUUID()}`;
        const refused = await watchCpost(["es", "setup", "--es-url", server.url], { env: { CPOST_ES_USER: "elastic", CPOST_ES_PASSWORD: wrong } });
        expect(refused.code).not.toBe(0);
        expect(refused.stderr).toMatch(/401|refused the credentials/);
        expectAbsent("stderr", refused.stderr, formsOf(wrong, "elastic"));
        expectAbsent("stdout", refused.stdout, formsOf(wrong, "elastic"));
        return `--es-password was refused (exit 2: "takes no secret on the command line") without repeating the value; a wrong password was reported as refused (exit ${refused.code}) without repeating it`;
      } finally {
        server.close();
      }
    });
  });

  dockerTest("registry credentials from the Docker config reach the registry through the engine, never cpost's output", async () => {
    await log.check("Security", "Registry credentials in DOCKER_CONFIG's config.json, for a private image cpost must pull (-v); a token-auth registry stand-in on 127.0.0.1", async () => {
      const secret = `reg-S3cret-${crypto.randomUUID()}`;
      const seen: string[] = [];
      const basic = `Basic ${btoa(`robot:${secret}`)}`;
      const server: Bun.Server<undefined> = Bun.serve({
        hostname: "127.0.0.1",
        port: 0,
        fetch(req): Response {
          const url = new URL(req.url);
          seen.push(`${url.pathname} ${req.headers.get("authorization") ?? "-"}`);
          const headers = { "Docker-Distribution-API-Version": "registry/2.0", "Content-Type": "application/json" };
          if (url.pathname === "/token") return Response.json({ token: req.headers.get("authorization") === basic ? "reader" : "anonymous" });
          if (req.headers.get("authorization") === "Bearer reader") return new Response(JSON.stringify({ errors: [{ code: "MANIFEST_UNKNOWN", message: "manifest unknown" }] }), { status: 404, headers });
          return new Response(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }), {
            status: 401,
            headers: { ...headers, "WWW-Authenticate": `Bearer realm="http://127.0.0.1:${server.port}/token",service="test",scope="repository:private/op:pull"` },
          });
        },
      });
      try {
        const config = scratch();
        writeFileSync(join(config, "config.json"), JSON.stringify({ auths: { [`127.0.0.1:${server.port}`]: { auth: btoa(`robot:${secret}`) } } }), { mode: 0o600 });
        const file = pipelineFile(`  - name: private\n    container: {image: 127.0.0.1:${server.port}/private/op, tag: "1"}\n`);
        const run = await watchCpost(["run", file, INPUT, "-v"], { env: { DOCKER_CONFIG: config } });
        expect(run.code).toBe(2);
        expect(run.stderr).toContain("manifest unknown");
        // The credentials reached the registry (the engine exchanged them for a token): cpost passed them on.
        expect(seen).toContain(`/token ${basic}`);
        const forms = formsOf(secret, "robot");
        expectAbsent("stdout", run.stdout, forms);
        expectAbsent("stderr", run.stderr, forms);
        for (const cmdline of run.cmdlines) expectAbsent("the process arguments", cmdline, forms);
        return `the engine presented the credentials to the registry's token endpoint (so cpost passed them, in the X-Registry-Auth header); the pull ended "manifest unknown" (exit 2); the secret was in none of stdout, stderr or ${run.looks} readings of /proc/<pid>/cmdline`;
      } finally {
        server.stop(true);
      }
    });
  });
});

describe("the monitor's control API", () => {
  const open = ["0.0.0.0:0", "[::]:0", ...Object.values(networkInterfaces()).flat().filter((a) => a && !a.internal && a.family === "IPv4").slice(0, 1).map((a) => `${a!.address}:0`)];

  test("refuses every address beyond loopback without a token; by default only loopback can connect", async () => {
    await log.check("Security", `\`cpost monitor serve\` asked to listen on ${open.join(", ")} without a token; and with its default host`, async () => {
      const binary = await compiledBinary();
      for (const address of open) {
        const run = await watchCpost(["monitor", "serve", "--listen", address], { binary });
        expect(run.code).toBe(2);
        expect(run.stderr).toContain(`--listen ${address} accepts connections from other machines, so the control API needs a token`);
      }
      const lan = open.find((a) => !a.startsWith("0.0.0.0") && !a.startsWith("["))?.replace(/:0$/, "");
      if (!hasDocker) return `refused ${open.length} addresses (exit 2, "needs a token"); the default-host check needs Docker`;
      // ":0" names no host: the monitor must pick loopback, so this machine's own LAN address cannot reach it.
      const proc = Bun.spawn([binary, "monitor", "serve", "--listen", ":0", "--sinks", "msgpack", "--msgpack-file", join(scratch(), "m.msgpack")], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
      pids.push(proc.pid);
      try {
        let text = "";
        const reader = (async () => {
          for await (const chunk of proc.stderr) text += new TextDecoder().decode(chunk);
        })();
        const url = await until("the monitor to listen", () => /listening on (http:\/\/\S+)/.exec(text)?.[1], 30_000);
        expect(url).toStartWith("http://127.0.0.1:");
        expect((await fetch(`${url}/healthz`)).status).toBe(200);
        const port = new URL(url).port;
        let fromLan = "no LAN address on this machine";
        if (lan) {
          const reached = await fetch(`http://${lan}:${port}/status`, { signal: AbortSignal.timeout(2000) }).then((r) => `answered ${r.status}`, (e: Error) => `refused (${(e as { code?: string }).code ?? e.name})`);
          expect(reached).toStartWith("refused");
          fromLan = `this machine's LAN address ${lan} was ${reached}`;
        }
        proc.kill("SIGTERM");
        await proc.exited;
        void reader;
        return `each was refused (exit 2, "accepts connections from other machines, so the control API needs a token"); with --listen :0 it listened on ${url.replace(/:\d+$/, ":<port>")} and ${fromLan}`;
      } finally {
        proc.kill("SIGKILL");
      }
    });
  }, 60_000);
});

describe("plugins load only from paths the user named", () => {
  test("names that are not built-ins, and files that sit where cpost runs, are never imported", async () => {
    await log.check("Security", "Files named like plugins (`evil.ts`, `csv.ts`, `plugins/evil.ts`) in the directory cpost runs from, and --collectors/--sinks naming them or their paths", async () => {
      const cwd = scratch();
      const marker = join(cwd, "IMPORTED");
      const body = `require("node:fs").writeFileSync(${JSON.stringify(marker)}, import.meta.path);\nexport default {};\n`;
      mkdirSync(join(cwd, "plugins"), { recursive: true });
      mkdirSync(join(cwd, "collectors"), { recursive: true });
      for (const f of ["evil.ts", "csv.ts", "cgroup.ts", "plugins/evil.ts", "collectors/evil.ts", "plugins/csv.ts"]) writeFileSync(join(cwd, f), body);
      const file = pipelineFile(`  - name: work\n    container: {image: cpost-test/busybox, tag: "1", command: ["true"]}\n`);
      const tries = [["--collectors", "evil"], ["--collectors", "./evil.ts"], ["--collectors", join(cwd, "evil.ts")], ["--sinks", "evil"], ["--sinks", "./plugins/evil.ts"], ["--sinks", "../evil"], ["--collectors", "cgroup,../../evil"]];
      const binary = await compiledBinary();
      for (const args of tries) {
        const run = await watchCpost(["run", file, INPUT, ...args], { cwd, binary });
        expect(run.code).toBe(2);
        expect(run.stderr).toMatch(/unknown (collector|sink) "/);
        expect(existsSync(marker)).toBe(false);
      }
      // The names cpost knows come from its own registry, not from the files beside it.
      const listed = await watchCpost(["plugins"], { cwd, binary });
      expect(listed.code).toBe(0);
      expect(listed.stdout).not.toContain("evil");
      expect(existsSync(marker)).toBe(false);
      return `all ${tries.length} were refused as unknown collector/sink (exit 2) and none of the files was imported (their import would have written a marker); \`cpost plugins\` lists only built-ins`;
    });
  }, 60_000);

  test("a plugin named by --collector-plugin or CPOST_PLUGIN_PATH loads, and nothing beside it; it cannot take a built-in's name", async () => {
    await log.check("Security", "Plugins named by --collector-plugin and CPOST_PLUGIN_PATH, run from a directory holding other plugin-shaped files; a plugin claiming a built-in's name", async () => {
      const cwd = scratch();
      const elsewhere = scratch();
      const pathDir = scratch();
      const imported = (file: string) => join(file.replace(/\.ts$/, ""), "..", `IMPORTED-${file.split("/").pop()}`);
      const plugin = (file: string, name: string) =>
        writeFileSync(
          file,
          `require("node:fs").writeFileSync(${JSON.stringify(imported(file))}, "");\n` +
            `export default { name: ${JSON.stringify(name)}, description: "a test plugin", metrics: [{ name: "test.value", unit: "count", kind: "gauge" }], open() { return { unavailable: "test plugin" }; } };\n`,
        );
      for (const f of ["evil.ts", "named.ts", "other.ts"]) plugin(join(cwd, f), f.replace(".ts", "-beside"));
      plugin(join(elsewhere, "named.ts"), "named-probe");
      plugin(join(pathDir, "from-path.ts"), "from-path");
      plugin(join(elsewhere, "clash.ts"), "cgroup");
      const binary = await compiledBinary();

      const byFlag = await watchCpost(["plugins", "--collector-plugin", join(elsewhere, "named.ts")], { cwd, binary });
      expect(byFlag.code).toBe(0);
      expect(byFlag.stdout).toContain("named-probe");
      expect(existsSync(imported(join(elsewhere, "named.ts")))).toBe(true);
      const byPath = await watchCpost(["plugins"], { cwd, binary, env: { CPOST_PLUGIN_PATH: pathDir } });
      expect(byPath.code).toBe(0);
      expect(byPath.stdout).toContain("from-path");
      expect(existsSync(imported(join(pathDir, "from-path.ts")))).toBe(true);
      for (const f of ["evil.ts", "named.ts", "other.ts"]) expect(existsSync(imported(join(cwd, f)))).toBe(false);
      expect(byFlag.stdout + byPath.stdout).not.toContain("-beside");

      const clash = await watchCpost(["plugins", "--collector-plugin", join(elsewhere, "clash.ts")], { cwd, binary });
      expect(clash.code).not.toBe(0);
      expect(clash.stderr).toContain("cgroup");
      expect(clash.stderr).toMatch(/built-in/);
      return `the file named by --collector-plugin and the directory named by CPOST_PLUGIN_PATH were loaded; none of the three plugin files in the working directory was imported; a plugin calling itself "cgroup" was refused (exit ${clash.code}: "${clash.stderr.split("\n")[0]!.replace(/^cpost: /, "").replace(elsewhere, "<dir>")}")`;
    });
  }, 60_000);
});
