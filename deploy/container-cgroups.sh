#!/bin/sh
# The image's start-up step before the server (docs/container-cgroups.md). tini runs it
# and it execs its arguments (the server) whatever happens here:
#   ENTRYPOINT ["/usr/bin/tini", "--", "/app/deploy/container-cgroups.sh"]
#
# It gives the jails a memory and pids cgroup of their own when, and only when, the container's
# OWN cgroup can be delegated to them with the rights the container already has; otherwise it
# leaves everything as it found it, the nsjail probe falls to its rlimit rung and /readyz says so.
#   cgroup v1 (one hierarchy per controller): the runtime bind-mounts the container's own group,
#     read-only, at /sys/fs/cgroup/{memory,pids}. Remount that view read-write and make the NSJAIL
#     group in each (the parent of nsjail's per-jail groups); if that is refused (the group belongs
#     to the host's root, as in a user-namespaced container), put the read-only flag back.
#   cgroup v2, only in a cgroup namespace of the container's own (Docker's default on v2): make the
#     view writable, move every process of the namespace's root group into the leaf `init`, and
#     enable +memory +pids in the root's cgroup.subtree_control (a group that holds processes may
#     not hand controllers to children). nsjail's cgroupv2 rung and the unshare backend then make
#     their groups below the root.
# It never makes writable a view that shows more than the container's own group (the host's tree,
# or its root), and never writes a limit. The remount is a system call the container's root could
# make itself at any time, so it grants the container no right it did not have; scripts never see
# /sys (a jail's root holds only the interpreter, the packages and the harness).
# The outcome goes to stderr and to the server as PYSANDBOX_CGROUP_SETUP.
set -u

CG=/sys/fs/cgroup
# The inode of the initial (host's) cgroup namespace: fixed by the kernel (PROC_CGROUP_INIT_INO).
HOST_CGROUP_NS='cgroup:[4026531835]'

log() { printf 'container-cgroups: %s\n' "$*" >&2; }
# The visible (last) mountinfo line of the mount at $1; fields: 4 root, 5 mount point, 6 options.
mount_line() { awk -v m="$1" '$5 == m { line = $0 } END { print line }' /proc/self/mountinfo; }
field() { printf '%s\n' "$1" | awk -v n="$2" '{ print $n }'; }
fs_type() { printf '%s\n' "$1" | sed -n 's/.* - \([^ ]*\) .*/\1/p'; }
read_only() { case ",$(field "$1" 6)," in *,ro,*) return 0 ;; esac; return 1; }
# This process's group in the v1 hierarchy of controller $1, as /proc/self/cgroup names it.
own_v1() { awk -F: -v c="$1" '{ n = split($2, a, ","); for (i = 1; i <= n; i++) if (a[i] == c) print $3 }' /proc/self/cgroup; }
private_ns() { [ "$(readlink /proc/self/ns/cgroup)" != "$HOST_CGROUP_NS" ]; }

why=''
remounted=''

# Put back the read-only flag of every view this script made writable.
restore() {
  for dir in $remounted; do mount -o remount,bind,ro "$dir" 2>/dev/null || log "could not make $dir read-only again"; done
  remounted=''
}

# make_writable DIR LINE: remount DIR read-write if it is read-only.
make_writable() {
  read_only "$2" || return 0
  if mount -o remount,bind,rw "$1" 2>/dev/null; then
    remounted="$remounted $1"
    return 0
  fi
  why="$1 is read-only and cannot be remounted read-write"
  return 1
}

v1_controller() {
  dir=$CG/$1
  line=$(mount_line "$dir")
  [ -n "$line" ] && [ "$(fs_type "$line")" = cgroup ] || { why="no cgroup v1 $1 hierarchy at $dir"; return 1; }
  own=$(own_v1 "$1")
  root=$(field "$line" 4)
  [ -n "$own" ] && [ "$root" = "$own" ] || { why="$dir shows the group $root, not this container's own ($own)"; return 1; }
  # "/" outside a cgroup namespace of our own is the host's root group: never ours to hand out.
  [ "$own" != / ] || private_ns || { why="this process is in the host's root $1 group"; return 1; }
  make_writable "$dir" "$line" || return 1
  if mkdir -p "$dir/NSJAIL" 2>/dev/null && [ -e "$dir/NSJAIL/tasks" ]; then return 0; fi
  why="cannot make a group in $dir: the container's group is not delegated to this user (owner $(stat -c %U "$dir"))"
  return 1
}

v2() {
  line=$(mount_line "$CG")
  [ "$(fs_type "$line")" = cgroup2 ] || { why="no cgroup2 mount at $CG"; return 1; }
  private_ns || { why="the container shares the host's cgroup namespace ($CG is not its own group; run it with a private cgroup namespace)"; return 1; }
  [ "$(sed -n 's/^0:://p' /proc/self/cgroup)" = / ] && [ "$(field "$line" 4)" = / ] ||
    { why="$CG is not the root of this container's cgroup namespace"; return 1; }
  # The host's true root has no memory.max; a delegated group with the memory controller has.
  [ -e "$CG/memory.max" ] || { why="the memory controller is not enabled for this container's group"; return 1; }
  for c in memory pids; do
    grep -qw "$c" "$CG/cgroup.controllers" || { why="the $c controller is not available to this container's group"; return 1; }
  done
  if grep -qw memory "$CG/cgroup.subtree_control" && grep -qw pids "$CG/cgroup.subtree_control"; then return 0; fi
  make_writable "$CG" "$line" || return 1
  mkdir -p "$CG/init" 2>/dev/null || { why="cannot make a group in $CG (not delegated to this user)"; return 1; }
  # Processes may fork meanwhile (only tini and this script run yet): retry a few times.
  for attempt in 1 2 3 4 5; do
    for pid in $(cat "$CG/cgroup.procs"); do echo "$pid" > "$CG/init/cgroup.procs" 2>/dev/null; done
    if echo '+memory +pids' > "$CG/cgroup.subtree_control" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  why="cannot enable +memory +pids in $CG/cgroup.subtree_control"
  for pid in $(cat "$CG/init/cgroup.procs"); do echo "$pid" > "$CG/cgroup.procs" 2>/dev/null; done
  rmdir "$CG/init" 2>/dev/null
  return 1
}

if [ -f "$CG/cgroup.controllers" ]; then
  if v2; then
    setup="cgroupv2: +memory +pids enabled below this container's cgroup namespace root; its processes moved to $CG/init"
  else
    restore
    setup="none: $why"
  fi
elif [ -d "$CG/memory" ] || [ -d "$CG/pids" ]; then
  if v1_controller memory && v1_controller pids; then
    setup="cgroupv1: $CG/memory and $CG/pids (this container's own groups) writable, NSJAIL made in each"
  else
    for c in memory pids; do rmdir "$CG/$c/NSJAIL" 2>/dev/null; done
    restore
    setup="none: $why"
  fi
else
  setup="none: no cgroup hierarchy at $CG"
fi
log "$setup"
export PYSANDBOX_CGROUP_SETUP="$setup"
exec "$@"
