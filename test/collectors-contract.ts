/**
 * The contract every collector passes (built-in or plugin): the Collector and
 * Probe lifecycle of core/contracts/types.ts, driven as the sampler drives it, against
 * a live target. Use it from a test file:
 *
 *   collectorContract("cgroup", () => createCgroupCollector(), { target: () => containerTarget() });
 *   collectorContract("proc-status", () => pluginCollector("./proc-status.ts"), { target: () => containerTarget() });
 *
 * Scenarios: the collector describes itself (names, units, kinds); a target
 * that does not exist is unavailable or ends at once, without a throw; on a
 * live target a probe reports declared metrics, says its source, writes only
 * its own slots of the row, keeps counters from going down, and two probes
 * on one target read independently; when the target goes away `read`
 * returns false (never throws) and `close` and `dispose` are safe; the
 * sampling thread can rebuild the collector from its `portable` recipe.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { builtinCollectors, collectorOfModule, type CollectorModule } from "../collectors/index.ts";
import { connectDocker, type DockerClient } from "../core/engine/docker.ts";
import { collectorOf, createPluginCollector, importPlugin, optionValues } from "../core/registry/plugin-loader.ts";
import { isUnavailable, type Collector, type MetricBuffer, type MetricUnit, type Probe, type Target } from "../core/contracts/types.ts";
import { dockerTest, TEST_IMAGE } from "./support.ts";

/** A target the collector can open, and how to make it go away. */
export interface LiveTarget {
  target: Target;
  /** Ends it (the container exits, the process dies); absent: it cannot go away (the host). */
  end?(): Promise<void>;
  /** Removes what was made for it; called once, after end. */
  remove(): Promise<void>;
}

/** How the contract gets targets for the collector under test. */
export interface CollectorContractOptions {
  /** The registry the sampling thread would rebuild a built-in from (default collectors/index.ts's). */
  registry?: Record<string, () => Promise<CollectorModule>>;
  /** Makes a fresh live target (called twice: one shared, one that is ended). */
  target(): Promise<LiveTarget>;
  /** A target that does not exist; null when the collector watches something that always exists. Default: a made-up container whose process has exited. */
  missing?: Target | null;
  /** The targets are containers: the tests need a Docker engine (skipped without one, failed in CI). Default true. */
  docker?: boolean;
  /** Reads per scenario (default 200, 1 ms apart). */
  reads?: number;
  /** Per-test timeout, ms (default 60 000). */
  timeoutMs?: number;
}

const UNITS: readonly MetricUnit[] = ["ns", "percent", "bytes", "count", "ops", "watts", "celsius", "mhz", "us", "ratio"];
/** Written around the probe's slots: a probe that ignores `base` or its width overwrites it. */
const GUARD = -7.25e-300;
const LABEL = "cpost.test.collector-contract";

let engine: Promise<DockerClient> | undefined;

/** A running container of `image` (default the test image) for the contract; labelled, removed by `remove`. */
export async function containerTarget(options: { image?: string; command?: string[]; operator?: string } = {}): Promise<LiveTarget> {
  const docker = await (engine ??= connectDocker());
  const id = await docker.createContainer({
    image: options.image ?? TEST_IMAGE,
    // memory held and a little CPU, so most metrics have something to show
    cmd: options.command ?? ["sh", "-c", "cpost-workload mem 16 120 & while true; do cpost-workload sleep-ms 50; done"],
    env: {},
    labels: { [LABEL]: String(process.pid) },
    mounts: [],
  });
  await docker.startContainer(id);
  const state = await docker.inspectContainer(id);
  return {
    target: { kind: "container", containerId: id, pid: state.pid, engine: docker.info.engine, cgroupDriver: docker.info.cgroupDriver, operator: options.operator ?? "contract" },
    async end() {
      await docker.killContainer(id, "SIGKILL").catch(() => undefined);
      await docker.waitContainer(id);
    },
    async remove() {
      await docker.removeContainer(id, { force: true }).catch(() => undefined);
    },
  };
}

/** The whole host: a target that is always there. */
export async function hostTarget(): Promise<LiveTarget> {
  return { target: { kind: "host", containerId: "", pid: 0, engine: "docker", operator: "" }, remove: async () => undefined };
}

/** A plugin file as the binary loads it (same checks, same wrapping), with `--<name>-<option>` values. */
export async function pluginCollector(file: string, options: Record<string, string> = {}): Promise<Collector> {
  const definition = await importPlugin(file);
  if (!("open" in definition)) throw new Error(`${file} is a sink plugin, not a collector`);
  const given = Object.fromEntries(Object.entries(options).map(([k, v]) => [`${definition.name}-${k}`, v]));
  return collectorOf(definition, file, optionValues({ kind: "collector", name: definition.name, display: file, definition }, given));
}

/** A container id that no engine has, with the pid of a process that has exited. */
async function missingTarget(): Promise<Target> {
  const gone = Bun.spawn(["true"]);
  await gone.exited;
  return { kind: "container", containerId: "c0de".repeat(16), pid: gone.pid, engine: "docker", cgroupDriver: "cgroupfs", operator: "missing" };
}

/** A row as the sampler hands it: the probe's slots NaN at `base`, guards on both sides. */
function row(probe: Probe) {
  const base = 3;
  const values = new Float64Array(base + probe.metrics.length + 3);
  const buffer: MetricBuffer = { values, base, monotonicMs: 0 };
  return {
    buffer,
    read(): boolean {
      values.fill(GUARD);
      values.fill(NaN, base, base + probe.metrics.length);
      buffer.monotonicMs = performance.now();
      const live = probe.read(buffer);
      for (let i = 0; i < values.length; i++) {
        if (i >= base && i < base + probe.metrics.length) continue;
        if (values[i] !== GUARD) throw new Error(`read wrote slot ${i - base} of the row, outside its own ${probe.metrics.length} slots (base ${base})`);
      }
      return live;
    },
    slots: () => Array.from(values.subarray(base, base + probe.metrics.length)),
  };
}

function mustOpen(collector: Collector, target: Target): Probe {
  const opened = collector.open(target);
  if (isUnavailable(opened)) throw new Error(`${collector.name} is unavailable on the live target: ${opened.unavailable}`);
  return opened;
}

/** Registers the collector contract tests for the collector `make` creates. */
export function collectorContract(name: string, make: () => Collector | Promise<Collector>, options: CollectorContractOptions): void {
  const timeout = options.timeoutMs ?? 60_000;
  const reads = options.reads ?? 200;
  const needsDocker = options.docker ?? true;
  const it = (title: string, fn: () => Promise<void>) => (needsDocker ? dockerTest(title, fn, timeout) : test(title, fn, timeout));
  let shared: LiveTarget | undefined;
  const live = async () => (shared ??= await options.target());

  describe(`collector contract: ${name}`, () => {
    afterAll(async () => {
      await shared?.remove();
    });

    test("describes itself: a name as users type it, a description, metrics with dotted names, known units and kinds", async () => {
      const collector = await make();
      expect(collector.name).toMatch(/^[a-z][a-z0-9-]*$/);
      expect(collector.description.length).toBeGreaterThan(0);
      expect(collector.metrics.length).toBeGreaterThan(0);
      const keys = new Set<string>();
      for (const m of collector.metrics) {
        expect(m.name).toMatch(/^[a-z0-9_]+(\.[a-z0-9_]+)+$/);
        expect(UNITS).toContain(m.unit);
        expect(["gauge", "counter"]).toContain(m.kind);
        const key = `${m.name}[${m.device ?? ""}]`;
        expect(keys.has(key)).toBe(false);
        keys.add(key);
      }
    });

    if (options.missing !== null) {
      test("a target that does not exist: unavailable with a reason, or a probe that ends at once; never a throw", async () => {
        const collector = await make();
        const opened = collector.open(options.missing ?? (await missingTarget()));
        if (isUnavailable(opened)) {
          expect(opened.unavailable.length).toBeGreaterThan(0);
          return;
        }
        const r = row(opened);
        let live = true;
        for (let i = 0; i < 20 && live; i++) live = r.read();
        expect(live).toBe(false);
        opened.close();
      }, timeout);
    }

    it("a live target: declared metrics, a source, only its own slots, counters that never go down", async () => {
      const collector = await make();
      const target = await live();
      const probe = mustOpen(collector, target.target);
      try {
        const declared = new Set(collector.metrics.map((m) => m.name));
        for (const m of probe.metrics) expect(declared.has(m.name) ? m.name : `${m.name} (not declared)`).toBe(m.name);
        expect(probe.source.length).toBeGreaterThan(0);
        const r = row(probe);
        const last = probe.metrics.map(() => NaN);
        let measured = 0;
        for (let i = 0; i < reads; i++) {
          expect(r.read()).toBe(true);
          r.slots().forEach((v, k) => {
            expect(typeof v).toBe("number");
            expect(v === Infinity || v === -Infinity).toBe(false);
            if (Number.isNaN(v)) return;
            measured++;
            const metric = probe.metrics[k]!;
            if (metric.kind === "counter" && !Number.isNaN(last[k]!)) {
              if (v < last[k]!) throw new Error(`counter ${metric.name} went down: ${last[k]} -> ${v}`);
            }
            last[k] = v;
          });
          await Bun.sleep(1);
        }
        expect(measured).toBeGreaterThan(0);
      } finally {
        probe.close();
      }
    });

    it("two probes on one target read independently", async () => {
      const collector = await make();
      const target = await live();
      const first = mustOpen(collector, target.target);
      const second = mustOpen(collector, target.target);
      const [a, b] = [row(first), row(second)];
      for (let i = 0; i < 20; i++) {
        expect(a.read()).toBe(true);
        expect(b.read()).toBe(true);
      }
      first.close();
      for (let i = 0; i < 5; i++) expect(b.read()).toBe(true);
      second.close();
    });

    it("the target goes away: read returns false (never throws); close and dispose are safe", async () => {
      const collector = await make();
      const target = await options.target();
      try {
        const probe = mustOpen(collector, target.target);
        const r = row(probe);
        expect(r.read()).toBe(true);
        if (!target.end) {
          probe.close();
          collector.dispose?.();
          return console.log(`  (${name}: its target cannot go away; checked close and dispose only)`);
        }
        await target.end();
        const deadline = performance.now() + 5000;
        let live = true;
        while (live && performance.now() < deadline) {
          live = r.read();
          if (live) await Bun.sleep(5);
        }
        expect(live).toBe(false);
        probe.close();
        collector.dispose?.();
      } finally {
        await target.remove();
      }
    });

    test("the sampling thread can rebuild it from its portable recipe (or, a built-in, from its registry name)", async () => {
      const collector = await make();
      const registry = options.registry ?? builtinCollectors;
      const recipe = collector.portable ?? (Object.hasOwn(registry, collector.name) ? { module: collector.name } : undefined);
      if (!recipe) throw new Error(`${collector.name} has no portable recipe: it would be sampled on the main thread`);
      // as core/sampling/sampler-worker.ts builds it
      const load = registry[recipe.module];
      let rebuilt: Collector;
      if (load) rebuilt = collectorOfModule(recipe.module, await load(), recipe.options);
      else rebuilt = await createPluginCollector(recipe.module, recipe.options);
      expect(rebuilt.name).toBe(collector.name);
      expect(rebuilt.metrics.map((m) => m.name)).toEqual(collector.metrics.map((m) => m.name));
      expect(JSON.parse(JSON.stringify(recipe))).toEqual(recipe); // it crosses to the thread by structured clone
    });
  });
}

/** How one registered collector is set up for the contract; the default: its module's default export, on a real container. */
export interface CollectorSetup {
  make?: () => Collector | Promise<Collector>;
  options?: Partial<CollectorContractOptions>;
}

/**
 * The contract for every collector of a registry (`name -> () => import(...)`,
 * as collectors/index.ts): a collector is tested by being registered; `setups`
 * only says where one needs more than a container to watch; `registry` is
 * where the sampling thread would rebuild them from (the same, by default).
 */
export function collectorContracts(
  collectors: Record<string, () => Promise<CollectorModule>>,
  setups: Record<string, CollectorSetup> = {},
  registry: Record<string, () => Promise<CollectorModule>> = collectors,
): void {
  for (const [name, load] of Object.entries(collectors)) {
    const setup = setups[name] ?? {};
    collectorContract(name, setup.make ?? (async () => collectorOfModule(name, await load())), { target: () => containerTarget(), registry, ...setup.options });
  }
}
