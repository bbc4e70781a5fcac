/**
 * The one driver of the sink call sequence, used by the runner, the
 * monitor and replay: start, then per operator operatorStart / write /
 * operatorDone, then end. Hooks run one at a time and one sink after the
 * other, never concurrently: the sampler enqueues and goes on, so a slow
 * sink never blocks sampling. The error rule: a throwing sink is reported
 * once (a CpostError naming the sink and the hook) and then left out, but
 * `end` still reaches it so it can close.
 */
import { pluginError, type CpostError } from "../contracts/errors.ts";
import type { Sink } from "../contracts/types.ts";

/** Sinks driven as one. */
export interface SinkSession {
  /** Queues `hook` for every sink still in the session; resolves when it has reached them all. */
  call(hook: string, fn: (sink: Sink) => unknown): Promise<void>;
  /** Reports, through the session's error channel's warning, how many calls each failed sink missed. */
  reportSuppressed(): void;
  /** The sinks that failed, each with its first error. */
  readonly failures: ReadonlyMap<Sink, CpostError>;
}

/** A session over `sinks`; `onError` hears each failing sink once, `warn` what was left out. */
export function defineSinkSession(sinks: Sink[], onError: (error: CpostError) => void, warn: (message: string) => void = () => {}): SinkSession {
  const failures = new Map<Sink, CpostError>();
  const skipped = new Map<Sink, number>();
  let tail: Promise<void> = Promise.resolve();
  return {
    failures,
    call(hook, fn) {
      tail = tail.then(async () => {
        for (const sink of sinks) {
          if (failures.has(sink) && hook !== "end") {
            skipped.set(sink, (skipped.get(sink) ?? 0) + 1);
            continue;
          }
          try {
            await fn(sink);
          } catch (thrown) {
            if (failures.has(sink)) continue;
            const error = pluginError(sink.name, hook, thrown);
            failures.set(sink, error);
            onError(error);
          }
        }
      });
      return tail;
    },
    reportSuppressed() {
      for (const [sink, calls] of skipped) {
        if (calls > 0) warn(`sink ${sink.name} was left out of ${calls} later call(s) after it failed`);
      }
    },
  };
}

/** A session whose errors and suppressed calls are warnings: the runner's and the monitor's. */
export function defineSinkFanout(sinks: Sink[], warn: (message: string) => void): SinkSession {
  return defineSinkSession(sinks, (error) => warn(error.message), warn);
}
