#!/usr/bin/env bash
# Builds (or finds cached) the Debian root filesystem of the cgroup v2 test VM:
# debootstrap minbase with systemd, dbus and Debian's docker.io. Prints the
# rootfs directory. (The kernel's modules are added per disk image by run.sh.)
#
#   test/vm/rootfs.sh CACHE_DIR
#
# The result is cached as CACHE_DIR/rootfs-<key>, keyed by everything that
# decides its content (this script, suite, mirror, packages), so a
# warm machine skips the ~40 s debootstrap and a change rebuilds it.
set -euo pipefail

cache=${1:?usage: rootfs.sh CACHE_DIR}
suite=${CPOST_VM_SUITE:-bookworm}
packages=docker.io,kmod,iproute2,procps,systemd,systemd-sysv,dbus

log() { echo "[vm-rootfs] $*" >&2; }

# The Debian mirror the host's apt already uses: the only one reachable here.
mirror=${CPOST_VM_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$mirror" ] || mirror=$(grep -hsE '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
fi

key=$( { cat "$0"; echo "$suite $mirror $packages"; } | sha256sum | cut -c1-16)
out=$cache/rootfs-$key
if [ -f "$out/.cpost-vm-complete" ]; then echo "$out"; exit 0; fi

mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.rootfs-tmp-XXXX")
trap 'rm -rf "$tmp"' EXIT
log "debootstrap $suite from $mirror (packages: $packages)"
start=$SECONDS
debootstrap --variant=minbase --include="$packages" "$suite" "$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1 \
  || { tail -30 "$tmp/debootstrap.log" >&2; log "debootstrap failed"; exit 1; }
log "debootstrap took $((SECONDS - start)) s"

rm -rf "$tmp/root/var/cache/apt/archives"/*.deb "$tmp/root/var/lib/apt/lists"/*

rm -rf "$out"
mv "$tmp/root" "$out"
touch "$out/.cpost-vm-complete"
# Older keys are dead weight (each ~400 MB).
for old in "$cache"/rootfs-*; do [ "$old" = "$out" ] || rm -rf "$old"; done
echo "$out"
