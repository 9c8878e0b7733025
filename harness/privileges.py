"""The run's identity, taken by a warm run's child (zygote.py) and by a session's kernel
(session.py) from their parent: uid 0 of the jail holding CAP_KILL, CAP_SETGID, CAP_SETUID and
CAP_SETPCAP, and nothing else."""

import ctypes
import os

RUN_UID = RUN_GID = 65534
LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_CAPBSET_DROP = 24
PARENT_CAPS = (5, 6, 7, 8)  # CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_SETPCAP: all the parent has
LIBC = ctypes.CDLL(None, use_errno=True)


def drop_privileges():
    """uid and gid 65534, no supplementary group, no capability. The bounding set is emptied first
    (CAP_SETPCAP), leaving uid 0 clears the permitted, effective and ambient sets (the kernel's
    rule), and the inheritable set is cleared last: every set is empty, as in a cold run. Linux
    lets a process act on another one (limits, scheduling, priority, affinity, I/O priority,
    signals, /proc writes, ptrace) only with the same uid or a capability: the run has neither
    towards its parent."""
    for cap in PARENT_CAPS:
        if LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")
    os.setgroups([])
    os.setresgid(RUN_GID, RUN_GID, RUN_GID)
    os.setresuid(RUN_UID, RUN_UID, RUN_UID)
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    if LIBC.capset(header, (ctypes.c_uint32 * 6)()) != 0:
        raise OSError(ctypes.get_errno(), "capset")
