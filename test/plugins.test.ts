/**
 * Plugins as users load them: the example collector and sink (and a plugin
 * with its own node_modules) copied into a temp dir outside the repo and
 * loaded by the compiled binary, not the source tree, in a run through the
 * real engine; broken plugins (syntax error, no default export, a built-in's
 * name, throwing in read or write) give clear errors or one warning each;
 * CPOST_PLUGIN_PATH; `cpost plugins`; the webhook sink through the shared
 * sink contract; the loader's checks in-process.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { builtinSinks } from "../plugins/index.ts";
import type { PluginListing } from "../core/cli/commands/plugins.ts";
import { CpostError } from "../core/contracts/errors.ts";
import { importPlugin, loadPlugins, optionValues, pluginPathFiles, scanPluginFlags, sinkFactoryOf } from "../core/registry/plugin-loader.ts";
import { pluginSink, sinkContract } from "./contract.ts";
import { BUN, compiledBinary, dockerTest, REPO, runProcess } from "./support.ts";

const dir = mkdtempSync(join(tmpdir(), "cpost-plugins-test-"));
const bare = { PATH: "/usr/bin:/bin", HOME: dir, NODE_PATH: undefined, BUN_INSTALL: undefined, CPOST_PLUGIN_PATH: undefined };

/** What the webhook test server received. */
const events: Array<Record<string, unknown>> = [];
let server: ReturnType<typeof Bun.serve>;

function write(path: string, text: string): string {
  mkdirSync(join(path, ".."), { recursive: true });
  writeFileSync(path, text);
  return path;
}

/** Test plugins, written where a user would keep them: outside the repo. */
const files = {
  procStatus: join(dir, "plugins/proc-status.ts"),
  webhook: join(dir, "plugins/webhook.ts"),
  // JavaScript, with a dependency in its own node_modules, importing defineSink as a value
  shout: write(
    join(dir, "shout/index.js"),
    `import { defineSink } from "cpost";
import shout from "shout-case";
import { writeFileSync } from "node:fs";
export default defineSink({
  name: "shout",
  description: "writes each operator's name, shouted, to <metrics_dir>/shout.txt",
  create({ metricsDir }) {
    const names = [];
    return { operatorDone(result) { names.push(shout(result.operator)); }, end() { writeFileSync(metricsDir + "/shout.txt", names.join("\\n")); } };
  },
});
`,
  ),
  // reads twice, then throws: disabled for the rest of the run with one warning
  flaky: write(
    join(dir, "flaky.ts"),
    `import type { CollectorPlugin } from "cpost";
export default {
  name: "flaky", description: "throws on its third read",
  metrics: [{ name: "flaky.reads", unit: "count", kind: "counter" }],
  open() {
    let reads = 0;
    return { metrics: this.metrics, source: "a test", read(out) { if (++reads > 2) throw new Error("flaky read " + reads); out.values[out.base] = reads; return true; }, close() {} };
  },
} satisfies CollectorPlugin;
`,
  ),
  brokenSink: write(
    join(dir, "broken-sink.ts"),
    `import { defineSink } from "cpost";
export default defineSink({ name: "broken-sink", description: "throws in write", create: () => ({ write() { throw new Error("disk on fire"); } }) });
`,
  ),
  syntax: write(join(dir, "syntax.ts"), `export default {\n  name: "syntax",\n  open( {\n};\n`),
  noExport: write(join(dir, "no-export.ts"), `export const plugin = { name: "no-export" };\n`),
  notAPlugin: write(join(dir, "not-a-plugin.ts"), `export default { name: "Not A Name", description: 3, open() {}, metrics: [{ name: "x", unit: "furlongs", kind: "gauge" }] };\n`),
  clash: write(join(dir, "clash.ts"), `export default { name: "csv", description: "takes a built-in's name", create: () => ({}) };\n`),
  throwsAtLoad: write(join(dir, "throws-at-load.ts"), `throw new Error("no config file here");\n`),
};
write(join(dir, "shout/node_modules/shout-case/package.json"), `{ "name": "shout-case", "version": "1.0.0", "type": "module", "main": "index.js" }`);
write(join(dir, "shout/node_modules/shout-case/index.js"), `export default (text) => text.toUpperCase() + "!";\n`);
mkdirSync(join(dir, "plugins"), { recursive: true });
copyFileSync(join(REPO, "examples/plugins/proc-status.ts"), files.procStatus);
copyFileSync(join(REPO, "examples/plugins/webhook.ts"), files.webhook);

const input = join(dir, "input");
write(join(input, "a.txt"), "a\n");
const pipeline = write(
  join(dir, "pipeline.yaml"),
  `api-version: 0.4.0
name: plugin-test
operators:
  - name: grow
    container:
      image: cpost-test/busybox
      tag: "1"
      command: ["cpost-workload", "mem", "48", "1"]
    input:
      - path: /input
  - name: spin
    container:
      image: cpost-test/busybox
      tag: "1"
      command: ["cpost-workload", "cpu", "1", "0.6"]
    input:
      - path: /input
`,
);

beforeAll(() => {
  server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(request) {
      if (new URL(request.url).pathname === "/fail") return new Response("no", { status: 503 });
      events.push((await request.json()) as Record<string, unknown>);
      return new Response("ok");
    },
  });
});

afterAll(() => {
  server?.stop(true);
  rmSync(dir, { recursive: true, force: true });
});

const hook = (path = "/hook") => `http://127.0.0.1:${server.port}${path}`;

/** The compiled binary, run from the plugins' dir with a bare environment. */
async function binary(args: string[], env: Record<string, string | undefined> = {}) {
  return runProcess([await compiledBinary(), ...args], { cwd: dir, env: { ...bare, ...env }, timeoutMs: 110_000 });
}

describe("the compiled binary", () => {
  dockerTest("runs a pipeline with the example plugins, a plugin with its own node_modules, and broken ones isolated", async () => {
    const metrics = join(dir, "metrics");
    const run = await binary([
      "run", pipeline, input, "--metrics_dir", metrics, "--sinks", "csv", "--force", "cont",
      "--collector-plugin", "./plugins/proc-status.ts", "--collector-plugin", "./flaky.ts",
      "--sink-plugin", "./plugins/webhook.ts", "--webhook-url", hook(),
      "--sink-plugin", "./shout", "--sink-plugin", "./broken-sink.ts",
    ]);
    expect(run.stderr).not.toContain("cannot run in the sampling thread");
    expect(run.code).toBe(0);

    // the collector plugin: its columns in the CSV, the workload's 48 MiB in its peak
    const csv = readFileSync(join(metrics, "grow_final_result.csv"), "utf8").trim().split("\r\n");
    const header = csv[0]!.split(",");
    const col = (name: string) => csv.slice(1).map((line) => Number(line.split(",")[header.indexOf(name)] || NaN));
    for (const name of ["proc.rss_bytes", "proc.peak_rss_bytes", "proc.threads", "proc.voluntary_ctxt_switches"]) expect(header).toContain(name);
    expect(Math.max(...col("proc.peak_rss_bytes").filter((v) => !Number.isNaN(v)))).toBeGreaterThanOrEqual(48 * 2 ** 20);
    expect(col("proc.threads").filter((v) => v === 1).length).toBeGreaterThan(5);
    // the built-in collectors' data is all there despite the flaky one
    expect(col("memory").filter((v) => v > 48).length).toBeGreaterThan(5);
    expect(readFileSync(join(metrics, "spin_final_result.csv"), "utf8").trim().split("\r\n").length).toBeGreaterThan(10);

    // the webhook sink: start, one event per operator, end; its samples are the CSV's readings
    expect(events.map((e) => e.event)).toEqual(["start", "operator", "operator", "end"]);
    const [grow, spin] = events.slice(1, 3) as Array<{ operator: string; status: string; samples: number; memoryMb: { max: number }; recommendation: { memory: number } }>;
    expect([grow!.operator, grow!.status, spin!.operator, spin!.status]).toEqual(["grow", "succeeded", "spin", "succeeded"]);
    expect(grow!.samples).toBeGreaterThan(10);
    expect(grow!.memoryMb.max).toBeGreaterThan(48 * 1.048576);
    expect(grow!.recommendation.memory).toBe(256);
    expect(events[3]).toMatchObject({ event: "end", operators: 2, failed: 0, interrupted: false });

    // the plugin with its own node_modules
    expect(readFileSync(join(metrics, "shout.txt"), "utf8")).toBe("GROW!\nSPIN!");

    // each broken plugin: one warning naming it and its hook, for the whole run
    const warnings = run.stderr.split("\n").filter((line) => line.startsWith("warning:"));
    expect(warnings.filter((w) => w.includes("flaky"))).toEqual([expect.stringContaining("flaky: read failed: flaky read 3")]);
    expect(warnings.filter((w) => w.includes("broken-sink: write failed: disk on fire"))).toHaveLength(1);
  });

  dockerTest("a collector plugin's options reach it in the sampling thread", async () => {
    const run = await binary(["run", pipeline, input, "--sinks", "csv", "--metrics_dir", join(dir, "m2"), "--collectors", "cgroup", "--collector-plugin", "./plugins/proc-status.ts", "--proc-status-proc-root", "/nonexistent"]);
    expect(run.code).toBe(0);
    // unavailable at open, or (pid not known yet at open) a series that ends at its first read: no value either way
    const csv = readFileSync(join(dir, "m2/grow_final_result.csv"), "utf8").trim().split("\r\n");
    const at = csv[0]!.split(",").indexOf("proc.rss_bytes");
    expect(csv.length).toBeGreaterThan(10);
    expect(at < 0 || csv.slice(1).every((line) => line.split(",")[at] === "")).toBe(true);
  });

  dockerTest("the CPOST-compatible form takes --collector-plugin and --sink-plugin too", async () => {
    const before = events.length;
    const run = await binary([pipeline, input, "--force", "cont", "--collector-plugin", "./plugins/proc-status.ts", "--sink-plugin", "./plugins/webhook.ts", "--webhook-url", hook()]);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain("Operator grow Summary");
    expect(events.slice(before).map((e) => `${e.event}${e.operator ? ` ${e.operator}` : ""}`)).toEqual(["start", "operator grow", "operator spin", "end"]);
    expect(events[before]).toMatchObject({ collectors: ["cgroup", "blkio", "proc-status"] });
    const broken = await binary([pipeline, input, "--collector-plugin", "./syntax.ts"]);
    expect(broken.code).toBe(2);
    expect(broken.stderr).toContain("plugin ./syntax.ts: cannot load: ");
  });

  dockerTest("cpost replay feeds a recording to a sink plugin as the live run fed it", async () => {
    const recording = join(dir, "replay.msgpack");
    const before = events.length;
    const live = await binary(["run", pipeline, input, "--sinks", "csv", "--metrics_dir", join(dir, "m3"), "--record", recording, "--sink-plugin", "./plugins/webhook.ts", "--webhook-url", hook()]);
    expect(live.code).toBe(0);
    const liveEvents = events.slice(before);
    const replayed = await binary(["replay", recording, "--sinks", "csv", "--metrics_dir", join(dir, "m4"), "--sink-plugin", "./plugins/webhook.ts", "--webhook-url", hook()]);
    expect(replayed.code).toBe(0);
    const replayEvents = events.slice(before + liveEvents.length);
    expect(replayEvents.map((e) => `${e.event}${e.operator ? ` ${e.operator}` : ""}`)).toEqual(["start", "operator grow", "operator spin", "end"]);
    // the same operators, statuses, sample counts and figures as the live run sent
    const facts = (e: Record<string, unknown>) => ({ operator: e.operator, status: e.status, samples: e.samples, memoryMb: e.memoryMb, recommendation: e.recommendation });
    expect(replayEvents.slice(1, 3).map(facts)).toEqual(liveEvents.slice(1, 3).map(facts));
    expect(readFileSync(join(dir, "m4/grow_final_result.csv"), "utf8")).toBe(readFileSync(join(dir, "m3/grow_final_result.csv"), "utf8"));
    const collector = await binary(["replay", recording, "--collector-plugin", "./plugins/proc-status.ts"]);
    expect(collector.code).toBe(2);
    expect(collector.stderr).toContain("cpost replay feeds recorded samples to sinks; it runs no collector");
  });

  const loadError = async (args: string[], env: Record<string, string | undefined> = {}) => {
    const run = await binary(["run", pipeline, input, ...args], env);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe(""); // stopped before anything ran
    return run.stderr;
  };

  test("a plugin with a syntax error: exit 2 naming the file, line and column", async () => {
    const stderr = await loadError(["--collector-plugin", "./syntax.ts"]);
    expect(stderr).toContain("cpost: plugin ./syntax.ts: cannot load: ");
    expect(stderr).toContain(`${join(dir, "syntax.ts")}:4:2: Expected ")" but found ";"`);
  }, 120_000);

  test("no default export, a wrong shape, a throw at load, a missing file: exit 2 naming the file and what is wrong", async () => {
    expect(await loadError(["--sink-plugin", "./no-export.ts"])).toContain("plugin ./no-export.ts: has no default export");
    const shape = await loadError(["--collector-plugin", "./not-a-plugin.ts"]);
    expect(shape).toContain("plugin ./not-a-plugin.ts: is not a valid plugin: ");
    expect(shape).toContain(`name "Not A Name" is not a name of lowercase letters`);
    expect(shape).toContain(`metrics[0].unit "furlongs" is not one of`);
    expect(await loadError(["--collector-plugin", "./throws-at-load.ts"])).toContain("plugin ./throws-at-load.ts: cannot load: no config file here");
    expect(await loadError(["--sink-plugin", "./nowhere.ts"])).toContain("plugin ./nowhere.ts: cannot load: no such file");
  }, 120_000);

  test("a plugin cannot take a built-in's name, nor be loaded as the other kind, nor run without its required option", async () => {
    expect(await loadError(["--sink-plugin", "./clash.ts"])).toContain(`plugin ./clash.ts: its name "csv" is the built-in sink csv's; a plugin cannot replace a built-in`);
    expect(await loadError(["--collector-plugin", "./plugins/webhook.ts"])).toContain("plugin ./plugins/webhook.ts is a sink plugin, not a collector");
    const missing = await loadError(["--sink-plugin", "./plugins/webhook.ts"]);
    expect(missing).toContain("--webhook-url is required by sink plugin webhook (./plugins/webhook.ts)");
    expect(await loadError(["--sink-plugin", "./plugins/webhook.ts", "--webhook-url", hook(), "--webhook-colour", "red"])).toContain("--webhook-colour: sink plugin webhook has no option colour");
  }, 120_000);

  test("CPOST_PLUGIN_PATH: plugins are listed by `cpost plugins` and used when named in --sinks", async () => {
    const env = { CPOST_PLUGIN_PATH: `${join(dir, "plugins")}:${join(dir, "shout")}` };
    const list = await binary(["plugins", "--json"], env);
    expect(list.code).toBe(0);
    const listing = JSON.parse(list.stdout) as PluginListing[];
    expect(listing.filter((p) => p.from !== "built-in").map((p) => `${p.kind} ${p.name} ${p.from}`)).toEqual([
      `collector proc-status ${join(dir, "plugins/proc-status.ts")}`,
      `sink webhook ${join(dir, "plugins/webhook.ts")}`,
      `sink shout ${join(dir, "shout/index.js")}`,
    ]);
    // found by name, checked by its own create: a bad URL stops the run before the engine is asked anything
    const run = await binary(["run", pipeline, input, "--sinks", "table,webhook", "--webhook-url", "ftp://nowhere"], env);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("webhook: create failed: --webhook-url ftp://nowhere: not an http(s) URL");
    // without the path, the name is unknown
    const unknown = await binary(["run", pipeline, input, "--sinks", "webhook"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain(`unknown sink "webhook"`);
  }, 120_000);

  test("cpost plugins lists every built-in with its metrics and options, and loaded plugins", async () => {
    const run = await binary(["plugins", "--collector-plugin", "./plugins/proc-status.ts", "--sink-plugin", "./plugins/webhook.ts"]);
    expect(run.code).toBe(0);
    for (const name of ["cgroup", "blkio", "nvml", "host", "table", "csv", "msgpack", "elasticsearch (alias es)"]) expect(run.stdout).toContain(`  ${name}  [built-in]`);
    expect(run.stdout).toContain("cpu.percent");
    expect(run.stdout).toContain("--es-url");
    expect(run.stdout).toContain(`  proc-status  [plugin ${join(dir, "plugins/proc-status.ts")}]`);
    expect(run.stdout).toContain("proc.peak_rss_bytes");
    expect(run.stdout).toMatch(/--webhook-url +where to POST the events \(http or https\) \(required\)/);
    expect(run.stdout).toMatch(/--proc-status-proc-root +where the host's \/proc is mounted \(default \/proc\)/);
  }, 120_000);
});

describe("the loader, in-process", () => {
  test("flags are found in every spelling; CPOST_PLUGIN_PATH lists files, plugin dirs' index files, not tests or declarations", () => {
    expect(scanPluginFlags(["run", "--collector-plugin", "a.ts", "--sink_plugin=b.js", "--collector-plugin=c.ts", "--", "--sink-plugin", "d.ts"])).toEqual({ collectorFiles: ["a.ts", "c.ts"], sinkFiles: ["b.js"] });
    expect(() => scanPluginFlags(["--sink-plugin"])).toThrow("--sink-plugin needs a plugin file");
    const path = mkdtempSync(join(tmpdir(), "cpost-plugin-path-"));
    try {
      for (const f of ["a.ts", "b.mjs", "c.d.ts", "d.test.ts", "notes.md", "sub/index.ts", "node_modules/x/index.js", "lib/helper.ts"]) write(join(path, f), "");
      expect(pluginPathFiles(`${path}:${files.flaky}`).map((f) => f.replace(`${path}/`, ""))).toEqual(["a.ts", "b.mjs", "sub/index.ts", files.flaky]);
      expect(() => pluginPathFiles(join(path, "missing"))).toThrow("CPOST_PLUGIN_PATH: ");
    } finally {
      rmSync(path, { recursive: true, force: true });
    }
  });

  test("two files with one name is an error; the same file twice is loaded once", async () => {
    const twin = write(join(dir, "twin/webhook.ts"), readFileSync(files.webhook, "utf8"));
    await expect(loadPlugins({ sinkFiles: [files.webhook, twin] })).rejects.toThrow(`plugins ${files.webhook} and ${twin} are both named "webhook"`);
    const once = await loadPlugins({ sinkFiles: [files.webhook], pluginPath: join(dir, "plugins") });
    expect(once.plugins.map((p) => `${p.name} ${p.enabled}`)).toEqual(["webhook true", "proc-status false"]);
    expect(once.enabled("sink")).toEqual(["webhook"]);
  });

  test("option values: defaults, required, unknown", async () => {
    const plugin = { kind: "sink" as const, name: "webhook", display: "w.ts", definition: { options: { url: { description: "u", required: true }, "timeout-ms": { description: "t", default: "5000" } } } };
    expect(optionValues(plugin, { "webhook-url": "http://x", "csv-y": "z" })).toEqual({ url: "http://x", "timeout-ms": "5000" });
    expect(() => optionValues(plugin, {})).toThrow(CpostError);
    expect(() => optionValues(plugin, { "webhook-url": "u", "webhook-x": "1" })).toThrow("--webhook-x: sink plugin webhook has no option x");
  });

  test("errors are CpostErrors with code plugin (exit 2)", async () => {
    const error = await importPlugin(files.noExport, "./no-export.ts").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CpostError);
    expect((error as CpostError).code).toBe("plugin");
    expect((error as CpostError).hint).toContain("export default defineCollector");
  });

  test("docs/plugins.md shows the example plugins as they are", () => {
    const doc = readFileSync(join(REPO, "docs/plugins.md"), "utf8");
    for (const example of ["proc-status.ts", "webhook.ts"]) expect(doc).toContain(`\`\`\`ts\n${readFileSync(join(REPO, "examples/plugins", example), "utf8")}\`\`\``);
  });

  test("every built-in sink is written with defineSink under its registry name, and each option it declares is one its source reads", async () => {
    const files = readdirSync(join(REPO, "plugins"), { recursive: true, withFileTypes: true }).filter((f) => f.isFile() && !f.name.endsWith(".test.ts"));
    const sources = files.map((f) => readFileSync(join(f.parentPath, f.name), "utf8")).join("\n");
    for (const [name, load] of Object.entries(builtinSinks)) {
      const definition = (await load()).default;
      expect(`${definition.name} ${typeof definition.create} ${typeof definition.description}`).toBe(`${name} function string`);
      for (const option of Object.keys(definition.options ?? {})) {
        const read = sources.includes(`"${option}"`) || new RegExp(`options\\.${option}\\b`).test(sources);
        expect(read ? option : `${name}: ${option} (not read)`).toBe(option);
      }
    }
  });
});

// the example sink through the shared sink contract, as its author would run it
const contractEvents: Array<{ event: string; samples?: number }> = [];
let contractServer: ReturnType<typeof Bun.serve> | undefined;
sinkContract(
  "webhook (example plugin)",
  (ctx) => {
    contractEvents.length = 0;
    contractServer ??= Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: async (r) => (contractEvents.push((await r.json()) as { event: string }), new Response("ok")) });
    return pluginSink(join(REPO, "examples/plugins/webhook.ts"), ctx, { url: `http://127.0.0.1:${contractServer.port}/contract` });
  },
  { samplesKept: () => contractEvents.reduce((sum, e) => sum + (e.event === "operator" ? e.samples! : 0), 0) },
);

dockerTest("a plugin author runs the contract suites on their own plugins with `bun test`, importing cpost/contract", async () => {
  const author = join(dir, "author");
  mkdirSync(join(author, "node_modules"), { recursive: true });
  symlinkSync(REPO, join(author, "node_modules/cpost")); // as `bun add -d cpost` would, without a registry
  copyFileSync(files.procStatus, join(author, "proc-status.ts"));
  copyFileSync(files.webhook, join(author, "webhook.ts"));
  write(
    join(author, "plugins.test.ts"),
    `import { afterAll } from "bun:test";
import { collectorContract, containerTarget, pluginCollector, pluginSink, sinkContract } from "cpost/contract";
const events: Array<{ event: string; samples: number }> = [];
const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: async (r) => (events.push(await r.json()), new Response("ok")) });
afterAll(() => server.stop(true));
collectorContract("proc-status", () => pluginCollector(import.meta.dir + "/proc-status.ts"), { target: () => containerTarget() });
sinkContract("webhook", (ctx) => ((events.length = 0), pluginSink(import.meta.dir + "/webhook.ts", ctx, { url: "http://127.0.0.1:" + server.port + "/" })), {
  samplesKept: () => events.filter((e) => e.event === "operator").reduce((sum, e) => sum + e.samples, 0),
});
`,
  );
  const run = await runProcess([BUN, "test", "plugins.test.ts"], { cwd: author });
  const report = run.stdout + run.stderr;
  expect(report).toContain("collector contract: proc-status > the target goes away");
  expect(report).toContain("sink contract: webhook > a very long operator");
  expect(report).toMatch(/\b12 pass\b/);
  expect(report).toMatch(/\b0 fail\b/);
  expect(run.code).toBe(0);
});

test("a webhook that answers 503: the sink throws, naming the answer", async () => {
  const plugins = await loadPlugins({ sinkFiles: [join(REPO, "examples/plugins/webhook.ts")] });
  const sink = await sinkFactoryOf(plugins.sink("webhook")!)({ options: { "webhook-url": hook("/fail") } });
  await expect(Promise.resolve(sink.end({ results: [], summaries: [], endedAtMs: 0, interval: { target: 1, p50: 1, p99: 1, samples: 0 }, interrupted: false }))).rejects.toThrow("POST http://127.0.0.1");
  contractServer?.stop(true);
});
