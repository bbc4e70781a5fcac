/**
 * Every built-in sink of the registry (plugins/index.ts) through the shared
 * sink contract (test/sinks-contract.ts): a sink is tested by being
 * registered, with its default options writing into the contract's dir;
 * the setups below only say where one needs more (a port, a server, a
 * terminal) and how to count what it kept.
 */
import { afterAll, expect } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Sink, SinkFactory } from "../core/contracts/types.ts";
import { readRecording } from "../core/sinks/recording.ts";
import { builtinSinks, sinkFactory } from "../plugins/index.ts";
import type { PrometheusSink } from "../plugins/prometheus.ts";
import { defineProgressSink } from "../plugins/progress.ts";
import { startEsServer, type EsTestServer } from "./es-server.ts";
import { sinkContract, type SinkContext, type SinkContractOptions } from "./sinks-contract.ts";

interface SinkSetup {
  make?: (ctx: SinkContext, factory: SinkFactory) => Sink | Promise<Sink>;
  options?: SinkContractOptions;
}

const servers: PrometheusSink[] = [];
let esServer: EsTestServer | undefined;
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  esServer?.close();
});

const setups: Record<string, SinkSetup> = {
  csv: {
    options: {
      // A CSV row is a pair of consecutive readings and a lone reading is its own row
      // (the contract never feeds exactly two readings, which would read back as one).
      samplesKept(ctx) {
        let samples = 0;
        for (const file of readdirSync(ctx.dir).filter((f) => f.endsWith("_final_result.csv"))) {
          const rows = readFileSync(join(ctx.dir, file), "utf8").split("\r\n").length - 2;
          samples += rows <= 1 ? rows : rows + 1;
        }
        return samples;
      },
    },
  },
  msgpack: {
    options: {
      samplesKept(ctx) {
        const recording = readRecording(join(ctx.dir, "contract.msgpack"));
        expect(recording.complete).toBe(true);
        return recording.operators.reduce((n, op) => n + op.batches.reduce((m, b) => m + b.rows, 0), 0);
      },
    },
  },
  prometheus: {
    make(ctx, factory) {
      const sink = factory({ out: ctx.out, options: { "prometheus-listen": "127.0.0.1:0" } }) as PrometheusSink;
      servers.push(sink);
      return sink;
    },
  },
  html: {
    async make(ctx, factory) {
      const report = join(ctx.dir, "report.html");
      const sink = await factory({ metricsDir: ctx.dir, out: ctx.out, options: { "html-out": report } });
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
    },
  },
  progress: {
    // drawing on a terminal stand-in: the factory draws only on a real one
    make(ctx) {
      const terminal = { isTTY: true, columns: 100, write: (text: string) => ctx.out.write(text) };
      return defineProgressSink({ stream: terminal, fps: 1000 });
    },
  },
  elasticsearch: {
    // every sample counted in the ES-protocol test server
    make(ctx, factory) {
      esServer?.close();
      esServer = startEsServer({ keepSources: false });
      return factory({ out: ctx.out, options: { "es-url": esServer.url, "es-spool-dir": join(ctx.dir, "spool"), "es-flush": "30ms" } });
    },
    options: { samplesKept: () => esServer!.count("metrics-cpost.container-default"), longRows: 50_000 },
  },
};

for (const [name, load] of Object.entries(builtinSinks)) {
  const factory = sinkFactory((await load()).default);
  const setup = setups[name] ?? {};
  sinkContract(name, (ctx) => (setup.make ? setup.make(ctx, factory) : factory({ metricsDir: ctx.dir, out: ctx.out, options: {} })), setup.options);
}
