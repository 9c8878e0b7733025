"""The probe's canary of a cgroup rung (src/backends/probe.ts): children that each stay well inside
RLIMIT_AS but together pass the memory limit. The cgroup must stop them (its OOM killer); RLIMIT_AS
alone lets every one hold its share. Reports how many held their share at the same time, and why
the others did not.

Parameters: the constants below, with defaults (for LIMIT_MEMORY_MB 512, LIMIT_PROCESSES 64,
LIMIT_WALL_MS 10000). The probe sends this file with one line appended that assigns them their
values as JSON literals; run.py executes it before it calls main().
"""

import os
import select
import time

CHILDREN = 4  # within the process limit
SHARE_BYTES = 144 * 1024 * 1024  # each child's share: together 64 MiB over the memory limit
DEADLINE_SECONDS = 3  # how long to wait for the children's reports


def main():
    ready_r, ready_w = os.pipe()
    gate_r, gate_w = os.pipe()
    children = []
    for _ in range(CHILDREN):
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            os.close(gate_w)
            try:
                block = bytearray(b"x") * SHARE_BYTES  # noqa: F841  (held until the child exits)
                mark = b"H"
            except MemoryError:
                mark = b"E"
            os.write(ready_w, mark + os.getpid().to_bytes(4, "little"))
            os.read(gate_r, 1)
            os._exit(0)
        children.append(pid)
    os.close(ready_w)
    os.close(gate_r)
    holding, erred, statuses = set(), set(), {}

    def ended(pid, flags=os.WNOHANG):
        if pid not in statuses:
            done, status = os.waitpid(pid, flags)
            if done == pid:
                statuses[pid] = status
        return pid in statuses

    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline and any(p not in holding | erred and not ended(p) for p in children):
        if select.select([ready_r], [], [], 0.02)[0]:
            record = os.read(ready_r, 5)
            if len(record) == 5:
                (holding if record[:1] == b"H" else erred).add(int.from_bytes(record[1:], "little"))
    together = sum(1 for pid in holding if not ended(pid))
    os.close(gate_w)
    for pid in children:
        ended(pid, 0)
    killed = sum(1 for s in statuses.values() if os.WIFSIGNALED(s) and os.WTERMSIG(s) == 9)
    return {"children": CHILDREN, "together": together, "memoryErrors": len(erred), "killed": killed}
