/**
 * Sink plugin `webhook`: POSTs the run as JSON events to a URL: one when the
 * run starts, one per operator when it is done (status, samples, CPU and
 * memory, the recommended requests), one at the end. Samples themselves
 * stay in cpost (use csv, msgpack or es for those); the webhook gets what a
 * chat channel or a CI job wants to know.
 *
 *   cpost run pipeline.yaml input --sink-plugin ./webhook.ts --webhook-url https://hooks.example/cpost
 *
 * A bearer token, when needed, comes from the environment variable
 * CPOST_WEBHOOK_TOKEN: never from the command line, where `ps` shows it.
 */
import { defineSink } from "cpost";

export default defineSink({
  name: "webhook",
  description: "POSTs run, operator and end events as JSON to a URL",
  options: {
    url: { description: "where to POST the events (http or https)", required: true },
    "timeout-ms": { description: "how long one POST may take, ms", default: "5000" },
  },

  create({ options }) {
    const url = new URL(options.url); // a bad URL stops the run before it starts
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error(`--webhook-url ${options.url}: not an http(s) URL`);
    const timeoutMs = Number(options["timeout-ms"]);
    if (!(timeoutMs > 0)) throw new Error(`--webhook-timeout-ms ${options["timeout-ms"]}: not a positive number of milliseconds`);
    const token = process.env.CPOST_WEBHOOK_TOKEN;
    let runId = "";
    let samples = 0;

    const post = async (event: Record<string, unknown>): Promise<void> => {
      const response = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify(event),
        signal: AbortSignal.timeout(timeoutMs),
      });
      await response.body?.cancel();
      // thrown, cpost reports it with the sink's name and stops calling this sink; the others go on
      if (!response.ok) throw new Error(`POST ${url.origin}${url.pathname} answered ${response.status} ${response.statusText}`);
    };

    return {
      async start(run) {
        runId = run.id;
        await post({ event: "start", run: run.id, pipeline: run.pipeline.name, host: run.host.hostname, collectors: run.collectors, intervalMs: run.intervalMs, startedAtMs: run.startedAtMs });
      },

      operatorStart() {
        samples = 0;
      },

      write(batch) {
        samples += batch.rows;
      },

      async operatorDone(result, summary) {
        await post({
          event: "operator",
          run: runId,
          operator: result.operator,
          status: result.status,
          exitCode: result.exitCode,
          ...(result.reason === undefined ? {} : { reason: result.reason }),
          samples,
          cpuPercent: summary.cpuPercent,
          memoryMb: summary.memoryMb,
          recommendation: { cpu: summary.recommendation.cpu, memory: summary.recommendation.memory, policy: summary.recommendation.policy },
        });
      },

      async end(result) {
        await post({ event: "end", run: runId, operators: result.results.length, failed: result.results.filter((r) => r.status !== "succeeded").length, interrupted: result.interrupted, endedAtMs: result.endedAtMs });
      },
    };
  },
});
