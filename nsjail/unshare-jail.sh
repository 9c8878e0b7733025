#!/bin/sh
# The unshare backend's jail: the nsjail policy's view rebuilt with util-linux alone, for hosts
# where nsjail cannot run. The server starts it, as root, as
#   unshare --mount --pid --net --ipc --uts --cgroup --fork --kill-child -- sh unshare-jail.sh CMD...
# and passes everything host-specific in JAIL_* variables (none reaches the script):
#   JAIL_BINDS     newline-separated "src:dst" pairs, bound read-only
#   JAIL_HIDE      a directory to cover with an empty tmpfs (the host's site-packages), or empty
#   JAIL_TMP_BYTES size of the private /tmp
#   JAIL_UID       the host uid of this execution slot (unprivileged)
#   JAIL_LIMITS    prlimit options, newline-separated
#   JAIL_ENV       the script's whole environment, newline-separated NAME=value
# In the new namespaces it builds a minimal read-only root on a tmpfs, pivots into it, drops to
# JAIL_UID with no capabilities and no_new_privs, enters a user namespace in which that uid is
# 65534, applies the rlimits and execs CMD with a clean environment.
set -eu

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
mount -t tmpfs -o "size=$JAIL_TMP_BYTES,mode=1777,nosuid,nodev" jail-tmp tmp
mkdir dev/shm
mount -t tmpfs -o "size=$JAIL_TMP_BYTES,mode=1777,nosuid,nodev,noexec" jail-shm dev/shm
mount -t proc -o nosuid,nodev,noexec proc proc

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
  /usr/bin/unshare --user --map-user=65534 --map-group=65534 -- "$@"
