/** A command whose issue has not landed: it says so and exits 2, never fakes output. */
import { defineCommand, type ArgsDef, type CommandDef } from "citty";
import { CpostError } from "../errors.ts";

export function notYet(name: string, description: string, feature: string, args: ArgsDef = {}): CommandDef {
  return defineCommand({
    meta: { name, description: `${description} (not available yet)` },
    args,
    run() {
      throw new CpostError("unavailable", `\`cpost ${name}\` is not available yet in this build: ${feature}`, {
        hint: "use `cpost run` / `cpost validate`, or a newer cpost",
      });
    },
  });
}
