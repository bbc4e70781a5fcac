/**
 * The CFS simulator against the kernel, and the slower samplers against a
 * spike, on the real engine through the compiled binary:
 *
 * 1. One run without limits records two bursty operators and a spiky one
 *    (`cpost size --json`): the simulator's predicted throttled share at each
 *    CPU limit comes from that recording (evidence.cpuLimit.curve).
 * 2. Runs with `--enforce-requests` give each operator a real CPU limit
 *    (NanoCpus: a CFS quota per 100 ms period); the kernel's own count,
 *    cpu.stat nr_throttled / nr_periods, comes back as
 *    evidence.measuredThrottling.
 *
 * The band: the measured share lies within 5 percentage points of the
 * simulated shares' range over the 10 alignments of the kernel's periods
 * against the trace (the kernel uses one alignment, not known to cpost). Other processes on this shared host can take CPU before the quota
 * does (a loaded host throttles less); a try off the band is repeated, up to
 * five, and every try is printed. The simulator cannot know where the kernel's periods fall against
 * the trace (hence the range), counts the periods at the run's two ends by its own rule (1-2 periods
 * of 40-80: 2.5-5 points), and reads a counter that moves in 4 ms ticks;
 * the kernel hands out quota in 5 ms slices per CPU. Measured here: at most
 * 3.3 points apart (docs/sizing.md has the figures).
 */
import { afterAll, describe, expect } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { compiledBinary, defineTestScratch, dockerTest, runProcess, TEST_IMAGE } from "./support.ts";

const pids: number[] = [];
const scratch = defineTestScratch("sizing-kernel", pids);
afterAll(() => scratch.cleanup());

const [image, tag] = TEST_IMAGE.split(":") as [string, string];
const BAND_POINTS = 5;

const OPERATORS: Record<string, string[]> = {
  // Two threads, 30 ms of CPU each in every 100 ms: 60 ms of work in every period.
  burst: ["cpost-workload", "burst", "2", "30", "100", "4"],
  // One thread, 600 ms of CPU in every second: a core for 0.6 s, then idle.
  long: ["cpost-workload", "burst", "1", "600", "1000", "4"],
  // 256 MiB held for 100 ms once every 2 s.
  spike: ["cpost-workload", "spike", "256", "100", "2000", "6"],
};

function pipelineYaml(limits: Record<string, number> = {}): string {
  const names = Object.keys(limits).length > 0 ? Object.keys(limits) : Object.keys(OPERATORS);
  const ops = names.map(
    (name) =>
      `  - name: ${name}\n    container: {image: ${image}, tag: "${tag}", command: ${JSON.stringify(OPERATORS[name])}}\n` +
      (limits[name] === undefined ? "" : `    requests: {cpu: ${limits[name]}}\n`),
  );
  return `api-version: 0.4.0\nname: sizing-kernel\noperators:\n${ops.join("")}`;
}

interface Prediction { cpu: number; periods: number; throttledPercent: number; minPercent: number; maxPercent: number }
interface JsonOperator {
  name: string;
  evidence: {
    memory: { valueMb: number };
    cpuLimit: { curve: Prediction[] };
    measuredThrottling?: { periods: number; throttledPeriods: number; throttledPercent: number };
    samplerViews: Array<{ sampler: string; memoryMb: number; memoryMbRange: [number, number]; sawMemoryPeakPercent: number; requests: { cpu: number; memory: number } }>;
  };
  requests: { cpu: number; memory: number };
}

describe("CFS simulation vs the kernel, and what slower samplers miss (compiled binary, real engine)", () => {
  dockerTest(
    "cpu.stat's throttled share within 5 points of the simulated range at six limits; a 100 ms spike of 256 MiB seen by cpost, missed by the 5 s view and by some start offsets of the 1 s view",
    async () => {
      const dir = scratch.scratch();
      const input = join(dir, "input");
      mkdirSync(input);
      writeFileSync(join(input, "a.txt"), "x\n");
      const binary = await compiledBinary();
      const size = async (name: string, yaml: string, extra: string[]) => {
        const file = join(dir, `${name}.yaml`);
        writeFileSync(file, yaml);
        const run = await runProcess([binary, "size", file, input, "--json", "--cpu-step", "0.1", "--min-cpu", "0.1", ...extra], { cwd: dir, timeoutMs: 180_000 });
        expect({ name, code: run.code }).toEqual({ name, code: 0 });
        return Object.fromEntries((JSON.parse(run.stdout).operators as JsonOperator[]).map((o) => [o.name, o]));
      };

      const free = await size("unlimited", pipelineYaml(), ["--metrics_dir", join(dir, "metrics")]);
      const predicted = (name: string, cpu: number) => {
        const curve = free[name]!.evidence.cpuLimit.curve;
        const p = curve.find((c) => c.cpu === cpu);
        // Beyond the curve's end (the busiest period's work): no throttling, by construction.
        if (!p && cpu > curve.at(-1)!.cpu) return { cpu, periods: curve.at(-1)!.periods, throttledPercent: 0, minPercent: 0, maxPercent: 0 };
        if (!p) throw new Error(`no prediction for ${name} at ${cpu}: ${free[name]!.evidence.cpuLimit.curve.map((c) => c.cpu).join(", ")}`);
        return p;
      };

      const compared: string[] = [];
      for (const limits of [{ burst: 0.3, long: 0.4 }, { burst: 0.5, long: 0.7 }, { burst: 1.2, long: 0.8 }]) {
        for (const [name, cpu] of Object.entries(limits)) {
          const want = predicted(name, cpu);
          // Other processes on this shared host can take the CPU before the quota does, and fewer periods then reach
          // the quota (measured at a load of 4-5 on 2 CPUs: 51-78 % where 96 % was predicted and an idle host gave 98 %).
          // A try outside the band is repeated, up to five tries, each printed; DISTURBED marks a try whose work spread
          // over more periods than the quota explains (10 % + 2 above the simulated count).
          let within = false;
          let disturbed = false;
          for (let attempt = 1; attempt <= 5 && !within; attempt++) {
            const limited = await size(`limited-${name}-${cpu}`, pipelineYaml({ [name]: cpu }), ["--enforce-requests"]);
            const measured = limited[name]!.evidence.measuredThrottling;
            expect(measured).toBeDefined();
            disturbed = measured!.periods > want.periods * 1.1 + 2;
            within = measured!.throttledPercent >= want.minPercent - BAND_POINTS && measured!.throttledPercent <= want.maxPercent + BAND_POINTS;
            compared.push(`${name} at ${cpu} (try ${attempt}): predicted ${want.throttledPercent} % (alignments ${want.minPercent}-${want.maxPercent}; ${want.periods} periods), measured ${measured!.throttledPercent} % (${measured!.throttledPeriods}/${measured!.periods})${disturbed ? " DISTURBED" : ""}`);
            console.log(compared.at(-1));
          }
          expect({ compared: compared.at(-1), within }).toEqual({ compared: compared.at(-1), within: true });
        }
      }

      // The spike: cpost's peak holds the 256 MiB; the 1 s and 5 s samplers (median over start offsets) read far less.
      const spike = free.spike!;
      const views = Object.fromEntries(spike.evidence.samplerViews.map((v) => [v.sampler, v]));
      console.log(JSON.stringify({ cpost: spike.evidence.memory.valueMb, views: spike.evidence.samplerViews.map((v) => [v.sampler, v.memoryMb, v.memoryMbRange, v.sawMemoryPeakPercent, v.requests]) }));
      expect(spike.evidence.memory.valueMb).toBeGreaterThanOrEqual(256 * 1.048576);
      // A 1 s sampler catches a 100 ms spike only from some start offsets: some miss it entirely, none sees it always.
      const second = views["docker stats / cAdvisor 1 s"]!;
      expect(second.memoryMbRange[0]).toBeLessThan(spike.evidence.memory.valueMb / 2);
      expect(second.sawMemoryPeakPercent).toBeLessThan(100);
      // A 5 s sampler misses it from most offsets: its median figure, and the request it would give, fall short.
      const five = views["below 5 s"]!;
      expect(five.memoryMb).toBeLessThan(spike.evidence.memory.valueMb / 2);
      expect(five.requests.memory).toBeLessThan(spike.requests.memory);
    },
    400_000,
  );
});
