/**
 * Builds the libnvidia-ml.so.1 test double (libnvidia-ml.c) with gcc into a
 * temp dir and scripts its answers. Used by test/nvml.test.ts and bench/nvml.ts.
 */
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Older drivers, emulated by leaving symbols out of the build. */
export const DOUBLE_VARIANTS = {
  /** Today's driver: every symbol cpost binds. */
  current: [],
  /** A pre-R450 driver: no versioned process list or memory info, no samples API. */
  legacy: ["-DOMIT_MEMORY_V2", "-DOMIT_PROCESSES_V2", "-DOMIT_PROCESSES_V3", "-DOMIT_SAMPLES", "-DOMIT_PROCESS_UTILIZATION"],
  /** A pre-R319 library: no nvmlInit_v2, too old for cpost. */
  ancient: ["-DOMIT_INIT_V2"],
} as const satisfies Record<string, readonly string[]>;

export type DoubleVariant = keyof typeof DOUBLE_VARIANTS;

/** One GPU of a script. */
export interface FakeDevice {
  name: string;
  uuid: string;
  util?: [gpu: number, memory: number];
  /** Bytes: total, allocated, reserved by the driver. */
  memory?: [total: number, used: number, reserved: number];
  powerMw?: number;
  temperatureC?: number;
  smClockMhz?: number;
  lost?: boolean;
  /** NVML function name -> nvmlReturn_t it answers. */
  errors?: Record<string, number>;
  processes?: Array<{ pid: number; usedBytes: number; smPct?: number }>;
}

/** What the double answers. */
export interface FakeScript {
  driver?: string;
  initError?: number;
  samplePeriodUs?: number;
  /** 32 emulates R535.54's nvmlDeviceGetComputeRunningProcesses_v3. */
  processInfoV3Size?: 24 | 32;
  devices: FakeDevice[];
}

/** A built double: where its library, script and stats files are. */
export interface NvmlDouble {
  dir: string;
  library(variant?: DoubleVariant): string;
  /** Env for a process (or this one) that should load the double. */
  env(variant?: DoubleVariant): Record<string, string>;
  /** Writes the script atomically (the double notices within 5 ms). */
  script(script: FakeScript): void;
  /** Call counts per NVML function, as written by the last nvmlShutdown. */
  stats(): Record<string, number>;
  remove(): void;
}

const SOURCE = join(import.meta.dir, "libnvidia-ml.c");

/** Compiles the requested variants into a fresh temp dir. */
export async function buildNvmlDouble(variants: DoubleVariant[] = ["current"]): Promise<NvmlDouble> {
  const dir = mkdtempSync(join(tmpdir(), "cpost-nvml-"));
  const scriptPath = join(dir, "script.txt");
  const statsPath = join(dir, "stats.txt");
  writeFileSync(scriptPath, "");
  await Promise.all(
    variants.map(async (variant) => {
      const out = join(dir, variant, "libnvidia-ml.so.1");
      const argv = ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-Wl,-soname,libnvidia-ml.so.1", ...DOUBLE_VARIANTS[variant], "-o", out, SOURCE];
      mkdirSync(join(dir, variant));
      // In-process loads cannot pass env to the library (Bun's process.env is not the C environ): it finds these beside itself.
      symlinkSync(scriptPath, join(dir, variant, "script.txt"));
      symlinkSync(statsPath, join(dir, variant, "stats.txt"));
      const gcc = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe" });
      if ((await gcc.exited) !== 0) throw new Error(`gcc failed for the NVML double: ${await new Response(gcc.stderr).text()}`);
    }),
  );
  let generation = 0;
  return {
    dir,
    library: (variant = "current") => join(dir, variant, "libnvidia-ml.so.1"),
    env: (variant = "current") => ({
      CPOST_NVML_LIB: join(dir, variant, "libnvidia-ml.so.1"),
      FAKE_NVML_SCRIPT: scriptPath,
      FAKE_NVML_STATS: statsPath,
    }),
    script(script) {
      const temp = `${scriptPath}.${++generation}`;
      writeFileSync(temp, renderScript(script));
      renameSync(temp, scriptPath);
    },
    stats() {
      const counts: Record<string, number> = {};
      for (const line of readFileSync(statsPath, "utf8").split("\n")) {
        const [name, count] = line.split(" ");
        if (name && count) counts[name] = Number(count);
      }
      return counts;
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

function renderScript(script: FakeScript): string {
  const lines = [`driver ${script.driver ?? "550.54.15"}`];
  if (script.initError) lines.push(`init_error ${script.initError}`);
  if (script.samplePeriodUs) lines.push(`sample_period_us ${script.samplePeriodUs}`);
  if (script.processInfoV3Size) lines.push(`process_info_v3_size ${script.processInfoV3Size}`);
  script.devices.forEach((d, i) => {
    lines.push(`device ${i} name ${d.name}`, `device ${i} uuid ${d.uuid}`);
    if (d.util) lines.push(`device ${i} util ${d.util[0]} ${d.util[1]}`);
    if (d.memory) lines.push(`device ${i} memory ${d.memory.join(" ")}`);
    if (d.powerMw !== undefined) lines.push(`device ${i} power_mw ${d.powerMw}`);
    if (d.temperatureC !== undefined) lines.push(`device ${i} temp ${d.temperatureC}`);
    if (d.smClockMhz !== undefined) lines.push(`device ${i} sm_clock ${d.smClockMhz}`);
    if (d.lost) lines.push(`device ${i} lost`);
    for (const [fn, code] of Object.entries(d.errors ?? {})) lines.push(`device ${i} error ${fn} ${code}`);
    for (const p of d.processes ?? []) lines.push(`process ${i} ${p.pid} ${p.usedBytes} ${p.smPct ?? 0}`);
  });
  return `${lines.join("\n")}\n`;
}
