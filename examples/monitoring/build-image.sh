#!/usr/bin/env bash
# Builds cpost-local/cpost:latest: the compiled cpost executable, the C
# libraries it links (it is not static), and busybox for `sh`, so a pipeline
# stage can run `cpost monitor start|stop`. No registry needed.
# Run as root from anywhere: bash examples/monitoring/build-image.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x dist/cpost ] || node_modules/.bin/bun build --compile --minify core/main.ts --outfile dist/cpost
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/output"
cp dist/cpost "$root/bin/cpost"
cp /bin/busybox "$root/bin/busybox"
for a in sh cat echo; do ln -s busybox "$root/bin/$a"; done
for lib in $(ldd dist/cpost | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' - cpost-local/cpost:latest
echo "built cpost-local/cpost:latest ($(du -sh "$root" | cut -f1))"
