#!/bin/sh
# The checks of the cgroup v2 test VM, run by cpost-vm.service under systemd
# (PID 1, which mounts cgroup2 as the only hierarchy). For each Docker cgroup
# driver in turn (cgroupfs: /sys/fs/cgroup/docker/<id>; systemd:
# /sys/fs/cgroup/system.slice/docker-<id>.scope) it configures and restarts
# Debian's docker.service, runs checks.sh into /results/<driver>/, then
# writes /results as a raw tar over /dev/vdb (the host reads it back with
# `tar -x`) and powers the VM off.
[ -d /cpost-vm ] || { echo "run-checks.sh runs inside the cpost test VM only" >&2; exit 2; }
mkdir -p /results
exec 2>>/results/guest.log
log() { echo "cpost-vm: $* uptime=$(cut -d' ' -f1 /proc/uptime)" | tee /dev/console >&2; }
log "start $(date -u +%FT%TZ) kernel=$(uname -r) init=$(cat /proc/1/comm)"

finish() {
  log "done $(date -u +%FT%TZ)"
  journalctl --no-pager -u docker -u containerd > /results/dockerd.log 2>&1
  dmesg > /results/dmesg.log 2>&1
  tar -C /results -cf /dev/vdb . && sync
  echo "CPOST-VM-DONE $(cat /results/*/exit 2>/dev/null | tr '\n' ' ')" > /dev/console
  echo o > /proc/sysrq-trigger
  sleep 60
}
trap finish EXIT

# Debian's docker.service with the driver set the way a user sets it. The
# network store is reset between drivers: dockerd would otherwise spend
# seconds per container of the previous pass on "stale sandbox" clean-up
# under emulation (all containers are gone by then).
use_driver() {
  systemctl stop docker.service
  rm -f /var/lib/docker/network/files/local-kv.db
  mkdir -p /etc/docker
  printf '{"iptables": false, "bridge": "none", "exec-opts": ["native.cgroupdriver=%s"]}\n' "$1" > /etc/docker/daemon.json
  systemctl start docker.service || return 1
  i=0
  until [ "$(docker info -f '{{.CgroupDriver}}' 2>/dev/null)" = "$1" ]; do
    i=$((i + 1)); [ "$i" -gt 600 ] && return 1
    sleep 0.2
  done
}

imported=
for driver in cgroupfs systemd; do
  mkdir -p "/results/$driver"
  if ! use_driver "$driver"; then log "docker with the $driver driver did not come up"; echo docker-failed > "/results/$driver/exit"; continue; fi
  log "docker up with the $driver driver"
  if [ -z "$imported" ]; then
    docker import /cpost-vm/busybox-image.tar cpost-test/busybox:1 >/dev/null || { echo import-failed > "/results/$driver/exit"; continue; }
    imported=1
  fi
  # The cgroupfs pass runs everything. The systemd pass differs in where the
  # containers' cgroups are (system.slice/docker-<id>.scope), which cpost's
  # accuracy run covers; emulation is too slow to repeat the rest.
  # The cgroupfs pass also records the sizing ground truth (pipelines/sizing-truth.yaml).
  if [ "$driver" = cgroupfs ]; then direct="cpu1 cpu2 mem io"; runs="diamond accuracy sizing-truth"; else direct=; runs=accuracy; fi
  # A bound on each pass, so that a hang still brings back logs.
  DIRECT=$direct RUNS=$runs timeout 360 sh /cpost-vm/guest/checks.sh "$driver" "/results/$driver" > "/results/$driver/results.json"
  echo $? > "/results/$driver/exit"
done
