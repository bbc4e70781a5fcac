/**
 * The shared contract suites, for a plugin author's own `bun test`:
 *
 *   import { collectorContract, containerTarget, pluginCollector, pluginSink, sinkContract } from "cpost/contract";
 *   collectorContract("proc-status", () => pluginCollector("./proc-status.ts"), { target: () => containerTarget() });
 *   sinkContract("webhook", (ctx) => pluginSink("./webhook.ts", ctx, { url: "http://127.0.0.1:8080/" }));
 *
 * Plugin files are loaded as the cpost executable loads them (the same
 * checks, the same wrapping), so what passes here runs there.
 */
import { loadPlugins, sinkFactoryOf } from "../core/registry/plugin-loader.ts";
import type { Sink } from "../core/contracts/types.ts";
import type { SinkContext } from "./sinks-contract.ts";

export { collectorContract, containerTarget, hostTarget, pluginCollector, type CollectorContractOptions, type LiveTarget } from "./collectors-contract.ts";
export { contractBatches, contractColumns, sinkContract, type SinkContext, type SinkContractOptions } from "./sinks-contract.ts";

/** A sink plugin file made into a sink for the contract's context, with its options as `--<name>-<option>` would give them. */
export async function pluginSink(file: string, ctx: SinkContext, options: Record<string, string> = {}): Promise<Sink> {
  const plugin = (await loadPlugins({ sinkFiles: [file] })).plugins[0]!;
  if (plugin.kind !== "sink") throw new Error(`${file} is a collector plugin, not a sink`);
  const given = Object.fromEntries(Object.entries(options).map(([k, v]) => [`${plugin.name}-${k}`, v]));
  return sinkFactoryOf(plugin)({ metricsDir: ctx.dir, out: ctx.out, options: given });
}
