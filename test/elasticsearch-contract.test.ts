/** The Elasticsearch sink passes the shared sink contract, every sample counted in the ES-protocol test server. */
import { afterAll } from "bun:test";
import { join } from "node:path";
import elasticsearch from "../plugins/elasticsearch/index.ts";
import { startEsServer, type EsTestServer } from "./es-server.ts";
import { sinkContract } from "./sinks-contract.ts";

let contractServer: EsTestServer | undefined;
sinkContract("elasticsearch", (ctx) => {
  contractServer?.close();
  contractServer = startEsServer({ keepSources: false });
  return elasticsearch({ out: ctx.out, options: { "es-url": contractServer.url, "es-spool-dir": join(ctx.dir, "spool"), "es-flush": "30ms" } });
}, {
  samplesKept: () => contractServer!.count("metrics-cpost.container-default"),
  longRows: 50_000,
});
afterAll(() => contractServer?.close());
