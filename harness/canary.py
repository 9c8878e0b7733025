"""The probe's canary (src/backends/probe.ts): run through a backend exactly as a user's script
would be, it reports what the sandbox lets it see and do; the probe checks the report against
what the backend promises.

Parameters: the constants below, with defaults. The probe sends this file with one line appended
that assigns them their values as JSON literals; run.py executes it before it calls main().
"""

import os
import resource
import socket

SERVER_PATHS = []  # places of the server (project root, cwd, home) that no isolated script may see


def attempt(action):
    try:
        action()
        return 0
    except OSError as error:
        return error.errno or -1


def route(host, port):
    # A UDP connect() only looks up a route: no packet leaves, whatever the backend.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((host, port))
    finally:
        s.close()


def interfaces():
    try:
        return len(socket.if_nameindex())
    except OSError:  # netlink refused by the seccomp filter: no interface to list
        return 0


def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split()[1]
    return ""


def limit(name):
    return list(resource.getrlimit(getattr(resource, name)))


def main():
    with open("/tmp/canary", "w") as f:
        f.write("written")
    import numpy
    import pandas
    return {
        "uid": os.getuid(), "gid": os.getgid(),
        "caps": [status(f"Cap{s}") for s in ("Inh", "Prm", "Eff", "Amb")],
        "noNewPrivs": status("NoNewPrivs"), "seccomp": status("Seccomp"),
        "env": sorted(os.environ),
        "loopback": attempt(lambda: route("127.0.0.1", 9)),
        "metadata": attempt(lambda: route("169.254.169.254", 80)),
        "interfaces": interfaces(),
        "rootWritable": attempt(lambda: open("/canary-root-write", "w").close()) == 0,
        "serverVisible": [p for p in SERVER_PATHS if os.path.exists(p)],
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "nproc": limit("RLIMIT_NPROC"), "nofile": limit("RLIMIT_NOFILE"),
        "fsize": limit("RLIMIT_FSIZE"), "cpu": limit("RLIMIT_CPU"),
        "numpy": numpy.__version__, "pandas": pandas.__version__,
    }
