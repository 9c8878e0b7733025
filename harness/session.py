"""PySandbox session: pid 1 of a session's own jail, whose Python keeps its state between calls.

    python3 -I -u -B session.py CPU_CEILING RESULT_BYTES OUTPUT_BYTES CHANNEL_BYTES FILES_OUT FILES_OUT_BYTES \
        SITE_PACKAGES

It imports numpy, pandas and matplotlib's pyplot, then forks the *kernel*: the one interpreter
where every call's script runs, in one module namespace that persists (a notebook's kernel). This
process (the *parent*) never runs user code: it relays the kernel's streams as frames, times each
call's CPU and ends the call (and the session) past its budget, and between calls stops every
other process of the jail (SIGSTOP) and watches that none runs again, so an idle session uses no
CPU. The parent is uid 0 of the jail (a host uid of its own, four capabilities), as a warm jail's
zygote: its gid 0 lets it see every process of the jail in /proc (mounted hidepid=invisible,gid=0),
non-dumpable ones included, and no process of the kernel's uid can change its limits, priority or
anything else of it. The kernel drops to uid 65534 with no capability right after the fork, as a
cold run; the whole jail belongs to one caller, and the server treats every frame as hostile
(docs/sessions.md).

Frames (big-endian, src/backends/nsjail/frames.ts): server to jail `call id u32, length u32,
request`; jail to server `call id u32, stream u8, length u32, bytes`: READY once, then per call
STDOUT, STDERR, RESULT, then STATUS `exit 0` and MEMORY `anon KIB`. When the kernel dies, STATUS
`exit N` / `signal N` for the pending call, and the jail ends.
"""

import ctypes
import os
import select
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as harness  # the same functions a cold run uses
import workdir  # files in and out
from privileges import RUN_GID, RUN_UID, drop_privileges  # the run's identity (privileges.py)

STDOUT, STDERR, RESULT, STATUS, READY, MEMORY = 1, 2, 3, 4, 5, 6
HEADER = struct.Struct(">IBI")
REQUEST = struct.Struct(">II")
LENGTH = struct.Struct(">I")
MAX_REQUEST_BYTES = 64 << 20
IN_FD, OUT_FD = 0, 1
PR_SET_DUMPABLE = 4
PR_SET_PDEATHSIG = 1
SIGKILL = 9
SIGXCPU = 24
POLL_MS = 50  # how often the parent reads the session's CPU time during a call
FREEZE_TRIES, FREEZE_WAIT_S = 200, 0.002  # up to ~0.4 s for every process to stop
# While idle the parent looks every IDLE_WATCH_MS at every thread of the jail: one that is not
# stopped (after IDLE_TRIES re-stops FREEZE_WAIT_S apart: a stop may be landing), or that got more
# than IDLE_SLACK_NS of CPU since the freeze, or a thread born since, ran: the session ends. A stop
# itself costs a thread microseconds.
IDLE_WATCH_MS = 200
IDLE_TRIES = 5
IDLE_SLACK_NS = 2_000_000
SWEEPS = 50
# Reads of one stream per poll event (the CPU budget is checked between events), and at most
# once its result is whole (a pipe holds 64 KiB unless resized, at most 1 MiB).
RELAY_CHUNKS, DRAIN_CHUNKS = 4, 32
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The parent's exit statuses (it ends the jail whenever anything is unexpected).
EXIT_INPUT_CLOSED = 0  # the server closed our input
EXIT_KERNEL_ENDED = 3  # the kernel died (its status was reported)
EXIT_BAD_FRAME = 65  # a malformed request frame or header
EXIT_FREEZE_FAILED = 66  # a process would not stop between calls
EXIT_SWEEP_FAILED = 67
EXIT_CPU = 68  # a call went over its CPU time (reported as signal 24)
EXIT_DUMPABLE = 69
EXIT_RAN_WHILE_IDLE = 72  # a process of the session ran between calls (the idle watch)
EXIT_IDENTITY = 73  # not started as uid and gid 0 of the jail
# The kernel's exit statuses besides a script's own.
EXIT_KERNEL_RETURNED = 70  # the kernel's code returned: it never goes on into the parent's
EXIT_KERNEL_ERROR = 71  # an exception in the kernel's own code
CO_COROUTINE = 0x80
# The kernel's identity, and how it gets there from the parent's (as harness/zygote.py's child).
CLOCK_REALTIME_COARSE = 5  # <time.h>; the clock file times are stamped with (Python names it not)

CPU_CEILING, RESULT_LIMIT, OUTPUT_LIMIT, CHANNEL_LIMIT, FILES_OUT, FILES_OUT_BYTES = (int(a) for a in sys.argv[1:7])
SITE_PACKAGES = sys.argv[7]


def frame(call_id, stream, payload=b""):
    workdir.write_all(OUT_FD, HEADER.pack(call_id, stream, len(payload)) + bytes(payload))


def read_exactly(fd, size):
    parts, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def other_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != 1]


def reap(kernel):
    """Reap every child that has ended (orphans come to pid 1); the kernel's wait status, if it was one."""
    status = None
    while True:
        try:
            pid, code = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        if pid == kernel.pid:
            kernel.status = status = code


def end(kernel, code):
    """Kill every other process of the jail, reap, and exit: the session is over."""
    for _ in range(SWEEPS):
        try:
            os.kill(-1, 9)
        except ProcessLookupError:
            pass
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        if not other_pids():
            os._exit(code)
    os._exit(EXIT_SWEEP_FAILED)


STOPPED = (b"T", b"t")
DEAD = (b"Z", b"X")


def tasks():
    """Every thread of every process of the jail but this one: {(tid, start): (state, CPU ns)}. A
    process whose main thread has exited shows Z while its other threads may still run: each
    thread is read. The CPU time is the scheduler's own count (schedstat), in nanoseconds. A thread
    is known by its id and its start time: an id reused by a thread born since the freeze (the
    pid counter cycled on purpose) is a new thread, not the frozen one's CPU baseline."""
    found = {}
    for pid in other_pids():
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                    fields = f.read().rpartition(b")")[2].split()
                state, start = fields[0], int(fields[19])  # stat's fields 3 and 22
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                    ns = int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue
            found[(int(tid), start)] = (state, ns)
    return found


def freeze():
    """Stop every process of the jail but this one (kill(-1) spares pid 1 and the caller), and
    check in /proc that each thread is stopped or dead. Returns each thread's CPU time then (what
    the idle watch compares with), or None if some never stop."""
    for _ in range(FREEZE_TRIES):
        try:
            os.kill(-1, 19)  # SIGSTOP
        except ProcessLookupError:
            return {}
        found = tasks()
        if all(state in STOPPED or state in DEAD for state, _ in found.values()):
            return {tid: ns for tid, (_, ns) in found.items()}
        time.sleep(FREEZE_WAIT_S)
    return None


def ran_while_idle(frozen):
    """Whether a thread of the jail ran since the freeze that returned `frozen`: a thread that is
    not stopped (the stop is sent again, IDLE_TRIES times, in case one is landing), a thread that
    got more than IDLE_SLACK_NS of CPU since, or a thread born since. A stopped thread runs again
    only when something sends it SIGCONT: no process of an idle jail runs to send it, but a
    kernel timer can (timer_create with SIGCONT as its signal) and a thawed process can stop
    itself again, so the CPU time is compared, not only the state."""
    for attempt in range(IDLE_TRIES):
        found = tasks()
        for tid, (state, ns) in found.items():
            if tid not in frozen and state not in DEAD:
                return True
            if ns - frozen.get(tid, 0) > IDLE_SLACK_NS:
                return True
        if all(state in STOPPED or state in DEAD for state, _ in found.values()):
            return False
        if attempt < IDLE_TRIES - 1:
            try:
                os.kill(-1, 19)  # SIGSTOP
            except ProcessLookupError:
                return False
            time.sleep(FREEZE_WAIT_S)
    return True


def thaw():
    try:
        os.kill(-1, 18)  # SIGCONT
    except ProcessLookupError:
        pass


def cpu_ticks():
    """CPU time of the session in clock ticks: every live process but pid 1 with its reaped
    children, and pid 1's reaped children (orphans that ended)."""
    total = 0
    for pid in [1, *other_pids()]:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended since the listing: its time is in its parent's children's times
        times = [int(v) for v in fields[11:15]]  # utime, stime, cutime, cstime
        total += sum(times[2:]) if pid == 1 else sum(times)
    return total


def over_budget(spent_ticks, cpu_seconds):
    return spent_ticks > cpu_seconds * CLK_TCK


def field_kib(path, name):
    """A `Name: N kB` line of a /proc file; None when the file cannot be read (the process ended,
    or it is not readable to us)."""
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return 0


def fs_ids(uid, gid):
    """The ids this process checks file access (and /proc's ptrace rules) with. Any change of them
    clears the parent-death signal nsjail set (SIGKILL, so the jail dies with nsjail) and resets
    dumpability: both are set again after each change."""
    libc.setfsgid(gid)
    libc.setfsuid(uid)
    libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def anon_kib():
    """The session's anonymous memory: each process's proportional share (Pss_Anon), so the pages
    the kernel still shares with the parent since its fork count once, as its cgroup charges them.
    smaps_rollup opens only for the process's own uid (ptrace's rule): read as 65534 (file-system
    ids only; the parent's own ids are back before it returns). A process that made itself
    non-dumpable shows it to no one: its whole RssAnon (/proc/PID/status) counts instead."""
    total = field_kib("/proc/1/smaps_rollup", b"Pss_Anon:") or 0
    others = other_pids()
    unread = []
    fs_ids(RUN_UID, RUN_GID)
    try:
        for pid in others:
            kib = field_kib(f"/proc/{pid}/smaps_rollup", b"Pss_Anon:")
            if kib is None:
                unread.append(pid)
            else:
                total += kib
    finally:
        fs_ids(0, 0)
    for pid in unread:
        total += field_kib(f"/proc/{pid}/status", b"RssAnon:") or 0  # None: ended since the listing
    return total


def rss_kib():
    return sum(field_kib(f"/proc/{pid}/status", b"VmRSS:") or 0 for pid in [1, *other_pids()])


def import_pyplot():
    """matplotlib's pyplot (Agg), its font cache linked through the configuration directory, one
    chart drawn (as the zygote does: harness/zygote.py import_pyplot). The directory is the
    parent's (uid 0 of the jail): sticky and writable to all, as /tmp, so the kernel's matplotlib
    may add to it as a cold run's does (but not remove the links)."""
    workdir.watch_figures(SITE_PACKAGES)
    import io

    import matplotlib.pyplot as pyplot
    figure = pyplot.figure()
    figure.gca().plot([0, 1], [0, 1], label="session")
    figure.savefig(io.BytesIO(), format="png")
    pyplot.close(figure)
    config = os.environ.get("MPLCONFIGDIR")
    if config and os.path.isdir(config) and not os.path.islink(config):
        os.chmod(config, 0o1777)


def call_cpu(data):
    """The call's CPU seconds from its request's header, never above the ceiling; None when the
    header is malformed (the server's bug: the session ends)."""
    header = data[:256].partition(b"\n")[0]
    fields = header.split(b" ")
    if fields[0] != harness.REQUEST_MAGIC or len(fields) != 6:
        return None
    try:
        lengths = [int(f) for f in fields[1:]]
    except ValueError:
        return None
    if lengths[4] <= 0 or sum(max(n, 0) for n in lengths[:4]) != len(data) - len(header) - 1:
        return None
    return min(lengths[4], CPU_CEILING)


class Kernel:
    def __init__(self, pid, pidfd, request_w, streams, result):
        self.pid, self.pidfd, self.request_w = pid, pidfd, request_w
        self.streams, self.result = streams, result  # {fd: STDOUT | STDERR}, the result pipe's read end
        self.status = None
        self.frozen = {}  # each thread's CPU time (ns) when the jail was last frozen


def drain(fd, keep, chunks=DRAIN_CHUNKS):
    """Read what is in a non-blocking pipe now, at most `chunks` reads (writers on other cores
    could keep it from ever being empty); pass each chunk to keep (or drop it). False at its end
    (every writer gone: it never has data again)."""
    for _ in range(chunks):
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        keep(chunk)
    return True


def forget_stream(kernel, fd):
    """A stream whose every writer is gone (the cell closed its stdout or stderr): it never has
    data again, and is polled no more."""
    del kernel.streams[fd]
    os.close(fd)


def serve_call(kernel, call_id, data, cpu_seconds):
    """One call: thaw, hand the request to the kernel, relay until its result is whole (or it
    dies, or spends its CPU), freeze. Returns only when the session goes on."""
    room = {STDOUT: OUTPUT_LIMIT + 1, STDERR: OUTPUT_LIMIT + 1}

    def relay(fd, chunks=RELAY_CHUNKS):
        stream = kernel.streams[fd]

        def keep(chunk):
            n = min(len(chunk), room[stream])
            if n > 0:
                room[stream] -= n
                frame(call_id, stream, chunk[:n])
        return drain(fd, keep, chunks)

    for fd in list(kernel.streams):  # written between calls: dropped
        if not drain(fd, lambda _: None):
            forget_stream(kernel, fd)
    drain(kernel.result, lambda _: None)
    reap(kernel)
    started = cpu_ticks()
    thaw()
    pending = memoryview(LENGTH.pack(len(data)) + data)
    result, expected, relayed = bytearray(), None, 0
    poll = select.poll()
    for fd in (*kernel.streams, kernel.result, kernel.pidfd, IN_FD):
        poll.register(fd, select.POLLIN)
    poll.register(kernel.request_w, select.POLLOUT)
    strikes = 0
    while True:
        for fd, events in poll.poll(POLL_MS):
            if fd == kernel.request_w:
                try:
                    pending = pending[os.write(fd, pending[:1 << 16]):]
                except BlockingIOError:
                    continue
                if not pending:
                    poll.unregister(fd)
            elif fd == kernel.pidfd:
                return kernel_died(kernel, call_id, relay)
            elif fd == IN_FD:
                if events & (select.POLLIN | select.POLLHUP):  # nothing may come during a call
                    end(kernel, EXIT_BAD_FRAME if os.read(IN_FD, 1) else EXIT_INPUT_CLOSED)
            elif fd == kernel.result:
                chunk = os.read(fd, 1 << 16)
                if not chunk:  # the cell closed the kernel's end: it fails when it reports (or the wall time)
                    poll.unregister(fd)
                    continue
                result += chunk
                if expected is None and len(result) >= LENGTH.size:
                    (expected,) = LENGTH.unpack(result[:LENGTH.size])
                    del result[:LENGTH.size]
                if expected is not None:
                    # Relayed as it comes, at most CHANNEL_LIMIT + 1 bytes: the server ends a
                    # session whose result is over the cap.
                    n = min(len(result), expected - relayed, CHANNEL_LIMIT + 1 - relayed)
                    if n > 0:
                        frame(call_id, RESULT, result[:n])
                        relayed += n
                    del result[:n]
                    if relayed == expected:
                        for stream_fd in list(kernel.streams):
                            relay(stream_fd, DRAIN_CHUNKS)
                        frame(call_id, STATUS, b"exit 0")
                        kernel.frozen = freeze()
                        if kernel.frozen is None:
                            end(kernel, EXIT_FREEZE_FAILED)
                        frame(call_id, MEMORY, b"anon %d" % anon_kib())
                        return None
            elif not relay(fd):  # every writer gone: polling it would spin (found by a review)
                poll.unregister(fd)
                forget_stream(kernel, fd)
        reap(kernel)
        if over_budget(cpu_ticks() - started, cpu_seconds):
            # Two readings in a row: a process reaped between the two reads of one listing can
            # be counted twice, for an instant.
            strikes += 1
            if strikes >= 2:
                try:
                    os.kill(-1, 9)
                except ProcessLookupError:
                    pass
                frame(call_id, STATUS, b"signal %d" % SIGXCPU)
                end(kernel, EXIT_CPU)
        else:
            strikes = 0


def kernel_died(kernel, call_id, relay):
    """The kernel is gone: what it printed, its status for the pending call, and the end."""
    for fd in list(kernel.streams):
        relay(fd, DRAIN_CHUNKS)
    while kernel.status is None:
        try:
            pid, code = os.waitpid(kernel.pid, 0)
        except ChildProcessError:  # reaped already: reap() kept its status
            break
        if pid == kernel.pid:
            kernel.status = code
    status = kernel.status or 0
    frame(call_id, STATUS, b"signal %d" % os.WTERMSIG(status) if os.WIFSIGNALED(status)
          else b"exit %d" % os.waitstatus_to_exitcode(status))
    end(kernel, EXIT_KERNEL_ENDED)


def serve(kernel):
    """Between calls: every other process stopped, and watched (ran_while_idle); wait for the
    next request (or the end)."""
    poll = select.poll()
    poll.register(IN_FD, select.POLLIN)
    poll.register(kernel.pidfd, select.POLLIN)
    while True:
        ready = dict(poll.poll(IDLE_WATCH_MS))
        if kernel.pidfd in ready:  # killed while stopped (only SIGKILL can): the session is over
            end(kernel, EXIT_KERNEL_ENDED)
        if not ready:
            if ran_while_idle(kernel.frozen):
                end(kernel, EXIT_RAN_WHILE_IDLE)
            continue
        header = read_exactly(IN_FD, REQUEST.size)
        if header is None:
            end(kernel, EXIT_INPUT_CLOSED)
        call_id, length = REQUEST.unpack(header)
        data = read_exactly(IN_FD, length) if length <= MAX_REQUEST_BYTES else None
        cpu_seconds = None if data is None else call_cpu(data)
        if cpu_seconds is None:
            end(kernel, EXIT_BAD_FRAME)
        serve_call(kernel, call_id, data, cpu_seconds)


# ---- the kernel: the session's one interpreter ----------------------------------------------


def kernel_main(request_r, result_w, pipes):
    """The forked kernel: fds 1 and 2 the parent's pipes, stdin /dev/null, cwd /tmp; then calls,
    one at a time, until the parent closes its request pipe. Never returns into the parent's code."""
    try:
        import _signal
        libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # its own /proc entries behave as in a cold run
        for read, write in pipes:
            os.dup2(write, 1 if read == pipes[0][0] else 2)
            os.close(read)
            os.close(write)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.chdir("/tmp")
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)
        harness.volunteer_for_oom()  # the kernel, never the parent, is the OOM killer's choice
        workdir.make_output_dir()
        sys.argv = [harness.FILENAME]
        import types
        module = types.ModuleType(harness.MODULE_NAME)
        sys.modules[harness.MODULE_NAME] = module
        owner = os.getpid()
        last_end = 0
        workdir.write_all(result_w, b"R")  # set up (dumpable again): the parent may freeze us now
        while True:
            header = read_exactly(request_r, LENGTH.size)
            if header is None:
                os._exit(0)
            data = read_exactly(request_r, LENGTH.unpack(header)[0])
            if data is None:
                os._exit(0)
            last_end = kernel_call(data, module, result_w, owner, last_end)
    except BaseException:
        try:
            sys.__excepthook__(*sys.exc_info())
        finally:
            os._exit(EXIT_KERNEL_ERROR)
    finally:
        os._exit(EXIT_KERNEL_RETURNED)


def output_holds_files():
    try:
        with os.scandir(workdir.OUTPUT_DIR) as entries:
            return any(True for _ in entries)
    except OSError:  # removed or replaced by the session: its own loss
        return False


def coarse_now():
    return time.clock_gettime_ns(CLOCK_REALTIME_COARSE)


def kernel_call(data, module, result_w, owner, last_end):
    request = harness.parse_request(data)
    del data
    # Files are stamped with the coarse clock or finer (multigrain timestamps, Linux 6.13+: once
    # a file's times were read, its next change is stamped from the fine clock), never below the
    # coarse clock and never above the fine one. So a call starts (coarse) only once the coarse
    # clock has passed the last call's end read from the fine clock: "changed since the call
    # started" then takes every file this call writes and none an earlier call wrote. (Only when
    # output/ holds files at all: else nothing of an earlier call can be mistaken.)
    started = coarse_now()
    while started <= last_end and output_holds_files():
        time.sleep(0.001)
        started = coarse_now()
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    harness.attach_stdin(request.stdin)
    reserve = workdir.Reserve()
    try:
        workdir.replace_files(request.files)
        message = cell(request, module)
    except OSError as exc:  # a file could not be placed (replace_files names it)
        message = harness.failure(harness.MAIN_RAISED, harness.valid_text(str(exc), harness.MAX_MESSAGE_CHARS),
                                  exception=harness.type_name(exc))
    request.files = None
    if os.getpid() != owner:  # a process the cell forked came back from it: it reports nothing
        os._exit(0)
    message, returned = harness.collect(message, (FILES_OUT, FILES_OUT_BYTES), reserve, time.time_ns(), started)
    close_figures()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # the script may have closed or replaced them
            pass
    sys.setrecursionlimit(max(sys.getrecursionlimit(), harness.MAX_DEPTH * 2 + 100))
    try:
        encoded = harness.encode(message, RESULT_LIMIT, returned)
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError) as exc:
        encoded = harness.encode(harness.failure(harness.RESULT_NOT_JSON,
                                                 f"main() returned something that is not JSON: {exc}"), RESULT_LIMIT)
    except MemoryError:
        message = returned = None
        encoded = harness.encode(harness.failure(harness.MEMORY_LIMIT_EXCEEDED,
                                                 "the run ran out of memory while its reply was encoded"), RESULT_LIMIT)
    end_mark = time.time_ns()  # the fine clock: no file of this call is stamped later
    workdir.write_all(result_w, LENGTH.pack(len(encoded)) + encoded)
    return end_mark


def close_figures():
    """The figures open at the end of a call came back with it: closed, as a notebook's inline
    backend does, so the next call starts with none."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        try:
            pyplot.close("all")
        except BaseException:  # the script replaced pyplot or broke it: its own loss
            pass


def user_frames(exc):
    """The exception with the kernel's own frames dropped from the front of its traceback."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    exc.__traceback__ = tb
    return exc


def cell(request, module):
    """One call's script in the session's namespace: main() when this cell defines one, else the
    value of its last statement when that is an expression (a notebook's cell), else None."""
    import ast
    import mmap
    source, args = request.source, request.args
    try:
        tree = compile(source, harness.FILENAME, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        defines_main = any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "main"
                           for node in tree.body)
        last = None
        if not defines_main and tree.body and isinstance(tree.body[-1], ast.Expr):
            last = compile(ast.Expression(tree.body.pop().value), harness.FILENAME, "eval", dont_inherit=True)
        code = compile(tree, harness.FILENAME, "exec", dont_inherit=True)
    except SyntaxError as exc:
        line, column = exc.lineno or 0, exc.offset or 0
        return harness.failure(harness.SYNTAX_ERROR, f"line {line}, column {column}: {exc.msg}",
                               line=line, column=column)
    except ValueError as exc:  # e.g. a null byte in the source
        return harness.failure(harness.SYNTAX_ERROR, str(exc), line=0, column=0)
    if args and not defines_main:
        return harness.failure(harness.MISSING_MAIN,
                               "input is main()'s argument, and this call's script defines no main()")
    namespace = module.__dict__
    reserve = mmap.mmap(-1, harness.RESERVE_BYTES, flags=mmap.MAP_PRIVATE)
    try:
        exec(code, namespace)
        if defines_main:
            main = namespace.get("main", None)
            if not callable(main):
                return harness.failure(harness.MAIN_NOT_CALLABLE,
                                       f"main is a {harness.type_name(main)}, not a function")
            try:
                called = main(*args)
            except TypeError as exc:
                if args and exc.__traceback__ is not None and exc.__traceback__.tb_next is None:
                    return harness.signature_failure(main, exc)
                raise
            if getattr(getattr(main, "__code__", None), "co_flags", 0) & CO_COROUTINE:
                import asyncio
                result = asyncio.run(called)
            else:
                result = called
        else:
            result = None if last is None else eval(last, namespace)
    except MemoryError as exc:
        exc.__traceback__ = None
        del exc
        reserve.close()
        return harness.failure(harness.MEMORY_LIMIT_EXCEEDED, "the script ran out of memory (MemoryError)")
    except BaseException as exc:  # SystemExit and KeyboardInterrupt are the script's too
        return harness.raised(user_frames(exc), request)
    finally:
        if not reserve.closed:
            reserve.close()
    try:
        harness.check_json(result)
    except harness.NotJson as exc:
        what = "main() returned" if defines_main else "the script's last line is"
        return harness.failure(harness.RESULT_NOT_JSON, f"{what} something that is not JSON: {exc}")
    return {"ok": True, "result": result}


# ---- start-up --------------------------------------------------------------------------------


def identity_ok():
    """The launcher makes the parent uid and gid 0 of the jail (and the kernel's 65534 another)."""
    return os.getuid() == 0 and os.getgid() == 0


def start_kernel():
    request_r, request_w = os.pipe()
    result_r, result_w = os.pipe()
    pipes = [os.pipe(), os.pipe()]  # the kernel's stdout and stderr
    pid = os.fork()
    if pid == 0:
        try:
            drop_privileges()  # before anything else: no code of the kernel runs as the parent
        except BaseException:
            os._exit(EXIT_KERNEL_ERROR)
        os.close(request_w)
        os.close(result_r)
        kernel_main(request_r, result_w, pipes)
    os.close(request_r)
    os.close(result_w)
    streams = {}
    for (read, write), stream in zip(pipes, (STDOUT, STDERR), strict=True):
        os.close(write)
        os.set_blocking(read, False)
        streams[read] = stream
    os.set_blocking(result_r, False)
    os.set_blocking(request_w, False)
    return Kernel(pid, os.pidfd_open(pid), request_w, streams, result_r)


def main():
    global libc
    import _signal
    # pid 1 of its namespace: with no handler installed no signal from inside can reach us.
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
    if not identity_ok():
        sys.stderr.write("session.py runs as uid and gid 0 of its jail, with CAP_SETUID, CAP_SETGID, "
                         "CAP_SETPCAP and CAP_KILL\n")
        os._exit(EXIT_IDENTITY)
    sys.path.append(SITE_PACKAGES)
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import_pyplot()
    import ast  # noqa: F401
    import asyncio  # noqa: F401
    import json  # noqa: F401
    import linecache  # noqa: F401
    import mmap  # noqa: F401
    import traceback  # noqa: F401
    import types  # noqa: F401
    libc = ctypes.CDLL(None, use_errno=True)
    # Non-dumpable: the kernel (same uid) cannot read or write this process through /proc.
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        os._exit(EXIT_DUMPABLE)
    import gc
    gc.collect()
    gc.freeze()  # the imports' objects: never traversed by the kernel's collector, so never copied
    kernel = start_kernel()
    os.set_blocking(kernel.result, True)
    if os.read(kernel.result, 1) != b"R":  # the kernel died setting itself up
        end(kernel, EXIT_KERNEL_ENDED)
    os.set_blocking(kernel.result, False)
    kernel.frozen = freeze()
    if kernel.frozen is None:
        end(kernel, EXIT_FREEZE_FAILED)
    frame(0, READY, b"rss %d anon %d" % (rss_kib(), anon_kib()))
    try:
        serve(kernel)
    except BaseException:  # anything unexpected in the parent ends the session
        end(kernel, EXIT_KERNEL_RETURNED)


libc = None

if __name__ == "__main__":
    if os.getpid() != 1:  # kill(-1) outside a pid namespace of its own would be a disaster
        sys.exit("session.py runs only as pid 1 of a sandbox's pid namespace")
    main()
