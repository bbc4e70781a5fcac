/**
 * The command tree. Each command lives in core/commands/<name>.ts and is
 * loaded only when used; this file is the only one that turns a CpostError
 * into text and an exit code.
 */
import { renderUsage, runCommand, type CommandDef } from "citty";
import { consola } from "consola";
import { asCpostError, CpostError, EXIT, exitCodeOf, formatError } from "../contracts/errors.ts";
import { VERSION } from "../contracts/version.ts";

type LazyCommand = () => Promise<CommandDef>;
// Commands are typed by their own args; the tree only needs them as CommandDef.
const load = (p: Promise<{ default: unknown }>): Promise<CommandDef> => p.then((m) => m.default as CommandDef);

/** Sub-commands of `cpost`, in the order `--help` lists them. */
export const subCommands: Record<string, LazyCommand> = {
  run: () => load(import("./commands/run.ts")),
  validate: () => load(import("./commands/validate.ts")),
  size: () => load(import("./commands/size.ts")),
  replay: () => load(import("./commands/replay.ts")),
  report: () => load(import("./commands/report.ts")),
  monitor: () => load(import("./commands/monitor.ts")),
  es: () => load(import("./commands/es.ts")),
  plugins: () => load(import("./commands/plugins.ts")),
  "grafana-dashboard": () => load(import("./commands/grafana-dashboard.ts")),
};

/** The CPOST-compatible form `cpost <pipeline.yaml> <input_dir> [...]`. */
const legacy: LazyCommand = () => load(import("./commands/legacy.ts"));

const HELP = `cpost ${VERSION}: size and monitor containerised pipelines

USAGE
  cpost <pipeline.yaml> <input_dir> [--metrics_dir D] [--models_dir D] [-v] [--force none|cont|stop]
      Run every operator, one at a time, and print what each used (CPOST-compatible).
  cpost <command> [options]

COMMANDS
  run <pipeline.yaml> <input_dir>   run a pipeline with chosen collectors and sinks
  validate <pipeline.yaml>          check a pipeline and print its execution order and mounts
  size <pipeline.yaml> <input_dir>  run, then recommend (and --apply) requests
  replay <run.msgpack>              feed a recorded run into sinks
  report <run.msgpack> -o r.html    self-contained HTML report with charts
  monitor serve|start|stop          host monitor with an HTTP control API
  es setup                          create Elasticsearch index templates
  plugins                           list collectors and sinks
  grafana-dashboard                 print a Grafana dashboard JSON

OPTIONS
  -h, --help       help (also after a command: cpost run --help)
  --version        print the version

Exit codes: 0 every operator succeeded, 1 an operator failed, 2 usage or input error, 70 internal error (a bug in cpost), 130 interrupted.`;

function isHelp(arg: string | undefined): boolean {
  return arg === "-h" || arg === "--help" || arg === "help";
}

/** Runs cpost with `argv` (without node/bun and script); returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const first = argv.find((a) => !a.startsWith("-"));
  try {
    if (argv[0] === "--version" || argv[0] === "-V") {
      process.stdout.write(`cpost ${VERSION}\n`);
      return EXIT.ok;
    }
    if (argv.length === 0 || (isHelp(argv[0]) && argv.length === 1)) {
      process.stdout.write(`${HELP}\n`);
      return argv.length === 0 ? EXIT.usage : EXIT.ok;
    }
    const name = first !== undefined && first in subCommands ? first : undefined;
    const command = name ? await subCommands[name]!() : await legacy();
    const rest = name ? argv.slice(argv.indexOf(name) + 1) : argv;
    if (rest.some(isHelp) || (name && hasSubCommands(command) && rest.filter((a) => !a.startsWith("-")).length === 0)) {
      const target = await helpTarget(command, rest);
      const usage = await renderUsage(target.cmd, target.parent);
      // citty colours its usage unconditionally; a pipe or file gets plain text.
      process.stdout.write(`${process.stdout.isTTY && !process.env.NO_COLOR ? usage : stripAnsi(usage)}\n`);
      return rest.some(isHelp) ? EXIT.ok : EXIT.usage;
    }
    const { result } = await runCommand(command, { rawArgs: rest });
    return typeof result === "number" ? result : EXIT.ok;
  } catch (thrown) {
    const error = toCpostError(thrown);
    if (error.code === "interrupted") {
      consola.warn(error.message);
    } else if (error.code === "internal") {
      // A bug in cpost, not in the user's input: say so, and where the stack is.
      const verbose = argv.includes("-v") || argv.includes("--verbose") || Boolean(process.env.CPOST_DEBUG);
      process.stderr.write(`cpost: internal error: ${formatError(error)}\n`);
      process.stderr.write(`cpost: this is a bug in cpost ${VERSION}; please report it with the command you ran${verbose ? " and this stack" : " (run it again with -v for the stack)"}\n`);
      const stack = error.cause instanceof Error ? error.cause.stack : error.stack;
      if (verbose && stack) process.stderr.write(`${stack}\n`);
    } else {
      process.stderr.write(`cpost: ${formatError(error)}\n`);
    }
    return exitCodeOf(error);
  }
}

function stripAnsi(text: string): string {
  return text.replace(/\u001b\[[0-9;]*m/g, "");
}

function hasSubCommands(cmd: CommandDef): boolean {
  return cmd.subCommands !== undefined;
}

async function helpTarget(cmd: CommandDef, rest: string[]): Promise<{ cmd: CommandDef; parent?: CommandDef }> {
  const subs = (typeof cmd.subCommands === "function" ? await cmd.subCommands() : cmd.subCommands) as
    | Record<string, CommandDef | (() => Promise<CommandDef>)>
    | undefined;
  const word = rest.find((a) => !a.startsWith("-"));
  if (subs && word && word in subs) {
    const sub = subs[word]!;
    const meta = typeof cmd.meta === "function" ? await cmd.meta() : await cmd.meta;
    // Name the whole path: "cpost monitor serve".
    return { cmd: typeof sub === "function" ? await sub() : sub, parent: { meta: { name: `cpost ${meta?.name ?? ""}`.trim() } } };
  }
  return { cmd, parent: ROOT };
}

/** Stands for `cpost` as the parent in usage lines ("cpost validate ..."). */
const ROOT: CommandDef = { meta: { name: "cpost" } };

/** citty's own errors (missing argument, bad enum value) are usage errors. */
function toCpostError(thrown: unknown): CpostError {
  if (thrown instanceof CpostError) return thrown;
  if (thrown instanceof Error && thrown.name === "CLIError") {
    return new CpostError("usage", thrown.message, { hint: "see `cpost --help`" });
  }
  return asCpostError(thrown);
}
