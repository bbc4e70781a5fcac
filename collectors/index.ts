/**
 * Built-in collectors, loaded lazily: a run imports only those it uses.
 * Each entry is `name -> () => import(...)` of a file named as the user types it.
 */
import { CpostError } from "../core/contracts/errors.ts";
import type { Collector } from "../core/contracts/types.ts";

type CollectorModule = { default: Collector };

export const builtinCollectors: Record<string, () => Promise<CollectorModule>> = {
  cgroup: () => import("./cgroup/index.ts"),
  blkio: () => import("./blkio/index.ts"),
  host: () => import("./host.ts"),
  nvml: () => import("./nvml/index.ts"),
};

/** The collectors `--collectors` selects when not given. */
export const DEFAULT_COLLECTORS = ["cgroup", "blkio"];

/** Loads the named built-in collectors, failing clearly on an unknown name. */
export async function loadCollectors(names: string[]): Promise<Collector[]> {
  const out: Collector[] = [];
  for (const name of names) {
    const load = builtinCollectors[name];
    if (!load) {
      throw new CpostError("usage", `unknown collector "${name}"`, {
        hint: `built-in collectors: ${Object.keys(builtinCollectors).join(", ") || "(none yet)"}; see \`cpost plugins\``,
      });
    }
    out.push((await load()).default);
  }
  return out;
}
