/**
 * The one warning channel: the CLI hands this down (RunRequest.warn, the
 * runner's and monitor's `warn`), so every warning reads the same and only
 * the command line decides where it goes.
 */

/** Writes `warning: <message>` on stderr. */
export function warn(message: string): void {
  process.stderr.write(`warning: ${message}\n`);
}
