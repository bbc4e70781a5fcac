/**
 * A real Prometheus (Debian's `prometheus` package) for tests: started in a
 * temp dir with a config that scrapes the given 127.0.0.1 targets every
 * second, queried through its HTTP API, removed afterwards.
 */
import { test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IN_CI } from "./support.ts";

export const PROMETHEUS = Bun.which("prometheus");

/** A test that needs the prometheus binary: skipped with its reason locally, failed in CI. */
export function prometheusTest(name: string, fn: () => Promise<void> | void, timeoutMs = 90_000): void {
  if (PROMETHEUS) test(name, fn, timeoutMs);
  else if (IN_CI) test(name, () => { throw new Error("prometheus is not installed (CI requires it; test/setup.sh installs Debian's prometheus)"); });
  else test.skip(`${name} (skipped: no prometheus binary; apt-get install prometheus)`, fn);
}

/** One series of a range-vector query: its labels and raw samples (time in ms, value). */
export interface RawSeries {
  metric: Record<string, string>;
  samples: Array<[number, number]>;
}

/** A running Prometheus. */
export interface PrometheusServer {
  url: string;
  /** Raw samples of `selector` over the last `windowS` seconds, as stored (no evaluation). */
  rawSamples(selector: string, windowS?: number): Promise<RawSeries[]>;
  /** Names of every series Prometheus has stored. */
  metricNames(): Promise<string[]>;
  /** Polls until `check` returns a value (not undefined) or the deadline passes. */
  waitFor<T>(what: string, check: () => Promise<T | undefined>, deadlineMs?: number): Promise<T>;
  stop(): Promise<void>;
}

/** A TCP port nothing listens on right now. */
export function freePort(): number {
  const probe = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  const port = probe.port!;
  probe.stop(true);
  return port;
}

/** Starts Prometheus scraping `targets` (host:port, path /metrics) every second. */
export async function startPrometheus(targets: string[]): Promise<PrometheusServer> {
  const dir = mkdtempSync(join(tmpdir(), "cpost-prometheus-"));
  const config = [
    "global: { scrape_interval: 1s, scrape_timeout: 900ms }",
    "scrape_configs:",
    "  - job_name: cpost",
    "    static_configs:",
    `      - targets: [${targets.map((t) => JSON.stringify(t)).join(", ")}]`,
  ].join("\n");
  writeFileSync(join(dir, "prometheus.yml"), `${config}\n`);
  const port = freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = Bun.spawn(
    [PROMETHEUS!, `--config.file=${join(dir, "prometheus.yml")}`, `--storage.tsdb.path=${join(dir, "data")}`, `--web.listen-address=127.0.0.1:${port}`, "--log.level=warn"],
    { cwd: dir, stdout: "ignore", stderr: Bun.file(join(dir, "prometheus.log")) },
  );

  async function api(path: string): Promise<unknown> {
    const res = await fetch(`${url}${path}`, { signal: AbortSignal.timeout(5000) });
    const body = (await res.json()) as { status: string; data: unknown; error?: string };
    if (body.status !== "success") throw new Error(`prometheus ${path}: ${body.error}`);
    return body.data;
  }

  const server: PrometheusServer = {
    url,
    async rawSamples(selector, windowS = 300) {
      const data = (await api(`/api/v1/query?query=${encodeURIComponent(`${selector}[${windowS}s]`)}&time=${Date.now() / 1000}`)) as {
        result: Array<{ metric: Record<string, string>; values: Array<[number, string]> }>;
      };
      return data.result.map((r) => ({ metric: r.metric, samples: r.values.map(([t, v]) => [Math.round(t * 1000), Number(v)] as [number, number]) }));
    },
    async metricNames() {
      return (await api("/api/v1/label/__name__/values")) as string[];
    },
    async waitFor(what, check, deadlineMs = 20_000) {
      const deadline = Date.now() + deadlineMs;
      for (;;) {
        const value = await check().catch(() => undefined);
        if (value !== undefined) return value;
        if (Date.now() > deadline) {
          const log = await Bun.file(join(dir, "prometheus.log")).text().catch(() => "");
          throw new Error(`prometheus: ${what} not seen within ${deadlineMs} ms\n${log.slice(-2000)}`);
        }
        await Bun.sleep(200);
      }
    },
    async stop() {
      proc.kill("SIGTERM");
      await Promise.race([proc.exited, Bun.sleep(5000)]);
      proc.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await server.waitFor("readiness", async () => ((await fetch(`${url}/-/ready`)).ok ? true : undefined), 30_000);
  return server;
}
