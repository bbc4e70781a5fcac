#!/bin/sh
# What the cgroup v2 VM measures with one Docker cgroup driver, printed as
# one JSON object on stdout:
# - host facts (kernel, cgroup mounts, controllers, the engine's driver);
# - direct readings of containers' v2 files, independent of cpost, before and
#   after known work (DIRECT: cpu1 = one busy core, cpu2 = two busy threads,
#   mem = 200 MiB touched, io = 100 MiB O_DIRECT written+read), and for the
#   CPU checks a window inside the busy phase;
# - cpost itself (the compiled binary): --version and `cpost run`
#   of each pipeline in RUNS (diamond = the example, others from pipelines/),
#   whose exit code, stdout, stderr and metrics land in OUT/cpost/<name>/.
# Numbers stay raw here; the host test computes the figures and asserts them.
#
#   DIRECT="cpu1 io" RUNS="diamond accuracy" checks.sh cgroupfs|systemd OUT
[ -d /cpost-vm ] || { echo "checks.sh runs inside the cpost test VM only" >&2; exit 2; }
driver=$1 out=$2
image=cpost-test/busybox:1
cpost=/cpost-vm/cpost
mkdir -p /shared /data "$out/cpost"
log() { echo "cpost-vm: [$driver] $* uptime=$(cut -d' ' -f1 /proc/uptime)" | tee /dev/console >&2; }

# "key value" lines (cpu.stat, memory.stat) -> {"key":value,...}
flat_json() { awk 'BEGIN{printf "{"} NF==2{printf "%s\"%s\":%s", (n++ ? "," : ""), $1, $2} END{printf "}"}' "$1"; }
# io.stat "MAJ:MIN rbytes=1 wbytes=2 ..." -> {"MAJ:MIN":{"rbytes":1,...},...}
io_json() {
  awk 'BEGIN{printf "{"} {printf "%s\"%s\":{", (NR > 1 ? "," : ""), $1; for (i = 2; i <= NF; i++) { split($i, kv, "="); printf "%s\"%s\":%s", (i > 2 ? "," : ""), kv[1], kv[2] } printf "}"} END{printf "}"}' "$1"
}
# words -> ["a","b",...]
list_json() { printf '['; sep=; for w in "$@"; do printf '%s"%s"' "$sep" "$w"; sep=,; done; printf ']'; }
num() { if [ -r "$1" ]; then cat "$1"; else echo null; fi; }

work_of() {
  case $1 in
    cpu1) echo "cpost-workload cpu 1 5" ;;
    cpu2) echo "cpost-workload cpu 2 5" ;;
    mem) echo "cpost-workload mem 200 1" ;;
    io) echo "cpost-workload io 100 /data/io.bin" ;;
  esac
}

# The container's cgroup as the kernel reports it for its init process: the
# driver decides the layout (docker/<id> or system.slice/docker-<id>.scope).
cgroup_dir() {
  pid=$(docker inspect -f '{{.State.Pid}}' "$1")
  echo "/sys/fs/cgroup$(sed -n 's/^0:://p' "/proc/$pid/cgroup")"
}

readings() {
  printf '{"cpu.stat":%s,"memory.current":%s,"memory.peak":%s,"memory.stat":%s,"io.stat":%s,"pids.current":%s}' \
    "$(flat_json "$1/cpu.stat")" "$(num "$1/memory.current")" "$(num "$1/memory.peak")" \
    "$(flat_json "$1/memory.stat")" "$(io_json "$1/io.stat")" "$(num "$1/pids.current")"
}

# cpu.stat's usage_usec with the time it was read (centiseconds of
# /proc/uptime), as JSON; shell builtins only, so no fork between the two.
usage_at() {
  read -r up _ < /proc/uptime
  while read -r k v; do [ "$k" = usage_usec ] && break; done < "$1/cpu.stat"
  printf '{"uptimeS":%s,"usageUsec":%s}' "$up" "$v"
}

# Starts the container of check NAME: it blocks on a FIFO until the "before"
# reading is taken, signals the end of its work on another FIFO, then stays
# alive (so its cgroup does) for the "after" reading. FIFOs, not polling: a
# polling loop would steal the CPU the readings measure.
prepare() {
  go=/shared/$1.go done=/shared/$1.done
  rm -f "/shared/$1".*; mkfifo "$go" "$done"
  docker run -d --network none --label cpost.vm=1 -v /shared:/shared -v /data:/data "$image" \
    sh -c "read x < $go; $(work_of "$1"); echo \$? > $done; exec sleep 600" > "/shared/$1.id" \
    || log "direct $1: docker run failed"
}

# Runs the checks NAME...: their containers start at once (container start
# is the slow part under emulation), their work runs one at a time (work
# that overlaps would share the vCPUs and no longer give known answers).
# Prints {"NAME":{"work","exit","id","cgroup","files","before","after"},...}.
direct_checks() {
  [ $# -gt 0 ] || { printf '{}'; return; }
  for name in "$@"; do prepare "$name" & done
  wait
  for name in "$@"; do
    id=$(cat "/shared/$name.id")
    [ -n "$id" ] || continue
    dir=$(cgroup_dir "$id")
    echo "$dir" > "/shared/$name.cgroup"
    readings "$dir" > "/shared/$name.before"
    timeout 60 sh -c "echo go > /shared/$name.go" || log "direct $name: the container never read its start signal"
    # Under emulation, time the host takes from a vCPU is charged to whatever
    # runs on it: process start and exit cost more than they do on hardware,
    # while a busy loop bounded by the clock is still charged exactly its
    # wall time. So CPU is also measured over a window well inside the 5 s
    # of work (1 s after the start to 4 s).
    case $name in cpu*)
      sleep 1; usage_at "$dir" > "/shared/$name.w0"
      sleep 3; usage_at "$dir" > "/shared/$name.w1" ;;
    esac
    timeout 120 sh -c "read x < /shared/$name.done; echo \$x" > "/shared/$name.exit"
    readings "$dir" > "/shared/$name.after"
    log "direct $name exit=$(cat "/shared/$name.exit")"
  done
  printf '{'
  sep=
  for name in "$@"; do
    printf '%s"%s":{"work":"%s",' "$sep" "$name" "$(work_of "$name")"; sep=,
    id=$(cat "/shared/$name.id")
    if [ -z "$id" ]; then printf '"exit":null,"error":"docker run failed"}'; continue; fi
    code=$(cat "/shared/$name.exit")
    printf '"exit":%s,"id":"%s","cgroup":"%s","files":' "${code:-null}" "$id" "$(cat "/shared/$name.cgroup")"
    # shellcheck disable=SC2046
    list_json $(ls "$(cat "/shared/$name.cgroup")")
    printf ',"before":%s,"after":%s' "$(cat "/shared/$name.before")" "$(cat "/shared/$name.after")"
    [ -s "/shared/$name.w0" ] && printf ',"window":[%s,%s]' "$(cat "/shared/$name.w0")" "$(cat "/shared/$name.w1")"
    printf '}'
  done
  printf '}'
  # shellcheck disable=SC2046
  docker rm -f $(cat /shared/*.id) >/dev/null
}

# One `cpost run` of pipeline NAME into OUT/cpost/NAME, as test/accuracy-run.ts
# runs it on the host. -v: its stdout names each collector's source and shows
# the operators' output (the workload's own account of its busy window); the
# table sink's summaries (Disk totals) go to stdout too.
cpost_run() {
  dest=$out/cpost/$1
  if [ "$1" = diamond ]; then pipeline=/cpost-vm/examples/diamond/pipeline.yaml; else pipeline=/cpost-vm/pipelines/$1.yaml; fi
  mkdir -p "$dest/metrics"
  log "cpost run $1"
  "$cpost" run "$pipeline" /cpost-vm/examples/diamond/input --collectors cgroup,blkio --sinks table,csv,msgpack --force cont -v \
    --metrics_dir "$dest/metrics" >"$dest/stdout" 2>"$dest/stderr" </dev/null
  echo $? > "$dest/exit"
  log "cpost run $1 exit=$(cat "$dest/exit")"
}

set -- $(docker info -f '{{.CgroupDriver}} {{.CgroupVersion}} {{.ServerVersion}} {{.Driver}}')
printf '{"driver":"%s","kernel":"%s","cpus":%s,"init":"%s",' "$driver" "$(uname -r)" "$(nproc)" "$(cat /proc/1/comm)"
printf '"cgroupFs":"%s","v1Mounts":%s,"controllers":' "$(stat -f -c %T /sys/fs/cgroup)" "$(grep -c ' - cgroup ' /proc/self/mountinfo)"
list_json $(cat /sys/fs/cgroup/cgroup.controllers)
printf ',"docker":{"cgroupDriver":"%s","cgroupVersion":"%s","version":"%s","storage":"%s"},' "$1" "$2" "$3" "$4"

log "direct checks: $DIRECT"
printf '"direct":%s,' "$(direct_checks $DIRECT)"

"$cpost" --version >"$out/cpost/version" 2>&1
printf '"cpost":{"versionExit":%s,"runs":' "$?"
for name in $RUNS; do cpost_run "$name"; done
list_json $RUNS
printf '}}\n'
log "checks done"
