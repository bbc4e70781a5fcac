#!/usr/bin/env bash
# Monitor mode on one machine, with the client on the host: starts
# `cpost monitor serve`, switches a session on, runs the diamond example
# pipeline, switches it off, and shows what Prometheus would have scraped.
# (pipeline.yaml here does the same with the client inside the pipeline.)
# Run as root on Debian/Ubuntu: bash examples/monitoring/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
bash test/setup.sh
cpost() { node_modules/.bin/bun core/main.ts "$@"; }

# Watch only the containers cpost runs (label cpost.run); sample every 100 ms.
# (Started directly, not through the function, so $! is the monitor itself and SIGTERM reaches it.)
node_modules/.bin/bun core/main.ts monitor serve --interval 100ms --label cpost.run --sinks prometheus --prometheus-listen 127.0.0.1:9686 &
monitor=$!
trap 'kill -TERM $monitor; wait $monitor' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:8686/healthz >/dev/null && break; sleep 0.1; done
kill -0 $monitor  # it refused to start (a busy port): its message is above

cpost monitor start --job diamond-example --label source=examples
cpost run examples/diamond/pipeline.yaml examples/diamond/input --quiet
curl -s http://127.0.0.1:9686/metrics | grep -E '^cpost_(run_info|container_memory_usage_bytes)' | head -5
cpost monitor stop
echo "Import the dashboard: cpost grafana-dashboard --datasource prometheus > cpost-dashboard.json"
