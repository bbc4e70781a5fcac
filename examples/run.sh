#!/usr/bin/env bash
# Sets up what cpost needs (node modules with bun, a Docker engine, the test
# image) and runs the bundled example pipeline, printing the CPOST tables
# and writing CSVs and a msgpack recording under ./cpost-example-metrics.
# Run as root on Debian/Ubuntu: bash examples/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash test/setup.sh
out=${1:-cpost-example-metrics}
mkdir -p "$out"
exec node_modules/.bin/bun core/main.ts run examples/diamond/pipeline.yaml examples/diamond/input \
  --collectors cgroup,blkio --sinks table,csv,msgpack --metrics_dir "$out"
