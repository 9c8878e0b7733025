"""The probe's memory canary (src/backends/probe.ts): allocates 64 MiB more than the memory limit,
which the sandbox must stop (MEMORY_LIMIT_EXCEEDED).

Parameters: the constant below, with its default (for LIMIT_MEMORY_MB 512). The probe sends this
file with one line appended that assigns it its value as a JSON literal; run.py executes it
before it calls main().
"""

BLOCK_BYTES = (512 + 64) * 1024 * 1024  # the memory limit plus 64 MiB


def main():
    block = bytearray(b"x") * BLOCK_BYTES
    return len(block)
