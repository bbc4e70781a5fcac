#!/usr/bin/env bash
# Installs what the cgroup v2 VM test needs on a Debian host, idempotently:
# qemu (software emulation), a Debian kernel + initrd to boot, debootstrap
# for the guest's root filesystem, e2fsprogs for mkfs.ext4 -d and debugfs.
# Run as root. Safe to run again: it installs only what is missing.
#
#   setup.sh            everything
#   setup.sh bootstrap  only what building the root filesystem needs, so
#                       that debootstrap can run while qemu and the kernel
#                       are being installed
set -euo pipefail
only=${1:-all}

log() { echo "[vm-setup] $*" >&2; }

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v mkfs.ext4 >/dev/null && command -v debugfs >/dev/null || need+=(e2fsprogs)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ "$only" = all ]; then
  command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
  ls /boot/vmlinuz-* >/dev/null 2>&1 && ls /boot/initrd.img-* >/dev/null 2>&1 || need+=(linux-image-amd64)
fi
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Other setup scripts may hold the dpkg lock on a shared machine: wait for it.
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >&2
fi
[ "$only" = all ] || exit 0
ls /boot/vmlinuz-* /boot/initrd.img-* >/dev/null || { log "no kernel/initrd in /boot after install"; exit 1; }
log "ready: $(qemu-system-x86_64 --version | head -1); kernel $(ls /boot/vmlinuz-* | sort -V | tail -1)"
