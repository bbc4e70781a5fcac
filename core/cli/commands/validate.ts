/** `cpost validate <pipeline.yaml>`: parse, check, print the execution order and mounts. */
import { defineCommand } from "citty";
import { resolve } from "node:path";
import { formatWarning, loadPipeline, mountsFor, upstreamsOf } from "../../pipeline/pipeline.ts";
import { warn } from "../console.ts";

export default defineCommand({
  meta: {
    name: "validate",
    description: "Check a pipeline definition and print its operators in execution order, with their mounts.",
  },
  args: {
    pipeline: { type: "positional", required: true, description: "pipeline definition file (Clara pipeline YAML, api-version 0.3/0.4)", valueHint: "pipeline.yaml" },
    input: { type: "string", description: "input payload directory, to show the real host paths of the mounts", valueHint: "dir" },
    json: { type: "boolean", description: "print the checked pipeline as JSON" },
  },
  run({ args }) {
    const { pipeline, warnings } = loadPipeline(args.pipeline);
    for (const w of warnings) warn(formatWarning(w));
    if (args.json) {
      process.stdout.write(`${JSON.stringify({ ...pipeline, order: pipeline.order.map((o) => o.name) }, null, 2)}\n`);
      return 0;
    }
    const inputDir = args.input ? resolve(args.input) : "<input_dir>";
    const lines = [`pipeline ${pipeline.name} (api-version ${pipeline.apiVersion}): ${pipeline.order.length} operators, valid`, ""];
    pipeline.order.forEach((op, i) => {
      const after = upstreamsOf(op);
      lines.push(`${i + 1}. ${op.name}  ${op.image}:${op.tag}${after.length ? `  (after ${after.join(", ")})` : ""}`);
      if (op.command) lines.push(`     command: ${JSON.stringify(op.command)}`);
      for (const m of mountsFor(pipeline, op, inputDir, "<work>")) {
        const what = m.kind === "input" ? "input dir" : m.kind === "upstream" ? `output of ${m.from}` : m.kind;
        lines.push(`     ${m.containerPath.padEnd(16)} <- ${m.hostPath}  [${what}${m.readOnly ? ", read-only" : ""}]`);
      }
      if (op.needsTriton) lines.push("     + Triton server on cpost_net (needs --models_dir)");
    });
    process.stdout.write(`${lines.join("\n")}\n`);
    return 0;
  },
});
