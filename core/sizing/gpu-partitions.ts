/**
 * GPU memory an operator needs, and the GPU partitions it fits.
 *
 * The need is the highest GPU memory the operator's own processes held on
 * one device (NVML's per-process figure, `gpu.process_memory_bytes`; the
 * device's used memory where no per-process figure was read). It is asked
 * for with 10 % headroom, in whole GB (GPU memory is partitioned in GB
 * slices, and frameworks' allocators grow in large blocks).
 *
 * Partitions: the MIG GPU instance profiles NVIDIA publishes in the MIG User
 * Guide ("Supported MIG Profiles",
 * https://docs.nvidia.com/datacenter/tesla/mig-user-guide/supported-mig-profiles.html):
 * A100-SXM4-40GB, A100-SXM4-80GB, H100 80GB and H200 141GB. A profile's memory
 * is the figure in its name (1g.10gb: 10 GB) and its share of the GPU's
 * memory (1/8, 2/8, 4/8, full) is the table's "Fraction of Memory"; the
 * media-extension variants (+me) have the same memory and are left out.
 */
import type { GpuMemoryFit } from "../contracts/types.ts";

/** One MIG GPU instance profile. */
export interface MigProfile {
  /** As nvidia-smi and the device plugin name it: `1g.10gb` (resource `nvidia.com/mig-1g.10gb`). */
  profile: string;
  memoryGb: number;
  /** Compute slices of 7. */
  computeSevenths: number;
  /** Instances of it one GPU holds. */
  instances: number;
}

/** A GPU model with its MIG profiles, smallest first. */
export interface GpuModel {
  gpu: string;
  memoryGb: number;
  profiles: readonly MigProfile[];
}

const p = (profile: string, computeSevenths: number, instances: number): MigProfile => ({ profile, memoryGb: Number(/\.(\d+)gb$/.exec(profile)![1]), computeSevenths, instances });

/** The MIG User Guide's profile tables (see the file's comment for the source). */
export const MIG_GPUS: readonly GpuModel[] = [
  { gpu: "A100 40GB", memoryGb: 40, profiles: [p("1g.5gb", 1, 7), p("1g.10gb", 1, 4), p("2g.10gb", 2, 3), p("3g.20gb", 3, 2), p("4g.20gb", 4, 1), p("7g.40gb", 7, 1)] },
  { gpu: "A100 80GB", memoryGb: 80, profiles: [p("1g.10gb", 1, 7), p("1g.20gb", 1, 4), p("2g.20gb", 2, 3), p("3g.40gb", 3, 2), p("4g.40gb", 4, 1), p("7g.80gb", 7, 1)] },
  { gpu: "H100 80GB", memoryGb: 80, profiles: [p("1g.10gb", 1, 7), p("1g.20gb", 1, 4), p("2g.20gb", 2, 3), p("3g.40gb", 3, 2), p("4g.40gb", 4, 1), p("7g.80gb", 7, 1)] },
  { gpu: "H200 141GB", memoryGb: 141, profiles: [p("1g.18gb", 1, 7), p("1g.35gb", 1, 4), p("2g.35gb", 2, 3), p("3g.71gb", 3, 2), p("4g.71gb", 4, 1), p("7g.141gb", 7, 1)] },
];

/** Headroom on the GPU memory peak, percent. */
export const GPU_MEMORY_HEADROOM_PCT = 10;

export type { GpuMemoryFit };

/** The GPU memory to ask for and where it fits; undefined when no GPU memory figure was recorded. */
export function fitGpuMemory(peakBytes: number | undefined, metric: string): GpuMemoryFit | undefined {
  if (peakBytes === undefined || !(peakBytes > 0)) return undefined;
  const peakMb = Number((peakBytes / 1e6).toFixed(3));
  const memoryGb = Math.max(1, Math.ceil(Number(((peakMb * (1 + GPU_MEMORY_HEADROOM_PCT / 100)) / 1000).toFixed(9))));
  const partitions: GpuMemoryFit["partitions"] = [];
  const wholeGpu: string[] = [];
  const tooSmall: string[] = [];
  for (const model of MIG_GPUS) {
    const fits = model.profiles.find((prof) => prof.memoryGb >= memoryGb && prof.computeSevenths < 7);
    if (fits) partitions.push({ gpu: model.gpu, profile: fits.profile, memoryGb: fits.memoryGb, perGpu: fits.instances });
    else if (model.memoryGb >= memoryGb) wholeGpu.push(model.gpu);
    else tooSmall.push(model.gpu);
  }
  return { peakMb, metric, memoryGb, partitions, wholeGpu, tooSmall };
}

/** One line for people: `12 GB: A100 40GB 3g.20gb, A100 80GB 1g.20gb, ...; whole GPU: -`. */
export function describeGpuFit(fit: GpuMemoryFit): string {
  const parts = fit.partitions.map((x) => `${x.gpu} ${x.profile}`);
  const whole = fit.wholeGpu.length > 0 ? `; a whole ${fit.wholeGpu.join(", ")}` : "";
  const none = fit.tooSmall.length > 0 ? `; more than one ${fit.tooSmall.join(", ")}` : "";
  return `GPU memory ${fit.memoryGb} GB (peak ${fit.peakMb.toFixed(3)} MB + ${GPU_MEMORY_HEADROOM_PCT}%): ${parts.length > 0 ? `fits MIG ${parts.join(", ")}` : "no MIG partition"}${whole}${none}`;
}
