/**
 * The sampler's worker thread. It builds its own collectors from their
 * `portable` recipes, then never returns to its event loop: it sleeps until
 * the next slot of the schedule or until the main thread flags a command,
 * so its intervals do not depend on what the main thread (sinks, the
 * engine, garbage collection) is doing. Where every probe offers captured
 * reads, it sleeps in the native loop (native/sampling-loop.ts), which takes
 * the ticks between the probes' slower tiers without waking JavaScript;
 * otherwise, or where the loop cannot be built, in Atomics.wait. Commands
 * come on a MessagePort read with receiveMessageOnPort; batches and replies
 * go back on it. The compiled binary must list this file as an extra
 * entrypoint.
 */
import { readlinkSync } from "node:fs";
import { setPriority } from "node:os";
import { receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { builtinCollectors, loadBuiltinCollector } from "../../collectors/index.ts";
import { LOOP, openSamplingLoop, type SamplingLoop } from "../../native/sampling-loop.ts";
import { createPluginCollector } from "../registry/plugin-loader.ts";
import { defineSamplingCore, epochNow, type CoreEvent } from "./sampler-core.ts";
import { CTRL, type WorkerCommand, type WorkerInit, type WorkerMessage } from "./sampler.ts";
import type { Collector } from "../contracts/types.ts";

declare const self: Worker;

const SAMPLER_NICE = -10;
/** How often the sampling thread collects its garbage itself while the native loop samples (a full collection of its small heap: ~1 ms). */
const GC_EVERY_MS = 5000;

type CollectorModule = { default?: Collector; create?: (options: Record<string, unknown>) => Collector };

async function build(recipe: NonNullable<Collector["portable"]>): Promise<Collector> {
  if (Object.hasOwn(builtinCollectors, recipe.module)) return loadBuiltinCollector(recipe.module, recipe.options);
  // a plugin file: loaded, checked and wrapped as on the main thread
  if (recipe.module.startsWith("file:")) return createPluginCollector(recipe.module, recipe.options);
  const mod = (await import(recipe.module)) as CollectorModule;
  const collector = recipe.options && mod.create ? mod.create(recipe.options) : mod.default;
  if (!collector) throw new Error(`${recipe.module} exports neither create() nor a default collector`);
  return collector;
}

/**
 * Asks for a higher priority for this thread alone (Linux applies a tid's
 * nice value to that thread): a busy host then delays its wake-ups less.
 * Needs CAP_SYS_NICE; without it the thread keeps the default.
 */
function raisePriority(): void {
  try {
    setPriority(Number(readlinkSync("/proc/thread-self").split("/").pop()), SAMPLER_NICE);
  } catch {
    // not permitted or not Linux: sample at the default priority
  }
}

function run(init: WorkerInit, collectors: Collector[], port: MessagePort, native: SamplingLoop | null): void {
  let loop = native;
  const { ctrl } = init;
  raisePriority();
  const post = (message: WorkerMessage): void => {
    const transfer = message.type === "batch" ? [message.timestampMs.buffer, message.monotonicMs.buffer, message.values.buffer] : [];
    port.postMessage(message, transfer as ArrayBuffer[]);
  };
  const core = defineSamplingCore({
    collectors,
    intervalMs: init.intervalMs,
    batchMs: init.batchMs,
    epochOriginMs: init.epochOriginMs,
    emit: (event: CoreEvent) => post(event),
  });
  const reply = (seq: number, result: unknown, error?: string): void => {
    post({ type: "reply", seq, result, error });
    Atomics.add(ctrl, CTRL.replied, 1);
    Atomics.notify(ctrl, CTRL.replied);
  };
  const handle = (command: WorkerCommand): boolean => {
    try {
      switch (command.op) {
        case "watch":
          reply(command.seq, core.watch(command.id, command.target, command.pending === true));
          return true;
        case "pid":
          core.setPid(command.id, command.pid);
          return true;
        case "finish":
          core.finish(command.id, command.graceMs);
          return true;
        case "stop":
          core.stop(command.id);
          reply(command.seq, null);
          return true;
        case "intervals":
          reply(command.seq, core.intervals());
          return true;
        case "close":
          core.close();
          reply(command.seq, null);
          return false;
      }
    } catch (e) {
      reply(command.seq, null, e instanceof Error ? e.message : String(e));
      return command.op !== "close";
    }
  };
  let due = Infinity;
  let collectedAt = performance.now();
  for (;;) {
    if (epochNow() >= due) core.tick();
    due = core.nextDue();
    let captured = 0;
    try {
      if (loop && Atomics.load(ctrl, CTRL.wake) === 0) captured = core.capture(loop, ctrl);
      // This thread never returns to an event loop, and while the native loop samples it runs JS only
      // ~10 times a second: the collector then fell behind its batches' garbage (a 20-container
      // monitor grew 105 -> 121 MiB in 30 s, +14.8 %). A collection every GC_EVERY_MS keeps it flat (+1.3 %).
      if (captured !== 0 && performance.now() - collectedAt >= GC_EVERY_MS) {
        Bun.gc(true);
        collectedAt = performance.now();
      }
    } catch (e) {
      // a fault of the native path must not stop sampling: JS ticks from here on
      loop = null;
      post({ type: "warning", message: `native sampling loop failed (${e instanceof Error ? e.message : String(e)}); sampling in JS from now on` });
    }
    if (captured === LOOP.full || captured === LOOP.gone) {
      due = Infinity; // decoded; the next slot is the loop's again
      continue;
    }
    if (captured === LOOP.live) due = core.liveSlotMs(); // the slot JS ticks itself: now, or after a short wait
    const wait = due - epochNow();
    if (captured !== LOOP.command && wait > 0 && Atomics.load(ctrl, CTRL.wake) === 0) Atomics.wait(ctrl, CTRL.wake, 0, Number.isFinite(wait) ? wait : undefined);
    if (Atomics.exchange(ctrl, CTRL.wake, 0) === 0) continue;
    for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) {
      if (!handle(m.message as WorkerCommand)) {
        port.close();
        return;
      }
    }
    due = core.nextDue();
  }
}

self.onmessage = async (event: MessageEvent) => {
  const init = event.data as WorkerInit;
  let collectors: Collector[];
  try {
    collectors = await Promise.all(init.recipes.map(build));
  } catch (e) {
    init.port.postMessage({ type: "failed", message: e instanceof Error ? e.message : String(e) } satisfies WorkerMessage);
    Atomics.store(init.ctrl, CTRL.ready, 2);
    Atomics.notify(init.ctrl, CTRL.ready);
    return;
  }
  const loop = init.nativeLoop ? openSamplingLoop() : "not asked for";
  init.port.postMessage({ type: "loop", waker: typeof loop === "string" ? null : loop.waker, why: typeof loop === "string" ? loop : undefined } satisfies WorkerMessage);
  Atomics.store(init.ctrl, CTRL.ready, 1);
  Atomics.notify(init.ctrl, CTRL.ready);
  run(init, collectors, init.port, typeof loop === "string" ? null : loop);
};
