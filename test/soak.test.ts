/**
 * The soak of bench/soak.ts, for 30 seconds: the compiled cpost's monitor
 * samples 20 real containers at 100 Hz into a msgpack recording. After a
 * 10 s warm-up its RSS and open fds must stay flat (at most 10 % growth)
 * and no sample may be lost between the sampler and the recording. The
 * interval figures are printed, not asserted (they depend on the load of
 * this shared machine); the 10-minute run is `bun bench/soak.ts`.
 */
import { expect } from "bun:test";
import { describeSoak, runSoak } from "../bench/soak.ts";
import { defineReliabilityLog } from "./reliability-log.ts";
import { compiledBinary, dockerTest } from "./support.ts";

const log = defineReliabilityLog("soak");

dockerTest("30 s soak: 20 containers at 100 Hz; RSS and fds flat after the warm-up, no sample dropped", async () => {
  await log.check("Load and soak", "The compiled cpost monitor sampling 20 containers at 100 Hz for 30 s into a msgpack recording (bench/soak.ts runs it for 10 minutes)", async () => {
    const result = await runSoak({ seconds: 30, containers: 20, intervalMs: 10, warmupSeconds: 10, binary: await compiledBinary() });
    const lines = describeSoak(result);
    console.log(lines.join("\n"));
    expect(result.perContainer).toHaveLength(20);
    for (const c of result.perContainer) {
      expect(c.taken).toBeGreaterThan(0);
      expect(c.recorded).toBe(c.taken);
    }
    expect(result.dropped).toBe(0);
    expect(result.samplesRecorded).toBeGreaterThan(20 * 100 * 10); // at least a third of the slots even on a loaded machine
    expect(result.end.rssBytes).toBeLessThanOrEqual(result.start.rssBytes * 1.1);
    expect(result.end.fds).toBeLessThanOrEqual(Math.floor(result.start.fds * 1.1));
    const mib = (b: number) => (b / 2 ** 20).toFixed(1);
    const pct = (a: number, b: number) => `${b >= a ? "+" : ""}${((100 * (b - a)) / a).toFixed(1)} %`;
    return `RSS ${mib(result.start.rssBytes)} → ${mib(result.end.rssBytes)} MiB (${pct(result.start.rssBytes, result.end.rssBytes)}), fds ${result.start.fds} → ${result.end.fds}; ${result.samplesTaken} samples taken, ${result.dropped} dropped; interval p99 ${result.interval.p99.toFixed(1)} ms (target 10), ${result.missedSlots} of ${result.slots} slots missed on this shared machine`;
  });
}, 180_000);
