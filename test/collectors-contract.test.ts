/**
 * Every built-in collector of the registry, and the example collector
 * plugin, through the shared collector contract (test/collectors-contract.ts):
 * by default on a real container; host on this machine, nvml on real
 * containers against the libnvidia-ml.so.1 test double (no GPU here).
 */
import { afterAll, beforeAll } from "bun:test";
import { join } from "node:path";
import { builtinCollectors } from "../collectors/index.ts";
import { createNvmlCollector } from "../collectors/nvml/index.ts";
import { collectorContract, collectorContracts, containerTarget, hostTarget, pluginCollector } from "./collectors-contract.ts";
import { buildNvmlDouble, type NvmlDouble } from "./nvml/double.ts";
import { REPO } from "./support.ts";

let double: NvmlDouble | undefined;

beforeAll(async () => {
  double = await buildNvmlDouble(["current"]);
  double.script({
    samplePeriodUs: 5000,
    devices: [{ name: "NVIDIA H100 80GB HBM3", uuid: "GPU-0aa1b2c3-0000-4000-8000-000000000000", util: [40, 20], memory: [80 * 2 ** 30, 2 ** 30, 2 ** 29], powerMw: 120_000, temperatureC: 50, smClockMhz: 1500 }],
  });
});

afterAll(() => double?.remove());

// Every registered built-in: a new one is tested by being registered (collectors/index.ts).
collectorContracts(builtinCollectors, {
  host: { options: { target: hostTarget, missing: null, docker: false } },
  nvml: { make: () => createNvmlCollector({ library: double!.library(), onWarning: () => undefined }) },
});
collectorContract("proc-status (example plugin)", () => pluginCollector(join(REPO, "examples/plugins/proc-status.ts")), { target: () => containerTarget() });
