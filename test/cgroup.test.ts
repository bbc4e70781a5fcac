/**
 * The cgroup collector: cgroup v2 on a fixture tree of real v2 files
 * (test/fixtures/cgroup-v2, captured from a v2 VM), layouts of the engines
 * and drivers on small trees made here, and cgroup v1 on real containers of
 * the real Docker engine. Expected numbers are read from the same files with
 * a plain text parser, never written into the test.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { capturedReadsOf, NOT_READ, reread } from "../collectors/cgroup/files.ts";
import { createCgroupCollector } from "../collectors/cgroup/index.ts";
import { candidatePaths, detectLayout } from "../collectors/cgroup/paths.ts";
import { isUnavailable, type MetricBuffer, type Probe, type Target } from "../core/contracts/types.ts";
import { dockerTest, REPO } from "./support.ts";
import { pidOf, removeContainer, removeMine, startContainer, until } from "./test-containers.ts";

const FIXTURE = join(REPO, "test/fixtures/cgroup-v2");
const V2_ROOT = join(FIXTURE, "sys/fs/cgroup");
const V2_PROC = join(FIXTURE, "proc");
const DOCKER_ID = readdirSync(join(V2_ROOT, "docker"))[0]!;
const SYSTEMD_ID = readdirSync(join(V2_ROOT, "system.slice"))[0]!.replace(/^docker-(.*)\.scope$/, "$1");

const temps: string[] = [];
afterAll(async () => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
  await removeMine();
});

/** A private copy of the v2 fixture, for tests that change files. */
function copyOfFixture(): { cgroupRoot: string; procRoot: string; dir: string } {
  const root = mkdtempSync(join(tmpdir(), "cpost-cgroup-"));
  temps.push(root);
  cpSync(FIXTURE, root, { recursive: true });
  const cgroupRoot = join(root, "sys/fs/cgroup");
  return { cgroupRoot, procRoot: join(root, "proc"), dir: join(cgroupRoot, "docker", DOCKER_ID) };
}

function target(id: string, extra: Partial<Target> = {}): Target {
  return { kind: "container", containerId: id, pid: 0, engine: "docker", cgroupDriver: "cgroupfs", operator: "op", ...extra };
}

/** The probes' clock for cpu.percent: readAt moves it to the sample's time. */
let clockMs = 0;

function openProbe(t: Target, roots: { cgroupRoot: string; procRoot: string }): Probe {
  const opened = createCgroupCollector({ ...roots, clock: () => clockMs }).open(t);
  if (isUnavailable(opened)) throw new Error(opened.unavailable);
  return opened;
}

/** Reads once at `monotonicMs`; returns metric name -> value. */
function readAt(probe: Probe, monotonicMs: number): { alive: boolean; values: Record<string, number> } {
  const out: MetricBuffer = { values: new Float64Array(probe.metrics.length + 3).fill(-1), base: 3, monotonicMs };
  clockMs = monotonicMs;
  const alive = probe.read(out);
  return { alive, values: Object.fromEntries(probe.metrics.map((m, i) => [m.name, out.values[3 + i]!])) };
}

/** The plain reading of a flat keyed file: `key value` per line. */
function keyed(path: string): Record<string, number> {
  return Object.fromEntries(readFileSync(path, "utf8").trim().split("\n").map((l) => l.split(" ")).map(([k, v]) => [k!, Number(v)]));
}
const one = (path: string): string => readFileSync(path, "utf8").trim();
const avg10 = (path: string, kind: "some" | "full"): number => Number(/avg10=([\d.]+)/.exec(readFileSync(path, "utf8").split("\n").find((l) => l.startsWith(kind))!)![1]);
const memTotal = (procRoot: string): number => Number(/MemTotal:\s+(\d+)/.exec(readFileSync(join(procRoot, "meminfo"), "utf8"))![1]) * 1024;

describe("cgroup v2 (real v2 files)", () => {
  test("finds a Docker cgroupfs container and reads every metric its files hold", () => {
    const probe = openProbe(target(DOCKER_ID), { cgroupRoot: V2_ROOT, procRoot: V2_PROC });
    const dir = join(V2_ROOT, "docker", DOCKER_ID);
    expect(probe.source).toBe(`cgroup v2 ${dir}`);
    const { alive, values } = readAt(probe, 1000);
    expect(alive).toBe(true);
    const cpu = keyed(join(dir, "cpu.stat"));
    const mem = keyed(join(dir, "memory.stat"));
    const current = Number(one(join(dir, "memory.current")));
    expect(values).toEqual({
      "cpu.usage_ns": cpu.usage_usec! * 1000,
      "cpu.percent": NaN, // no previous sample yet
      "cpu.user_ns": cpu.user_usec! * 1000,
      "cpu.system_ns": cpu.system_usec! * 1000,
      "cpu.nr_throttled": cpu.nr_throttled!,
      "cpu.throttled_ns": cpu.throttled_usec! * 1000,
      "memory.usage_bytes": current,
      "memory.working_set_bytes": current - mem.inactive_file!,
      "memory.rss_bytes": mem.anon!,
      "memory.cache_bytes": mem.file!,
      "memory.peak_bytes": Number(one(join(dir, "memory.peak"))),
      "memory.limit_bytes": one(join(dir, "memory.max")) === "max" ? memTotal(V2_PROC) : Number(one(join(dir, "memory.max"))),
      "memory.oom_kills": keyed(join(dir, "memory.events")).oom_kill!,
      "pids.current": Number(one(join(dir, "pids.current"))),
      "psi.cpu.some_avg10": avg10(join(dir, "cpu.pressure"), "some"),
      "psi.cpu.full_avg10": avg10(join(dir, "cpu.pressure"), "full"),
      "psi.memory.some_avg10": avg10(join(dir, "memory.pressure"), "some"),
      "psi.memory.full_avg10": avg10(join(dir, "memory.pressure"), "full"),
      "psi.io.some_avg10": avg10(join(dir, "io.pressure"), "some"),
      "psi.io.full_avg10": avg10(join(dir, "io.pressure"), "full"),
      "cpu.nr_periods": cpu.nr_periods!,
    });
    probe.close();
  });

  test("cpu.percent is Δusage over Δwall time, 100 = one core, back to the newest sample 100 ms old; none before 50 ms", () => {
    const roots = copyOfFixture();
    const probe = openProbe(target(DOCKER_ID), roots);
    const statPath = join(roots.dir, "cpu.stat");
    const text = readFileSync(statPath, "utf8");
    const before = keyed(statPath).usage_usec!;
    const at = (ms: number, usedMs: number) => {
      writeFileSync(statPath, text.replace(`usage_usec ${before}`, `usage_usec ${before + usedMs * 1000}`));
      return readAt(probe, ms).values;
    };
    expect(at(1000, 0)["cpu.percent"]).toBeNaN(); // nothing before it
    expect(at(1030, 15)["cpu.percent"]).toBeNaN(); // 30 ms: one scheduler tick would be 3 % of it
    expect(at(1060, 45)["cpu.percent"]).toBeCloseTo((45 / 60) * 100, 9); // 60 ms, all of the series
    const late = at(1500, 750); // the newest sample at least 100 ms older is the one at 1060
    expect(late["cpu.percent"]).toBeCloseTo(((750 - 45) / (1500 - 1060)) * 100, 9);
    expect(late["cpu.usage_ns"]).toBe((before + 750_000) * 1000);
    probe.close();
  });

  test("cpu.percent spans 100 ms, so the kernel's tick-sized steps in the usage counter do not show as load", () => {
    const roots = copyOfFixture();
    const probe = openProbe(target(DOCKER_ID), roots);
    const statPath = join(roots.dir, "cpu.stat");
    const text = readFileSync(statPath, "utf8");
    const base = keyed(statPath).usage_usec!;
    const percents: number[] = [];
    // one busy core whose usage the kernel books in 20 ms steps every other 10 ms interval
    for (let i = 0; i <= 30; i++) {
      const usage = base + Math.floor(i / 2) * 20_000;
      writeFileSync(statPath, text.replace(`usage_usec ${base}`, `usage_usec ${usage}`));
      percents.push(readAt(probe, 1000 + i * 10).values["cpu.percent"]!);
    }
    expect(percents[0]).toBeNaN();
    for (const p of percents.slice(10)) expect(Math.abs(p - 100)).toBeLessThanOrEqual(10);
    probe.close();
  });

  test("usage every sample; memory.stat at most every ~10 ms; peak and pids about every 100 ms; PSI and the limit about once a second", () => {
    const roots = copyOfFixture();
    const probe = openProbe(target(DOCKER_ID), roots);
    const first = readAt(probe, 1000).values;
    const soon = readAt(probe, 1001).values;
    expect(soon["memory.usage_bytes"]).toBe(first["memory.usage_bytes"]!);
    expect(soon["cpu.usage_ns"]).toBe(first["cpu.usage_ns"]!); // v2 cpu.stat holds all CPU figures: every sample
    for (const name of ["memory.rss_bytes", "memory.working_set_bytes", "memory.peak_bytes", "pids.current", "memory.limit_bytes", "psi.cpu.some_avg10"]) {
      expect(soon[name]).toBeNaN();
    }
    const later = readAt(probe, 1010).values;
    expect(later["memory.rss_bytes"]).toBe(first["memory.rss_bytes"]!);
    expect(later["memory.working_set_bytes"]).toBe(first["memory.working_set_bytes"]!);
    for (const name of ["memory.peak_bytes", "pids.current", "psi.cpu.some_avg10"]) expect(later[name]).toBeNaN();
    const tenth = readAt(probe, 1100).values;
    expect(tenth["memory.peak_bytes"]).toBe(first["memory.peak_bytes"]!);
    expect(tenth["pids.current"]).toBe(first["pids.current"]!);
    expect(tenth["psi.cpu.some_avg10"]).toBeNaN();
    expect(readAt(probe, 2100).values["psi.cpu.some_avg10"]).toBe(first["psi.cpu.some_avg10"]!);
    probe.close();
  });

  test("captured reads: bytes the sampler's native loop read decode to the row read() makes; memory.stat only when the loop read it", () => {
    const roots = copyOfFixture();
    const reading = openProbe(target(DOCKER_ID), roots);
    const capturing = openProbe(target(DOCKER_ID), roots);
    const captured = capturedReadsOf(capturing)!;
    expect(captured).toBeDefined();
    expect(captured.files.map((c) => basename(c.file.path))).toEqual(["cpu.stat", "memory.current", "memory.stat"]);
    readAt(reading, 1000);
    readAt(capturing, 1000);
    // the slower tiers (peak, pids, limit, PSI) stay read()'s: due ~100 ms after the first reading
    expect(captured.liveDueMs()).toBeCloseTo(1097.5, 6);
    const decodeAt = (monotonicMs: number, readStat: boolean) => {
      for (const c of captured.files) {
        if (c.everyMs > 0 && !readStat) c.file.length = NOT_READ;
        else reread(c.file); // what the loop's pread does
      }
      const out: MetricBuffer = { values: new Float64Array(capturing.metrics.length + 3).fill(-1), base: 3, monotonicMs };
      clockMs = monotonicMs;
      const alive = captured.decode(out, monotonicMs);
      return { alive, values: Object.fromEntries(capturing.metrics.map((m, i) => [m.name, out.values[3 + i]!])) };
    };
    writeFileSync(join(roots.dir, "memory.current"), "123456789\n");
    const expected = readAt(reading, 1010);
    const decoded = decodeAt(1010, true);
    expect(decoded).toEqual(expected);
    expect(decoded.values["memory.usage_bytes"]).toBe(123456789);
    expect(decoded.values["memory.working_set_bytes"]).toBe(123456789 - keyed(join(roots.dir, "memory.stat")).inactive_file!);
    expect(captured.files[2]!.dueMs()).toBeCloseTo(1017.5, 6);
    const between = decodeAt(1011, false);
    expect(between.values["memory.usage_bytes"]).toBe(123456789);
    expect(between.values["memory.working_set_bytes"]).toBeNaN();
    // a cgroup that went: every file failed
    for (const c of captured.files) c.file.length = -1;
    expect(captured.decode({ values: new Float64Array(64), base: 0, monotonicMs: 1012 }, 1012)).toBe(false);
    reading.close();
    capturing.close();
  });

  test("a set memory.max is the limit; 'max' is the host's memory, as docker stats shows it", () => {
    const roots = copyOfFixture();
    writeFileSync(join(roots.dir, "memory.max"), "268435456\n");
    const probe = openProbe(target(DOCKER_ID), roots);
    expect(readAt(probe, 0).values["memory.limit_bytes"]).toBe(268435456);
    probe.close();
    writeFileSync(join(roots.dir, "memory.max"), "max\n");
    const unlimited = openProbe(target(DOCKER_ID), roots);
    expect(readAt(unlimited, 0).values["memory.limit_bytes"]).toBe(memTotal(roots.procRoot));
    unlimited.close();
  });

  test("an older kernel without memory.peak or PSI: those metrics are simply not in the series", () => {
    const roots = copyOfFixture();
    for (const f of ["memory.peak", "cpu.pressure", "memory.pressure", "io.pressure"]) rmSync(join(roots.dir, f));
    const probe = openProbe(target(DOCKER_ID), roots);
    const names = probe.metrics.map((m) => m.name);
    expect(names).toContain("memory.usage_bytes");
    expect(names.filter((n) => n === "memory.peak_bytes" || n.startsWith("psi."))).toEqual([]);
    expect(readAt(probe, 0).alive).toBe(true);
    probe.close();
  });

  test("Docker's systemd driver: system.slice/docker-<id>.scope, also when the driver is not known", () => {
    for (const cgroupDriver of ["systemd", undefined] as const) {
      const probe = openProbe(target(SYSTEMD_ID, { cgroupDriver }), { cgroupRoot: V2_ROOT, procRoot: V2_PROC });
      expect(probe.source).toBe(`cgroup v2 ${join(V2_ROOT, "system.slice", `docker-${SYSTEMD_ID}.scope`)}`);
      probe.close();
    }
  });

  test("with a pid, /proc/<pid>/cgroup finds a custom parent, but only a path that names the container", () => {
    const roots = copyOfFixture();
    const id = "f".repeat(64);
    const custom = join(roots.cgroupRoot, "my-parent.slice", `ctr-${id}`);
    mkdirSync(join(roots.cgroupRoot, "my-parent.slice"));
    cpSync(roots.dir, custom, { recursive: true });
    const pidSays = (pid: string, path: string) => {
      mkdirSync(join(roots.procRoot, pid));
      writeFileSync(join(roots.procRoot, pid, "cgroup"), `0::${path}\n`);
    };
    pidSays("4242", `/my-parent.slice/ctr-${id}`);
    const probe = openProbe(target(id, { pid: 4242 }), roots);
    expect(probe.source).toBe(`cgroup v2 ${custom}`);
    probe.close();
    // a pid read as its container exits says "/"; a reused pid names someone else's cgroup
    pidSays("4343", "/");
    pidSays("4444", `/docker/${DOCKER_ID}`);
    for (const pid of [4343, 4444]) {
      const opened = createCgroupCollector(roots).open(target("e".repeat(64), { pid }));
      expect(isUnavailable(opened)).toBe(true);
    }
  });

  test("CPOST_CGROUP_ROOT and CPOST_PROC_ROOT move the built-in collector's roots", () => {
    const saved = { cgroup: process.env.CPOST_CGROUP_ROOT, proc: process.env.CPOST_PROC_ROOT };
    process.env.CPOST_CGROUP_ROOT = V2_ROOT;
    process.env.CPOST_PROC_ROOT = V2_PROC;
    try {
      const opened = createCgroupCollector().open(target(DOCKER_ID));
      if (isUnavailable(opened)) throw new Error(opened.unavailable);
      expect(opened.source).toBe(`cgroup v2 ${join(V2_ROOT, "docker", DOCKER_ID)}`);
      opened.close();
    } finally {
      for (const [key, value] of [["CPOST_CGROUP_ROOT", saved.cgroup], ["CPOST_PROC_ROOT", saved.proc]] as const) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
    }
  });

  test("a container with no cgroup here: unavailable, saying where it looked", () => {
    const opened = createCgroupCollector({ cgroupRoot: V2_ROOT, procRoot: V2_PROC }).open(target("0".repeat(64)));
    expect(isUnavailable(opened)).toBe(true);
    expect((opened as { unavailable: string }).unavailable).toContain(`/docker/${"0".repeat(64)}`);
    expect((opened as { unavailable: string }).unavailable).toContain("/system.slice/docker-");
  });

  test("no cgroup filesystem at the root: unavailable, not a crash", () => {
    const opened = createCgroupCollector({ cgroupRoot: join(tmpdir(), "cpost-no-such-dir"), procRoot: V2_PROC }).open(target(DOCKER_ID));
    expect((opened as { unavailable: string }).unavailable).toContain("no cgroup filesystem");
  });
});

describe("cgroup layouts of engines and drivers", () => {
  test("Podman: libpod_parent/libpod-<id> (cgroupfs) and machine.slice/libpod-<id>.scope (systemd) on v1 and v2", () => {
    const id = "a".repeat(64);
    for (const [version, driver, rel] of [
      [1, "cgroupfs", `libpod_parent/libpod-${id}`],
      [1, "systemd", `machine.slice/libpod-${id}.scope`],
      [2, "cgroupfs", `libpod_parent/libpod-${id}`],
      [2, "systemd", `machine.slice/libpod-${id}.scope`],
    ] as const) {
      const root = mkdtempSync(join(tmpdir(), "cpost-layout-"));
      temps.push(root);
      if (version === 2) {
        writeFileSync(join(root, "cgroup.controllers"), "cpu io memory pids\n");
        mkdirSync(join(root, rel), { recursive: true });
        writeFileSync(join(root, rel, "memory.current"), "1000\n");
      } else {
        for (const controller of ["cpu,cpuacct", "memory", "pids"]) mkdirSync(join(root, controller, rel), { recursive: true });
        writeFileSync(join(root, "cpu,cpuacct", rel, "cpuacct.usage"), "5\n");
        writeFileSync(join(root, "memory", rel, "memory.usage_in_bytes"), "1000\n");
      }
      const probe = openProbe(target(id, { engine: "podman", cgroupDriver: driver }), { cgroupRoot: root, procRoot: V2_PROC });
      expect(probe.source).toContain(version === 2 ? `cgroup v2 ${join(root, rel)}` : `cgroup v1 ${root}/{cpu,cpuacct,memory,pids}/${rel}`);
      expect(readAt(probe, 0).values["memory.usage_bytes"]).toBe(1000);
      probe.close();
    }
  });

  test("the engine's own driver is tried first, then the other engines' places", () => {
    const id = "b".repeat(64);
    expect(candidatePaths(target(id, { cgroupDriver: "systemd" }))[0]).toBe(`/system.slice/docker-${id}.scope`);
    expect(candidatePaths(target(id, { engine: "podman", cgroupDriver: "cgroupfs" }))[0]).toBe(`/libpod_parent/libpod-${id}`);
    expect(candidatePaths(target(id))).toHaveLength(4);
  });

  test("this host's layout is detected from its files", () => {
    const layout = detectLayout("/sys/fs/cgroup");
    if (typeof layout === "string") throw new Error(layout);
    expect(layout.version).toBe(existsSync("/sys/fs/cgroup/cgroup.controllers") ? 2 : 1);
  });
});

describe("cgroup v1 on real containers", () => {
  dockerTest("reads a running container's files: memory held, its limit, pids, CPU climbing, PSI from the unified tree", async () => {
    const started = await startContainer(["cpost-workload", "mem", "48", "60"], { memoryBytes: 256 * 1024 * 1024 });
    try {
      const probe = openProbe(started.target, { cgroupRoot: "/sys/fs/cgroup", procRoot: "/proc" });
      const memoryDir = `/sys/fs/cgroup/memory/docker/${started.id}`;
      expect(probe.source).toContain(`cgroup v1 /sys/fs/cgroup/{`);
      expect(probe.source).toContain(`/docker/${started.id}`);
      // held: the 48 MiB are touched
      await until("48 MiB touched", () => (Number(one(`${memoryDir}/memory.usage_in_bytes`)) >= 48 * 1024 * 1024 ? true : undefined));
      let t = 0;
      const a = readAt(probe, (t += 20)).values;
      const fileUsage = Number(one(`${memoryDir}/memory.usage_in_bytes`));
      const stat = keyed(`${memoryDir}/memory.stat`);
      expect(Math.abs(a["memory.usage_bytes"]! - fileUsage)).toBeLessThan(1024 * 1024);
      expect(Math.abs(a["memory.rss_bytes"]! - stat.total_rss!)).toBeLessThan(1024 * 1024);
      expect(a["memory.rss_bytes"]!).toBeGreaterThanOrEqual(48 * 1024 * 1024);
      expect(a["memory.working_set_bytes"]!).toBeLessThanOrEqual(a["memory.usage_bytes"]!);
      expect(a["memory.peak_bytes"]!).toBeGreaterThanOrEqual(a["memory.usage_bytes"]!);
      expect(a["memory.limit_bytes"]).toBe(256 * 1024 * 1024);
      expect(a["memory.oom_kills"]).toBe(0);
      expect(a["pids.current"]).toBe(one(`/sys/fs/cgroup/pids/docker/${started.id}/cgroup.procs`).split("\n").length);
      if (existsSync(`/sys/fs/cgroup/unified/docker/${started.id}/cpu.pressure`)) expect(a["psi.cpu.some_avg10"]!).toBeGreaterThanOrEqual(0);
      const b = readAt(probe, (t += 1000)).values;
      expect(b["cpu.usage_ns"]!).toBeGreaterThanOrEqual(a["cpu.usage_ns"]!);
      expect(b["cpu.percent"]!).toBeGreaterThanOrEqual(0);
      probe.close();
      // the pid, when known, leads to the same directories
      const byPid = openProbe({ ...started.target, pid: await pidOf(started.id) }, { cgroupRoot: "/sys/fs/cgroup", procRoot: "/proc" });
      expect(byPid.source).toBe(probe.source);
      byPid.close();
    } finally {
      await removeContainer(started.id);
    }
  });

  dockerTest("a container that exits ends its series: read returns false once its cgroup is removed", async () => {
    const started = await startContainer(["cpost-workload", "sleep-ms", "300"]);
    try {
      const probe = openProbe(started.target, { cgroupRoot: "/sys/fs/cgroup", procRoot: "/proc" });
      let t = 0;
      expect(readAt(probe, t).alive).toBe(true);
      await until("the cgroup to go", () => (readAt(probe, (t += 10)).alive ? undefined : true));
      expect(existsSync(`/sys/fs/cgroup/memory/docker/${started.id}`)).toBe(false);
      probe.close();
    } finally {
      await removeContainer(started.id);
    }
  });
});
