/**
 * cpost as bench/peers.ts runs it: its own process, cgroup + blkio through
 * the Sampler, watching one container from before it starts (pending).
 * stdin: `pid N` once the engine tells it, `finish` once the container
 * exited; stdout: `ready`, then one JSON line with the series and this
 * process's own CPU (from `ready` on) and peak RSS.
 *
 *   bun bench/peers/cpost-watch.ts <container id> <interval ms> <cgroupfs|systemd>
 */
import { createBlkioCollector } from "../../collectors/blkio/index.ts";
import { createCgroupCollector } from "../../collectors/cgroup/index.ts";
import { Sampler } from "../../core/sampling/sampler.ts";

const [containerId, interval, cgroupDriver] = process.argv.slice(2) as [string, string, "cgroupfs" | "systemd"];
const rows: Array<[number, number, number]> = []; // epoch ms, cpu.usage_ns, memory.usage_bytes
const sampler = new Sampler({
  intervalMs: Number(interval),
  collectors: [createCgroupCollector(), createBlkioCollector()],
  onBatch(batch) {
    const width = batch.columns.length;
    const cpu = batch.columns.findIndex((c) => c.name === "cpu.usage_ns");
    const mem = batch.columns.findIndex((c) => c.name === "memory.usage_bytes");
    for (let r = 0; r < batch.rows; r++) rows.push([batch.timestampMs[r]!, batch.values[r * width + cpu]!, batch.values[r * width + mem]!]);
  },
});
sampler.ready();
const watch = sampler.watch({ kind: "container", containerId, pid: 0, engine: "docker", cgroupDriver, operator: "peer" }, { pending: true });
const cpu0 = process.cpuUsage();
console.log("ready");
for await (const line of console) {
  if (line.startsWith("pid ")) watch.setPid(Number(line.slice(4)));
  if (line !== "finish") continue;
  await watch.finish(500);
  const cpu = process.cpuUsage(cpu0);
  sampler.close();
  console.log(JSON.stringify({ rows, cpuSeconds: (cpu.user + cpu.system) / 1e6, maxRssBytes: process.resourceUsage().maxRSS * 1024 }));
  process.exit(0);
}
