#!/usr/bin/env bun
/** Entry of the `cpost` executable. */
import { main } from "./cli/cli.ts";

process.exitCode = await main(process.argv.slice(2));
