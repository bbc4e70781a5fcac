/**
 * The sizing ground truth's cases and what each truly needs, shared by
 * test/sizing-truth.test.ts (this host) and test/vm.test.ts (cgroup v2, the
 * same cases in test/vm/pipelines/sizing-truth.yaml).
 */

/** What each case needs on a host with `cpus` CPUs, under either policy. */
export function sizingNeeds(cpus: number): Record<string, { cpu: number; memory: number }> {
  return {
    one: { cpu: 1, memory: 256 },
    two: { cpu: Math.min(2, cpus), memory: 256 },
    three: { cpu: Math.min(3, cpus), memory: 256 },
    // 300 MiB = 314.6 MB (+ a few MB of the process): + 100 MB (cpost) or + 15 % (percentile) -> 512.
    held: { cpu: 1, memory: 512 },
    // 400 MiB of page cache is given back before an OOM kill: the need is the ~1 MiB held.
    cache: { cpu: 1, memory: 256 },
    short: { cpu: 1, memory: 256 },
  };
}
