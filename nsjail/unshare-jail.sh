#!/bin/sh
# The unshare backend's jail: the nsjail policy's view rebuilt with util-linux alone, for hosts
# where nsjail cannot run. The server starts it, as root, as
#   unshare --mount --pid --net --ipc --uts --fork --kill-child -- sh unshare-jail.sh CMD...
# and passes everything host-specific in JAIL_* variables (none reaches the script):
#   JAIL_CGROUPS   cgroup.procs files of this slot's memory and pids cgroups, newline-separated,
#                  or empty (no cgroup: memory is bounded by RLIMIT_AS alone)
#   JAIL_BINDS     newline-separated "src:dst" pairs, bound read-only
#   JAIL_HIDE      a directory to cover with an empty tmpfs (the host's site-packages), or empty
#   JAIL_TMP_BYTES size of the private /tmp (and of /dev/shm)
#   JAIL_TMP_FILES inodes of each
#   JAIL_UID       the host uid of this execution slot (unprivileged)
#   JAIL_LIMITS    prlimit options, newline-separated
#   JAIL_ENV       the script's whole environment, newline-separated NAME=value
# First it joins its cgroups, so that every process of the run is counted from the start. In the
# new namespaces it builds a minimal read-only root on a tmpfs, pivots into it, drops to
# JAIL_UID with no capabilities and no_new_privs, enters a user namespace in which that uid is
# 65534 (and a cgroup namespace rooted at its cgroup), applies the rlimits and execs CMD with a
# clean environment.
set -eu

# Before anything else, the whole run included, this shell (pid 1 here) joins the slot's
# cgroups. Only then the cgroup namespace is made (by the last unshare): cgroup v2 refuses a move
# to a group outside the mover's cgroup namespace (nsdelegate).
for procs in $JAIL_CGROUPS; do
  echo $$ > "$procs"
done

mount --make-rprivate /
# The new root is a tmpfs mounted over /mnt, in this private mount namespace only: nothing on
# the host changes, and no bind source is hidden (the project may well live under /tmp).
mount -t tmpfs -o size=1m,mode=755 jail-root /mnt
cd /mnt
mkdir -p tmp dev proc .old

IFS='
'
for pair in $JAIL_BINDS; do
  src=${pair%%:*}
  dst=${pair#*:}
  if [ -d "$src" ]; then
    mkdir -p ".$dst"
  else
    mkdir -p ".${dst%/*}"
    : > ".$dst"
  fi
  mount --bind "$src" ".$dst"
  mount -o remount,bind,ro,nosuid,nodev ".$dst"
done
if [ -n "$JAIL_HIDE" ]; then
  mkdir -p ".$JAIL_HIDE"
  mount -t tmpfs -o size=4k,mode=555,ro jail-hide ".$JAIL_HIDE"
fi
for device in null zero urandom; do
  : > "dev/$device"
  mount --bind "/dev/$device" "dev/$device"
done
mount -t tmpfs -o "size=$JAIL_TMP_BYTES,nr_inodes=$JAIL_TMP_FILES,mode=1777,nosuid,nodev" jail-tmp tmp
mkdir dev/shm
mount -t tmpfs -o "size=$JAIL_TMP_BYTES,nr_inodes=$JAIL_TMP_FILES,mode=1777,nosuid,nodev,noexec" jail-shm dev/shm
mount -t proc -o nosuid,nodev,noexec,hidepid=invisible proc proc

pivot_root . .old
cd /
# The old root's tools still run here: their libraries are bound in the new root.
/.old/usr/bin/mount -o remount,bind,ro /
/.old/usr/bin/umount -l /.old
cd /tmp

# shellcheck disable=SC2086 # JAIL_LIMITS and JAIL_ENV are lists by design
exec /usr/bin/env -i $JAIL_ENV \
  /usr/bin/prlimit $JAIL_LIMITS -- \
  /usr/bin/setpriv --reuid "$JAIL_UID" --regid "$JAIL_UID" --clear-groups --no-new-privs \
    --inh-caps=-all --bounding-set=-all -- \
  /usr/bin/unshare --user --cgroup --map-user=65534 --map-group=65534 -- "$@"
