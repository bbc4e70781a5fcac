/**
 * Calls sinks in hook order, one hook at a time and one sink after the
 * other, never concurrently: the sampler enqueues and goes on, so a slow
 * sink never blocks sampling. A throwing sink is reported once and then
 * left out, as replay does; `end` still reaches it so it can close. Used
 * by the runner and the monitor.
 */
import { pluginError } from "../contracts/errors.ts";
import type { Sink } from "../contracts/types.ts";

export function defineSinkFanout(sinks: Sink[], warn: (message: string) => void) {
  const failed = new Map<Sink, number>();
  let tail: Promise<void> = Promise.resolve();
  return {
    call(hook: string, fn: (sink: Sink) => unknown): Promise<void> {
      tail = tail.then(async () => {
        for (const sink of sinks) {
          if (failed.has(sink) && hook !== "end") {
            failed.set(sink, failed.get(sink)! + 1);
            continue;
          }
          try {
            await fn(sink);
          } catch (thrown) {
            if (failed.has(sink)) continue;
            failed.set(sink, 0);
            warn(pluginError(sink.name, hook, thrown).message);
          }
        }
      });
      return tail;
    },
    reportSuppressed(): void {
      for (const [sink, skippedCalls] of failed) {
        if (skippedCalls > 0) warn(`sink ${sink.name} was left out of ${skippedCalls} later call(s) after it failed`);
      }
    },
  };
}
