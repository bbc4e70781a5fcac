/**
 * The built-in sinks not covered elsewhere through the shared sink contract
 * (table, csv and msgpack run it in sinks.test.ts, elasticsearch in
 * elasticsearch-contract.test.ts): prometheus on its own port per sink,
 * html with its report read back, progress drawing on a terminal stand-in.
 */
import { afterAll, expect } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import html from "../plugins/html/index.ts";
import createPrometheusSink, { type PrometheusSink } from "../plugins/prometheus.ts";
import { defineProgressSink } from "../plugins/progress.ts";
import { sinkContract } from "./sinks-contract.ts";

const servers: PrometheusSink[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

sinkContract("prometheus", (ctx) => {
  const sink = createPrometheusSink({ out: ctx.out, options: { "prometheus-listen": "127.0.0.1:0" } });
  servers.push(sink);
  return sink;
});

sinkContract("html", async (ctx) => {
  const report = join(ctx.dir, "report.html");
  const sink = await html({ metricsDir: ctx.dir, out: ctx.out, options: { "html-out": report } });
  // the report is written at the end: read it back there, with every operator of the run in it
  return {
    ...sink,
    name: sink.name,
    start: (run) => sink.start(run),
    operatorStart: (op) => sink.operatorStart?.(op),
    write: (batch) => sink.write(batch),
    operatorDone: (result, summary) => sink.operatorDone(result, summary),
    async end(result) {
      await sink.end(result);
      const page = readFileSync(report, "utf8");
      for (const op of ctx.run!.pipeline.operators) expect(page).toContain(op.name);
      expect(ctx.out.text).toContain(report);
    },
  };
});

sinkContract("progress", (ctx) => {
  const terminal = { isTTY: true, columns: 100, write: (text: string) => ctx.out.write(text) };
  return defineProgressSink({ stream: terminal, fps: 1000 });
});
