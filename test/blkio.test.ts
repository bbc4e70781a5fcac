/**
 * The blkio collector: io.stat of the real cgroup v2 fixture, the v1 file
 * format on a small tree, and on this host's real v1 containers, whose blkio
 * files stay empty, the /proc/<pid>/io fallback, including children that
 * exit and are reaped (their bytes move into the parent: counted once).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createBlkioCollector } from "../collectors/blkio/index.ts";
import { isUnavailable, type MetricBuffer, type Probe, type Target } from "../core/contracts/types.ts";
import { dockerTest, REPO } from "./support.ts";
import { pidOf, removeContainer, removeMine, startContainer, until, waitContainer } from "./test-containers.ts";

const FIXTURE = join(REPO, "test/fixtures/cgroup-v2");
const DOCKER_ID = readdirSync(join(FIXTURE, "sys/fs/cgroup/docker"))[0]!;
const MiB = 1024 * 1024;

const temps: string[] = [];
afterAll(async () => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
  await removeMine();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "cpost-blkio-"));
  temps.push(dir);
  return dir;
}

function target(id: string): Target {
  return { kind: "container", containerId: id, pid: 0, engine: "docker", cgroupDriver: "cgroupfs", operator: "op" };
}

function open(t: Target, roots: { cgroupRoot: string; procRoot: string }): Probe {
  const opened = createBlkioCollector(roots).open(t);
  if (isUnavailable(opened)) throw new Error(opened.unavailable);
  return opened;
}

function readAt(probe: Probe, monotonicMs: number): { alive: boolean; values: Record<string, number> } {
  const out: MetricBuffer = { values: new Float64Array(probe.metrics.length), base: 0, monotonicMs };
  const alive = probe.read(out);
  return { alive, values: Object.fromEntries(probe.metrics.map((m, i) => [m.name, out.values[i]!])) };
}

/** io.stat summed over devices, by a plain parser. */
function ioStat(path: string): Record<string, number> {
  const sums: Record<string, number> = {};
  for (const line of readFileSync(path, "utf8").trim().split("\n").filter(Boolean)) {
    for (const pair of line.split(" ").slice(1)) {
      const [k, v] = pair.split("=");
      sums[k!] = (sums[k!] ?? 0) + Number(v);
    }
  }
  return sums;
}

function fixtureCopy(): { cgroupRoot: string; procRoot: string; dir: string } {
  const root = tempDir();
  cpSync(FIXTURE, root, { recursive: true });
  return { cgroupRoot: join(root, "sys/fs/cgroup"), procRoot: join(root, "proc"), dir: join(root, "sys/fs/cgroup/docker", DOCKER_ID) };
}

describe("cgroup v2 io.stat (real v2 files)", () => {
  test("bytes and ops summed over devices", () => {
    const roots = fixtureCopy();
    const statPath = join(roots.dir, "io.stat");
    writeFileSync(statPath, `${readFileSync(statPath, "utf8")}8:16 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n`);
    const probe = open(target(DOCKER_ID), roots);
    const expected = ioStat(statPath);
    expect(readAt(probe, 0)).toEqual({
      alive: true,
      values: { "io.read_bytes": expected.rbytes!, "io.write_bytes": expected.wbytes!, "io.read_ops": expected.rios!, "io.write_ops": expected.wios! },
    });
    expect(probe.source).toBe(`cgroup v2 ${roots.dir}/io.stat`);
    probe.close();
  });

  test("the cgroup's files read about every 10 ms, /proc about every 100 ms: the rows between leave the disk counters NaN", () => {
    const roots = fixtureCopy();
    const probe = open(target(DOCKER_ID), roots);
    const first = readAt(probe, 100);
    const between = readAt(probe, 101);
    expect(between.alive).toBe(true);
    expect(Object.values(between.values).every(Number.isNaN)).toBe(true);
    expect(readAt(probe, 110).values).toEqual(first.values);
    probe.close();
    // where /proc is the source (io.stat empty), what its processes did since shows at the next 100 ms mark, not before
    writeFileSync(join(roots.dir, "io.stat"), "");
    const pid = readFileSync(join(roots.dir, "cgroup.procs"), "utf8").trim();
    const ioFile = join(roots.procRoot, pid, "io");
    const fromProc = open(target(DOCKER_ID), roots);
    const before = readAt(fromProc, 100).values["io.read_bytes"]!;
    writeFileSync(ioFile, readFileSync(ioFile, "utf8").replace(/^read_bytes: \d+$/m, `read_bytes: ${before + 4096}`));
    expect(readAt(fromProc, 101).values["io.read_bytes"]).toBeNaN();
    for (const ms of [110, 150, 190]) expect(readAt(fromProc, ms).values["io.read_bytes"]).toBe(before);
    expect(readAt(fromProc, 200).values["io.read_bytes"]).toBe(before + 4096);
    fromProc.close();
  });

  test("io.stat empty while the processes' /proc/<pid>/io shows bytes: those bytes, ops not measured, and the source says so", () => {
    const roots = fixtureCopy();
    writeFileSync(join(roots.dir, "io.stat"), "");
    const pid = readFileSync(join(roots.dir, "cgroup.procs"), "utf8").trim();
    const io = Object.fromEntries(readFileSync(join(roots.procRoot, pid, "io"), "utf8").trim().split("\n").map((l) => l.split(": ")).map(([k, v]) => [k!, Number(v)]));
    const probe = open(target(DOCKER_ID), roots);
    const { values } = readAt(probe, 0);
    expect(values["io.read_bytes"]).toBe(io.read_bytes!);
    expect(values["io.write_bytes"]).toBe(io.write_bytes!);
    expect(values["io.read_ops"]).toBeNaN();
    expect(probe.source).toBe("/proc/<pid>/io of the container's processes (cgroup blkio files empty; ops not measured)");
    probe.close();
  });

  test("/proc ahead only until io.stat counts the bytes: then io.stat's figures and its source again", () => {
    const roots = fixtureCopy();
    const statPath = join(roots.dir, "io.stat");
    const pid = readFileSync(join(roots.dir, "cgroup.procs"), "utf8").trim();
    const procIo = join(roots.procRoot, pid, "io");
    const io = (r: number, w: number) => `rchar: ${r}\nwchar: ${w}\nsyscr: 1\nsyscw: 1\nread_bytes: ${r}\nwrite_bytes: ${w}\ncancelled_write_bytes: 0\n`;
    // first reading: pages dirtied (in /proc) that io.stat has not counted yet
    writeFileSync(statPath, "");
    writeFileSync(procIo, io(0, 4 * MiB));
    const probe = open(target(DOCKER_ID), roots);
    expect(readAt(probe, 0).values["io.write_bytes"]).toBe(4 * MiB);
    expect(probe.source).toContain("/proc/<pid>/io");
    // later: io.stat has them and more, /proc (read a moment after) further still
    writeFileSync(statPath, `8:0 rbytes=${2 * MiB} wbytes=${8 * MiB} rios=4 wios=8 dbytes=0 dios=0\n`);
    writeFileSync(procIo, io(3 * MiB, 9 * MiB));
    expect(readAt(probe, 100).values).toEqual({ "io.read_bytes": 2 * MiB, "io.write_bytes": 8 * MiB, "io.read_ops": 4, "io.write_ops": 8 });
    expect(probe.source).toBe(`cgroup v2 ${roots.dir}/io.stat`);
    probe.close();
  });
});

describe("cgroup v1 blkio files", () => {
  test("Read and Write lines summed over devices, bytes and ops", () => {
    const root = tempDir();
    const id = "c".repeat(64);
    const dir = join(root, "blkio", "docker", id);
    mkdirSync(dir, { recursive: true });
    mkdirSync(join(root, "memory", "docker", id), { recursive: true });
    // the kernel's format: per device Read/Write/Sync/Async/Discard/Total, then a grand Total
    const rwstat = (dev: string, r: number, w: number) =>
      `${dev} Read ${r}\n${dev} Write ${w}\n${dev} Sync ${r + w}\n${dev} Async 0\n${dev} Discard 0\n${dev} Total ${r + w}\n`;
    writeFileSync(join(dir, "blkio.throttle.io_service_bytes"), `${rwstat("254:0", 1048576, 2097152)}${rwstat("8:0", 4096, 0)}Total 3149824\n`);
    writeFileSync(join(dir, "blkio.throttle.io_serviced"), `${rwstat("254:0", 8, 16)}${rwstat("8:0", 1, 0)}Total 25\n`);
    writeFileSync(join(dir, "cgroup.procs"), "");
    const probe = open(target(id), { cgroupRoot: root, procRoot: join(root, "proc") });
    expect(readAt(probe, 0).values).toEqual({ "io.read_bytes": 1048576 + 4096, "io.write_bytes": 2097152, "io.read_ops": 9, "io.write_ops": 16 });
    expect(probe.source).toBe(`cgroup v1 ${dir}/blkio.throttle.io_service_bytes,io_serviced`);
    probe.close();
  });

  test("a blkio file holding only `Total 0` is empty: the bytes come from the processes' /proc/<pid>/io", () => {
    const root = tempDir();
    const id = "d".repeat(64);
    const dir = join(root, "blkio", "docker", id);
    mkdirSync(dir, { recursive: true });
    mkdirSync(join(root, "memory", "docker", id), { recursive: true });
    mkdirSync(join(root, "proc", "4242"), { recursive: true });
    // what this host's kernel shows for a container doing O_DIRECT I/O
    writeFileSync(join(dir, "blkio.throttle.io_service_bytes"), "Total 0\n");
    writeFileSync(join(dir, "blkio.throttle.io_serviced"), "Total 0\n");
    writeFileSync(join(dir, "cgroup.procs"), "4242\n");
    writeFileSync(join(root, "proc", "4242", "io"), `rchar: 0\nwchar: 0\nsyscr: 0\nsyscw: 0\nread_bytes: ${3 * MiB}\nwrite_bytes: ${5 * MiB}\ncancelled_write_bytes: 0\n`);
    writeFileSync(join(root, "proc", "4242", "stat"), "4242 (cpost workload) S 1 4242 4242 0 -1\n");
    const probe = open(target(id), { cgroupRoot: root, procRoot: join(root, "proc") });
    const { values } = readAt(probe, 0);
    expect(values["io.read_bytes"]).toBe(3 * MiB);
    expect(values["io.write_bytes"]).toBe(5 * MiB);
    expect(values["io.read_ops"]).toBeNaN();
    expect(probe.source).toBe("/proc/<pid>/io of the container's processes (cgroup blkio files empty; ops not measured)");
    probe.close();
  });
});

describe("on this host's real containers", () => {
  dockerTest("two children write and read 8 MiB each and are reaped: 16 MiB each way, counted once, never going back", async () => {
    const started = await startContainer(["sh", "-c", "cpost-workload io 8 /tmp/a; cpost-workload io 8 /tmp/b; sleep 60"]);
    try {
      const probe = open(started.target, { cgroupRoot: "/sys/fs/cgroup", procRoot: "/proc" });
      const seen: Array<Record<string, number>> = [];
      let t = 0;
      await until("16 MiB each way", () => {
        const { values } = readAt(probe, (t += 100));
        seen.push(values);
        return values["io.read_bytes"]! >= 16 * MiB && values["io.write_bytes"]! >= 16 * MiB ? true : undefined;
      }, 30_000);
      // both children have been reaped into sh by now or soon; more readings must not add them again
      for (let i = 0; i < 10; i++) {
        seen.push(readAt(probe, (t += 100)).values);
        await Bun.sleep(25);
      }
      const last = seen.at(-1)!;
      expect(last["io.read_bytes"]!).toBeLessThanOrEqual(16 * MiB * 1.05);
      expect(last["io.write_bytes"]!).toBeLessThanOrEqual(16 * MiB * 1.05);
      for (const key of ["io.read_bytes", "io.write_bytes"]) {
        const series = seen.map((v) => v[key]!);
        expect(series.every((v, i) => i === 0 || v >= series[i - 1]!)).toBe(true);
      }
      const blkioEmpty = readFileSync(`/sys/fs/cgroup/blkio/docker/${started.id}/blkio.throttle.io_service_bytes`, "utf8").trim() === "Total 0";
      if (blkioEmpty) expect(probe.source).toContain("/proc/<pid>/io");
      probe.close();
    } finally {
      await removeContainer(started.id);
    }
  });

  dockerTest("a process started after the probe's first reading is seen (v1 answers a held cgroup.procs with its first pid list)", async () => {
    const gate = tempDir();
    // the subshell, and the workload it reaps, start only once the probe has read the pid list
    // (not the script's last command, so sh forks it rather than becoming it)
    const started = await startContainer(["sh", "-c", "while [ ! -e /gate/go ]; do sleep 0.01; done; (cpost-workload io 8 /gate/a; sleep 60); true"], { binds: [`${gate}:/gate`] });
    try {
      const probe = open(started.target, { cgroupRoot: "/sys/fs/cgroup", procRoot: "/proc" });
      let t = 0;
      expect(readAt(probe, t).values["io.write_bytes"]!).toBeLessThan(MiB);
      writeFileSync(join(gate, "go"), "");
      // the subshell outlives its child: only its own /proc/<pid>/io can show these bytes
      await until("8 MiB each way", () => {
        const { values } = readAt(probe, (t += 100));
        return values["io.read_bytes"]! >= 8 * MiB && values["io.write_bytes"]! >= 8 * MiB ? true : undefined;
      }, 30_000);
      probe.close();
    } finally {
      await removeContainer(started.id);
    }
  });

  dockerTest("a container's init that does its I/O after its last reading and exits: its final bytes, from the parent that reaped it", async () => {
    const gate = tempDir();
    const started = await startContainer(["sh", "-c", "while [ ! -e /gate/go ]; do sleep 0.01; done; cpost-workload io 50 /tmp/io.bin"], { binds: [`${gate}:/gate`] });
    try {
      const init = await pidOf(started.id);
      started.target.pid = init; // as the runner gives it once the engine tells it
      const procs = `/sys/fs/cgroup/blkio/docker/${started.id}/cgroup.procs`;
      const parent = () => Number(readFileSync(`/proc/${init}/stat`, "utf8").replace(/^.*\) \S+ /s, "").split(" ")[0]);
      // runc's setup processes have gone and the init's parent is the engine's, outside the container
      await until("the init's parent to be outside the container", () => (readFileSync(procs, "utf8").split("\n").includes(String(parent())) ? undefined : true));
      const probe = open(started.target, { cgroupRoot: "/sys/fs/cgroup", procRoot: "/proc" });
      // two readings while it waits: the init and its parent followed, the parent read before the work
      let t = 0;
      for (let i = 0; i < 2; i++) expect(readAt(probe, (t += 100)).values["io.read_bytes"]!).toBeLessThan(MiB);
      writeFileSync(join(gate, "go"), "");
      expect(await waitContainer(started.id)).toBe(0);
      // no reading saw the work: whatever shows now was settled from the reaping
      let last: Record<string, number> = {};
      await until("the series to end", () => {
        const { alive, values } = readAt(probe, (t += 100));
        if (alive && !Number.isNaN(values["io.read_bytes"]!)) last = values;
        return alive ? undefined : true;
      });
      console.log(`init exited after its I/O: read ${(last["io.read_bytes"]! / MiB).toFixed(2)} MiB, written ${(last["io.write_bytes"]! / MiB).toFixed(2)} MiB via ${probe.source}`);
      expect(Math.abs(last["io.read_bytes"]! - 50 * MiB)).toBeLessThanOrEqual(2.5 * MiB);
      expect(Math.abs(last["io.write_bytes"]! - 50 * MiB)).toBeLessThanOrEqual(2.5 * MiB);
      probe.close();
    } finally {
      await removeContainer(started.id);
    }
  });

  dockerTest("a container that exits ends its series", async () => {
    const started = await startContainer(["cpost-workload", "sleep-ms", "200"]);
    try {
      const probe = open(started.target, { cgroupRoot: "/sys/fs/cgroup", procRoot: "/proc" });
      let t = 0;
      await until("the cgroup to go", () => (readAt(probe, (t += 10)).alive ? undefined : true));
      probe.close();
    } finally {
      await removeContainer(started.id);
    }
  });
});
