"""PySandbox's seccomp filter for launchers that have none of their own (the unshare backend).

    python3 seccomp.py   prints the policy as JSON (the tests compare it with nsjail/pysandbox.cfg)

The same policy as nsjail/pysandbox.cfg's kafel text, as a classic BPF program installed with
prctl(PR_SET_SECCOMP) before the script's code runs (no_new_privs is set by the launcher). Calls
are named as kafel names them; numbers are x86-64's. On any other architecture the filter kills
every call, so a probe on such a host fails instead of running unfiltered.
"""

import ctypes
import struct
import sys

EPERM, ENOSYS, EAFNOSUPPORT = 1, 38, 97
AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
CLONE_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET

# kafel name: (x86-64 number, errno)
REFUSED = {
    "ptrace": (101, EPERM), "process_vm_readv": (310, EPERM), "process_vm_writev": (311, EPERM),
    "mount": (165, EPERM), "umount": (166, EPERM), "pivot_root": (155, EPERM), "chroot": (161, EPERM),
    "unshare": (272, EPERM), "setns": (308, EPERM),
    "bpf": (321, EPERM), "userfaultfd": (323, EPERM), "perf_event_open": (298, EPERM),
    "lookup_dcookie": (212, EPERM), "syslog": (103, EPERM), "vhangup": (153, EPERM), "quotactl": (179, EPERM),
    "keyctl": (250, EPERM), "add_key": (248, EPERM), "request_key": (249, EPERM),
    "kexec_load": (246, EPERM), "kexec_file_load": (320, EPERM),
    "init_module": (175, EPERM), "finit_module": (313, EPERM), "delete_module": (176, EPERM),
    "open_by_handle_at": (304, EPERM), "name_to_handle_at": (303, EPERM),
    "reboot": (169, EPERM), "swapon": (167, EPERM), "swapoff": (168, EPERM), "acct": (163, EPERM),
    "clock_settime": (227, EPERM), "settimeofday": (164, EPERM), "adjtimex": (159, EPERM),
    "clock_adjtime": (305, EPERM), "setsid": (112, EPERM), "fanotify_init": (300, EPERM),
    "SYSCALL[425]": (425, EPERM), "SYSCALL[426]": (426, EPERM), "SYSCALL[427]": (427, EPERM),
    "SYSCALL[428]": (428, EPERM), "SYSCALL[429]": (429, EPERM), "SYSCALL[430]": (430, EPERM),
    "SYSCALL[431]": (431, EPERM), "SYSCALL[432]": (432, EPERM), "SYSCALL[433]": (433, EPERM),
    "io_setup": (206, ENOSYS), "io_destroy": (207, ENOSYS), "io_submit": (209, ENOSYS),
    "io_cancel": (210, ENOSYS), "io_getevents": (208, ENOSYS), "io_pgetevents": (333, ENOSYS),
    "inotify_init": (253, ENOSYS), "inotify_init1": (294, ENOSYS), "inotify_add_watch": (254, ENOSYS),
    "SYSCALL[435]": (435, ENOSYS),
}
# Calls refused only for some first arguments: (number, errno, what is refused).
CLONE = (56, EPERM, "flags & 0x7e020000")
SOCKET = (41, EAFNOSUPPORT, "family not unix, IPv4 or IPv6")
SOCKETPAIR = (53, EAFNOSUPPORT, "family not unix")
FCNTL = (72, ENOSYS, "cmd F_NOTIFY")
F_NOTIFY = 1026

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
# Classic BPF: ld word absolute, jump if equal / greater or equal / any bit set, return.
LD_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
KILL_PROCESS, ALLOW, ERRNO = 0x80000000, 0x7FFF0000, 0x00050000
NR, ARCH, ARG0, ARG1 = 0, 4, 16, 24  # offsets in struct seccomp_data (ARGn: the low half, little-endian)


def op(code, k=0, jt=0, jf=0):
    return (code, jt, jf, k)


def program():
    """The filter: wrong architecture kills; x32 numbers get ENOSYS (the kernel has no x32);
    each refused call returns its errno; clone, socket and socketpair are judged by argument 0,
    fcntl by argument 1."""
    prog = [op(LD_ABS, ARCH), op(JEQ, AUDIT_ARCH_X86_64, 1, 0), op(RET, KILL_PROCESS),
            op(LD_ABS, NR), op(JGE, X32_SYSCALL_BIT, 0, 1), op(RET, ERRNO | ENOSYS)]
    for number, errno in REFUSED.values():
        prog += [op(JEQ, number, 0, 1), op(RET, ERRNO | errno)]
    # clone: refuse namespace flags.
    prog += [op(JEQ, CLONE[0], 0, 4), op(LD_ABS, ARG0), op(JSET, CLONE_NAMESPACE_FLAGS, 0, 1),
             op(RET, ERRNO | CLONE[1]), op(RET, ALLOW)]
    # socket: unix, IPv4, IPv6 only.
    prog += [op(JEQ, SOCKET[0], 0, 6), op(LD_ABS, ARG0), op(JEQ, AF_UNIX, 3, 0), op(JEQ, AF_INET, 2, 0),
             op(JEQ, AF_INET6, 1, 0), op(RET, ERRNO | SOCKET[1]), op(RET, ALLOW)]
    # socketpair: unix only.
    prog += [op(JEQ, SOCKETPAIR[0], 0, 4), op(LD_ABS, ARG0), op(JEQ, AF_UNIX, 1, 0),
             op(RET, ERRNO | SOCKETPAIR[1]), op(RET, ALLOW)]
    # fcntl: no F_NOTIFY (dnotify).
    prog += [op(JEQ, FCNTL[0], 0, 4), op(LD_ABS, ARG1), op(JEQ, F_NOTIFY, 0, 1),
             op(RET, ERRNO | FCNTL[1]), op(RET, ALLOW)]
    return [*prog, op(RET, ALLOW)]


def install():
    """Install the filter on this process and everything it starts; raise if the kernel refuses."""
    prog = program()
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
    buffer = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0 or \
            libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"seccomp filter not installed (errno {errno})")


def describe():
    calls = {name: errno for name, (_, errno) in REFUSED.items()}
    calls.update({"clone": CLONE[1], "socket": SOCKET[1], "socketpair": SOCKETPAIR[1], "fcntl": FCNTL[1]})
    return calls


if __name__ == "__main__":
    import json
    json.dump(describe(), sys.stdout, sort_keys=True)
