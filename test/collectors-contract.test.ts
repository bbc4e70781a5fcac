/**
 * Every built-in collector, and the example collector plugin, through the
 * shared collector contract (test/collectors-contract.ts): cgroup and blkio
 * on real containers, host on this machine, nvml on real containers against
 * the libnvidia-ml.so.1 test double (no GPU here).
 */
import { afterAll, beforeAll } from "bun:test";
import { join } from "node:path";
import { createBlkioCollector } from "../collectors/blkio/index.ts";
import { createCgroupCollector } from "../collectors/cgroup/index.ts";
import hostCollector from "../collectors/host.ts";
import { createNvmlCollector } from "../collectors/nvml/index.ts";
import { collectorContract, containerTarget, hostTarget, pluginCollector } from "./collectors-contract.ts";
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

collectorContract("cgroup", () => createCgroupCollector(), { target: () => containerTarget() });
collectorContract("blkio", () => createBlkioCollector(), { target: () => containerTarget() });
collectorContract("host", () => hostCollector, { target: hostTarget, missing: null, docker: false });
collectorContract("nvml", () => createNvmlCollector({ library: double!.library(), onWarning: () => undefined }), { target: () => containerTarget() });
collectorContract("proc-status (example plugin)", () => pluginCollector(join(REPO, "examples/plugins/proc-status.ts")), { target: () => containerTarget() });
