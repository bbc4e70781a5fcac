#!/usr/bin/env bash
# Boots the cgroup v2 test VM and brings its results back:
#
#   test/vm/run.sh OUT_DIR CPOST_BINARY
#
# Installs qemu/kernel/debootstrap if missing (setup.sh), builds or reuses
# the cached root filesystem (rootfs.sh) and the disk image (keyed by every
# input: rootfs, guest scripts, cpost binary, workload, pipelines), boots it
# under qemu's software emulation (nested KVM does not work on these
# machines), and unpacks what the guest wrote into OUT_DIR (see README.md):
# <driver>/results.json and <driver>/cpost/<run>/ for each Docker cgroup
# driver, guest.log, dockerd.log, dmesg.log, plus console.log (the serial
# console) and timings.json (host-side phases). Exits non-zero when the VM
# did not power off by itself or brought nothing back.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:?usage: run.sh OUT_DIR CPOST_BINARY}
cpost=${2:?usage: run.sh OUT_DIR CPOST_BINARY}
cache=${CPOST_VM_CACHE:-$repo/.cache/vm}
log() { echo "[vm] $*" >&2; }
mkdir -p "$out" "$cache"
out=$(cd "$out" && pwd)
t0=$SECONDS

# debootstrap (network and dpkg in a chroot) overlaps with installing qemu
# and the kernel on the host: a cold run's two slowest steps.
bash "$here/setup.sh" bootstrap
bash "$here/setup.sh" all &
setup_pid=$!
# Other test runs on this machine share the cache: building and pruning it
# happen under a lock; booting does not need it (qemu -snapshot only reads
# the image, and an image is pruned only when unused for 15 minutes).
exec 9>"$cache/.lock"
flock -w 600 9 || { log "could not lock $cache/.lock in 10 minutes"; exit 1; }
rootfs=$(bash "$here/rootfs.sh" "$cache")
t_rootfs=$((SECONDS - t0))
wait "$setup_pid"
t_setup=$((SECONDS - t0))

kernel=$(ls /boot/vmlinuz-* | sort -V | tail -1); kver=${kernel#/boot/vmlinuz-}
initrd=/boot/initrd.img-$kver

# The test image, made as test/setup.sh makes it (same applets): static
# busybox plus the ground-truth workload; docker-imported inside the guest.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
img_root=$work/image-root
mkdir -p "$img_root/bin" "$img_root/tmp" "$img_root/input" "$img_root/output"
cp /bin/busybox "$img_root/bin/"
for a in sh sleep yes dd head cat timeout env ls mkdir cp echo wc tr sed true false test grep kill rm touch; do
  ln -s busybox "$img_root/bin/$a"
done
gcc -static -O2 -pthread -o "$img_root/bin/cpost-workload" "$repo/test/workload/workload.c"

key=$( {
  echo "$rootfs $kver"
  cat "$0" "$here"/guest/* "$here"/pipelines/* "$repo/test/workload/workload.c" /bin/busybox "$cpost"
  find "$repo/examples/diamond" -type f | sort | xargs cat
} | sha256sum | cut -c1-16)
disk=$cache/disk-$key.img
if [ ! -f "$disk" ]; then
  log "building disk image $disk"
  stage=$work/stage
  # Hard links: cheap, and the cached rootfs stays untouched as long as only
  # new files are added to the stage (never write to a file that came from it).
  cp -al "$rootfs" "$stage"
  rm -f "$stage/.cpost-vm-complete"
  mkdir -p "$stage/cpost-vm/guest" "$stage/cpost-vm/examples" "$stage/cpost-vm/pipelines"
  cp "$here"/guest/*.sh "$stage/cpost-vm/guest/"
  cp "$here"/guest/cpost-vm.target "$here"/guest/cpost-vm.service "$stage/etc/systemd/system/"
  # The host's Debian kernel modules the guest needs (overlay for overlay2,
  # netfilter and bridge for user-defined networks, veth); the whole tree is
  # 400 MB, mostly drivers.
  mods=/lib/modules/$kver
  mkdir -p "$stage$mods/kernel/drivers/net"
  cp -a "$mods"/modules.builtin* "$mods"/modules.order "$stage$mods/"
  for d in fs net lib crypto arch mm block; do cp -a "$mods/kernel/$d" "$stage$mods/kernel/"; done
  cp -a "$mods/kernel/drivers/net/veth.ko"* "$stage$mods/kernel/drivers/net/"
  depmod -b "$stage" "$kver"
  cp "$here"/pipelines/* "$stage/cpost-vm/pipelines/"
  cp -r "$repo/examples/diamond" "$stage/cpost-vm/examples/"
  cp "$cpost" "$stage/cpost-vm/cpost"
  tar -C "$img_root" -cf "$stage/cpost-vm/busybox-image.tar" .
  mkfs.ext4 -q -F -L cpost-vm -d "$stage" "$work/disk.img" 3G
  mv "$work/disk.img" "$disk"
fi
touch "$disk"
find "$cache" -maxdepth 1 -name 'disk-*.img' ! -path "$disk" -mmin +15 -delete
flock -u 9
t_disk=$((SECONDS - t0 - t_setup))

# Results come back as a raw tar the guest writes over the whole second disk.
truncate -s 0 "$work/results.img"; truncate -s 256M "$work/results.img"
log "booting ($kver, tcg)"
set +e
timeout "${CPOST_VM_TIMEOUT:-600}" qemu-system-x86_64 -accel tcg -cpu max -m 2048 -smp "${CPOST_VM_CPUS:-4}" \
  -nographic -no-reboot -snapshot \
  -kernel "$kernel" -initrd "$initrd" \
  -drive "file=$disk,if=virtio,format=raw" \
  -drive "file=$work/results.img,if=virtio,format=raw,snapshot=off" \
  -append "console=ttyS0 root=/dev/vda rw systemd.unit=cpost-vm.target systemd.show_status=0 apparmor=0 panic=1 quiet ${CPOST_VM_APPEND:-}" \
  </dev/null >"$out/console.log" 2>&1
qemu_exit=$?
set -e
t_boot=$((SECONDS - t0 - t_setup - t_disk))
results=ok
tar -C "$out" -xf "$work/results.img" 2>/dev/null || { results=missing; log "no results on the results disk (see $out/console.log)"; }
printf '{"setupAndRootfsS":%s,"rootfsS":%s,"diskS":%s,"bootAndChecksS":%s,"totalS":%s,"qemuExit":%s}\n' \
  "$t_setup" "$t_rootfs" "$t_disk" "$t_boot" "$((SECONDS - t0))" "$qemu_exit" >"$out/timings.json"
log "done in $((SECONDS - t0)) s (qemu exit $qemu_exit, results $results): $(cat "$out/timings.json")"
[ "$qemu_exit" -eq 0 ] && [ "$results" = ok ]
