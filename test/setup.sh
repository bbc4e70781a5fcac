#!/usr/bin/env bash
# Brings up what cpost's tests need on a Debian machine, idempotently:
# node modules (bun comes from npm), a running Docker engine, podman (its
# service is started by the test that needs it), and the test image
# cpost-test/busybox:1 (static busybox + the ground-truth workload).
# Run as root. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[setup] $*" >&2; }

if [ ! -x node_modules/.bin/bun ]; then
  log "installing node modules"
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund >&2; else npm install --no-audit --no-fund >&2; fi
fi

need_apt=()
command -v dockerd >/dev/null || need_apt+=(docker.io)
[ -x /bin/busybox ] && /bin/busybox --help 2>&1 | head -1 | grep -q . || need_apt+=(busybox-static)
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
# Podman: test/podman.test.ts runs a pipeline on its Docker-compatible socket (it starts the service itself).
command -v podman >/dev/null || need_apt+=(podman)
command -v chromium >/dev/null || need_apt+=(chromium)  # the HTML report is tested in headless Chromium
command -v prometheus >/dev/null || need_apt+=(prometheus)  # the prometheus sink is tested against a real Prometheus (and promtool)
# A real OpenSearch node for the es tests (test/opensearch/): a JDK to compile and run its launcher, Maven to resolve its jars.
command -v javac >/dev/null || need_apt+=(default-jdk-headless)
command -v mvn >/dev/null || need_apt+=(maven)
if [ -n "${CPOST_SETUP_EXTRA:-}" ]; then need_apt+=($CPOST_SETUP_EXTRA); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${need_apt[@]}" >&2
fi
# busybox must be static: the image has no libc.
if ! file -L /bin/busybox 2>/dev/null | grep -q static && ! ldd /bin/busybox 2>&1 | grep -q "not a dynamic"; then
  log "installing busybox-static"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >&2
fi

sock=/var/run/docker.sock
ping() { curl -sf --max-time 2 --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; }
if ! ping; then
  log "starting dockerd"
  nohup dockerd --iptables=false --bridge=none >/tmp/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do ping && break; sleep 0.5; done
  ping || { log "dockerd did not answer; see /tmp/dockerd.log"; tail -20 /tmp/dockerd.log >&2; exit 1; }
fi

image=cpost-test/busybox:1
src_hash=$(cat test/workload/workload.c test/setup.sh | sha256sum | cut -c1-12)
have=$(docker image inspect -f '{{index .Config.Labels "cpost.test.hash"}}' "$image" 2>/dev/null || true)
if [ "$have" != "$src_hash" ]; then
  log "building $image"
  d=$(mktemp -d)
  mkdir -p "$d/bin" "$d/tmp" "$d/input" "$d/output"
  cp /bin/busybox "$d/bin/"
  for a in sh sleep yes dd head cat timeout env ls mkdir cp echo wc tr sed true false test grep kill rm touch; do
    ln -s busybox "$d/bin/$a"
  done
  gcc -static -O2 -pthread -o "$d/bin/cpost-workload" test/workload/workload.c
  tar -C "$d" -c . | docker import -c "LABEL cpost.test.hash=$src_hash" - "$image" >&2
  rm -rf "$d"
fi
# Resolved once and cached in .cache/opensearch; without the network the OpenSearch tests say why (skipped locally, failed in CI).
bash test/opensearch/prepare.sh >/dev/null || log "no OpenSearch node for the es tests (see the line above)"
log "ready: $(docker version -f '{{.Server.Version}}') with $image"
