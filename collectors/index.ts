/**
 * Built-in collectors, loaded lazily: a run imports only those it uses.
 * Each entry is `name -> () => import(...)` of a file named as the user types it.
 */
import { CpostError } from "../core/contracts/errors.ts";
import { builtinCollector, type CollectorPlugin } from "../core/contracts/plugin-sdk.ts";
import type { Collector } from "../core/contracts/types.ts";

/**
 * A built-in collector's module: its default export is written with
 * defineCollector, as a user's plugin is; `create(settings)`, where it has
 * one, makes an instance configured otherwise (fixture roots in tests).
 */
export type CollectorModule = { default: CollectorPlugin; create?: (settings: Record<string, unknown>) => Collector };

export const builtinCollectors: Record<string, () => Promise<CollectorModule>> = {
  cgroup: () => import("./cgroup/index.ts"),
  blkio: () => import("./blkio/index.ts"),
  host: () => import("./host.ts"),
  nvml: () => import("./nvml/index.ts"),
};

/** The collectors `--collectors` selects when not given. */
export const DEFAULT_COLLECTORS = ["cgroup", "blkio"];

/**
 * The built-in collector `name` as the sampler runs it: its default export,
 * or `create(settings)`'s instance where settings are given (the sampler's
 * worker rebuilding a configured one from its `portable` recipe).
 */
export async function loadBuiltinCollector(name: string, settings?: Record<string, unknown>): Promise<Collector> {
  return collectorOfModule(name, await builtinCollectors[name]!(), settings);
}

/** A registered module's collector, as loadBuiltinCollector makes it (for registries of the tests' own). */
export function collectorOfModule(name: string, module: CollectorModule, settings?: Record<string, unknown>): Collector {
  return settings && module.create ? module.create(settings) : builtinCollector(module.default, { module: name });
}

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
    out.push(await loadBuiltinCollector(name));
  }
  return out;
}
