"""PySandbox warm-sandbox zygote: pid 1 of a long-lived jail that serves runs one at a time.

    python3 -I -u -B zygote.py CPU_SECONDS RESULT_BYTES OUTPUT_BYTES CHANNEL_BYTES FILES_OUT FILES_OUT_BYTES \
        SITE_PACKAGES

It imports numpy, pandas and matplotlib's pyplot once, makes /tmp/output (where runs leave the
files they return; its contents are cleaned after each run like the rest of /tmp), makes itself
non-dumpable, and then never runs user code nor
keeps user data. It is uid 0 of the jail with four capabilities (SETUID, SETGID, KILL, SETPCAP); ahead of
each request it forks the *child*, which drops to uid and gid 65534 with no capability at all
(so no run shares a uid with the zygote: none can change its limits, scheduling, priority or
anything else of it), reads one script frame from fd 0 itself and runs it exactly as a cold
run.py does (run.py's own functions, imported). The
zygote relays the child's stdout, stderr and result channel as frames on fd 1 through one
preallocated buffer that it wipes after the run, capped; it reports the child's status when the
child has ended, or as soon as the child has sent its result and closed every stream (then it
kills the child); it kills every other process of the jail (as pid 1, it is the only one no one
inside can kill), has a process of its own empty /tmp and /dev/shm and remove SysV IPC objects,
checks that the jail is back to its pre-run state, forks the next child and says it is ready. Anything
unexpected ends the zygote, and with it the jail: the server starts a new one.

Frames (big-endian): server to jail `run id u32, length u32, script`, or `run id u32, STOP` to
end that run (wall time, client gone: the zygote kills it and cleans up as after any run, and the
jail is kept); jail to server `run id u32, stream u8, length u32, bytes`, with the streams below.
"""

import ctypes
import gc
import os
import select
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as harness  # the same functions a cold run uses
import workdir  # files in and out, as a cold run places and collects them
from privileges import drop_privileges  # the run's identity (privileges.py)

STDOUT, STDERR, RESULT, STATUS, READY = 1, 2, 3, 4, 5
HEADER = struct.Struct(">IBI")
REQUEST = struct.Struct(">II")
MAX_SCRIPT_BYTES = 64 << 20
STOP = 0xFFFFFFFF  # a request frame's length that means: end this run
IN_FD, OUT_FD = 0, 1
FRAMED_FD, FRAME_READ = 4, b"R"  # a child says on this pipe that it has read its script frame
OUTPUT_DIR = "/tmp/" + workdir.OUTPUT_DIR
PR_SET_DUMPABLE = 4
IPC_RMID = 0
SWEEPS = 50
EXIT_NO_INPUT, EXIT_BAD_FRAME = 64, 65
# The zygote's exit statuses: anything unexpected ends it, and with it the jail.
EXIT_DUMPABLE = 2  # the zygote could not make itself non-dumpable
EXIT_SWEEP_FAILED = 5  # a run's processes outlived the sweep
EXIT_CLEAN_FAILED = 6  # the clean-up process failed, or processes outlived the sweep after it
EXIT_NOT_RESTORED = 7  # after the clean-up the jail is still not as the zygote found it
EXIT_AUTOGROUP = 8  # the session's autogroup nice could not be put back to 0
EXIT_SPARE_ENDED = 9  # the next run's process ended before it read its script frame
# A child's exit statuses besides the script's own.
EXIT_UNCAUGHT = 1  # an exception in the child's own code: a traceback and 1, as a cold run ends on one
EXIT_CHILD_RETURNED = 70  # the child's code returned: it never goes on into the zygote's
EXIT_CLEANER_RETURNED = 71  # the clean-up process's code returned: the same
# The clean-up process's exit statuses (the zygote treats any but 0 as EXIT_CLEAN_FAILED).
CLEAN_OK = 0  # everything the run left is removed
CLEAN_ERROR = 1  # an OSError while removing
CLEAN_SOCKETS_LEFT = 2  # unix sockets remain that cannot be removed from outside
AUTOGROUP_TRIES, AUTOGROUP_WAIT_S = 40, 0.05
TOPS = {}
INODES = {}
HEADERS = dict.fromkeys(["/proc/sysvipc/shm", "/proc/sysvipc/sem", "/proc/sysvipc/msg", "/proc/net/unix"], 0)
DEV_ENTRIES = []
BUFFER = bytearray(1 << 16)
VIEW = memoryview(BUFFER)
ZEROS = bytes(len(BUFFER))

CPU_SECONDS, RESULT_LIMIT, OUTPUT_LIMIT, CHANNEL_LIMIT, FILES_OUT, FILES_OUT_BYTES = (int(a) for a in sys.argv[1:7])
SITE_PACKAGES = sys.argv[7]

# The state every child starts from, taken before numpy and pandas were imported.
ENVIRON = dict(os.environ)
UMASK = os.umask(0o022)
os.umask(UMASK)


def frame(run_id, stream, payload=b""):
    workdir.write_all(OUT_FD, HEADER.pack(run_id, stream, len(payload)) + payload)


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
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid())]


def sweep(reap):
    """Kill every process of the pid namespace but pid 1 and the caller; reap; check it held."""
    for _ in range(SWEEPS):
        try:
            os.kill(-1, 9)
        except ProcessLookupError:
            pass
        while True:
            try:
                reap()
            except ChildProcessError:
                break
        if not other_pids():
            return True
    return False


def reap_any():
    os.waitpid(-1, 0)


DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def empty_dir(path, keep=()):
    """Remove everything under path but the names in keep. Iterative, through one directory
    descriptor at a time and names relative to it, so no depth, path length or mode a run chose
    stops it (a recursive walk ended at 1,200 levels; a path stops at 4,096 bytes). Runs only
    after every process of the run is dead: nothing moves underneath it."""
    fd = os.open(path, DIR_FLAGS)
    try:
        stack = [(None, entries_to_descend(fd, keep))]  # (this directory's name, subdirectories left)
        while stack:
            name, subdirs = stack[-1]
            if subdirs:
                sub = subdirs.pop()
                os.chmod(sub, 0o700, dir_fd=fd)  # even one the run made unreadable
                child = os.open(sub, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
                stack.append((sub, entries_to_descend(fd, ())))
                continue
            stack.pop()
            if stack:
                parent = os.open("..", DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = parent
                os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)


def entries_to_descend(fd, keep):
    """Unlink every entry of the directory at fd that is not a directory; return the directories."""
    subdirs = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.name in keep:
                continue
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    return subdirs


def restore_autogroup():
    """Runs share the jail's session and so its scheduler autogroup, whose nice any process of the
    session may raise through /proc/self/autogroup: one run at 19 slowed every later run of the
    jail twentyfold. Put it back to 0. The kernel takes one such write per 0.1 s host-wide (EAGAIN
    otherwise), so try for a while; False (the jail is then replaced) if it never takes."""
    try:
        with open("/proc/self/autogroup", "rb") as f:
            if f.read().endswith(b" nice 0\n"):
                return True
    except FileNotFoundError:  # a kernel without autogroups
        return True
    for _ in range(AUTOGROUP_TRIES):
        try:
            fd = os.open("/proc/self/autogroup", os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
            return True
        except BlockingIOError:
            time.sleep(AUTOGROUP_WAIT_S)
    return False


def remove_ipc(libc):
    removers = {"shm": lambda i: libc.shmctl(i, IPC_RMID, None),
                "sem": lambda i: libc.semctl(i, 0, IPC_RMID),
                "msg": lambda i: libc.msgctl(i, IPC_RMID, None)}
    for kind, remove in removers.items():
        with open(f"/proc/sysvipc/{kind}") as table:
            ids = [int(line.split()[1]) for line in table.readlines()[1:] if line.strip()]
        for ident in ids:
            remove(ident)


def child(pipes):
    """The script's process, forked ahead of its request (the *spare*): it closes what it inherited,
    becomes the run's uid, and does everything a run needs that does not depend on the request
    (streams, signals, limits, output/, a rehearsal of the harness's own path) before it reads
    the script frame itself (the zygote never sees the script); then it takes run.py's path. It
    stays in the zygote's session: scripts may not make one."""
    try:
        import _signal
        import resource
        # Only its own pipes stay, as fds 1, 2, 3 and FRAMED_FD; fd 0 is the jail's input.
        for read, _ in pipes:
            os.close(read)
        for fd, (_, write) in zip((1, 2, 3, FRAMED_FD), pipes, strict=True):
            os.dup2(write, fd)
        os.closerange(FRAMED_FD + 1, os.sysconf("SC_OPEN_MAX"))
        drop_privileges()
        libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # its own /proc entries behave as in a cold run
        os.chdir("/tmp")
        os.umask(UMASK)
        for signum in range(1, _signal.NSIG):
            try:
                _signal.signal(signum, _signal.SIG_DFL)
            except (OSError, ValueError, RuntimeError):
                pass
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)
        _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)
        _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)
        _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
        # POSIX message queues outlive their processes and cannot be listed without an mqueue
        # mount: no run of a warm jail may create one (the policy says so too; this holds even if not).
        resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))
        channel = harness.open_channel()
        reserve = harness.set_up(SITE_PACKAGES)
        rehearse()
        # The frozen generation stays frozen: collecting it would copy every page shared with the zygote.
        gc.enable()
        length = STOP
        while length == STOP:  # a stop that came after its run had ended: nothing to stop
            header = read_exactly(IN_FD, REQUEST.size)
            if header is None:
                os._exit(EXIT_NO_INPUT)
            _, length = REQUEST.unpack(header)
        data = read_exactly(IN_FD, length) if length <= MAX_SCRIPT_BYTES else None
        if data is None:
            os._exit(EXIT_BAD_FRAME)
        # The frame is read: from now on the zygote may read fd 0 (stops). A spare that ends
        # before this (it never should) sends no byte: its request is still in fd 0, for no other
        # run to take, and the zygote ends the jail.
        workdir.write_all(FRAMED_FD, FRAME_READ)
        os.close(FRAMED_FD)
        request = harness.parse_request(data)
        del data
        harness.volunteer_for_oom()  # the run, not a spare waiting for minutes, is the OOM killer's first choice
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        harness.attach_stdin(request.stdin)
        # The run's own CPU limit, never above the jail's ceiling (the zygote's argument).
        cpu_seconds = min(request.cpu_seconds or CPU_SECONDS, CPU_SECONDS)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        harness.limit_cpu(channel, cpu_seconds, RESULT_LIMIT)
        # sys.stdout and sys.stderr are the interpreter's own objects on fds 1 and 2 (unbuffered,
        # -u), now the run's pipes; the zygote never wrote to them.
        harness.conclude(request, channel, RESULT_LIMIT, (FILES_OUT, FILES_OUT_BYTES), SITE_PACKAGES, reserve)
    except BaseException:  # as an uncaught exception ends a cold run: a traceback and status 1
        try:
            sys.__excepthook__(*sys.exc_info())  # the C-level printer, as the interpreter's
        finally:
            os._exit(EXIT_UNCAUGHT)
    finally:
        os._exit(EXIT_CHILD_RETURNED)  # never return into the zygote's code


REHEARSAL_SCRIPT = b"""import json
def main(data):
    rows = [{"name": str(k), "value": v * 1.5, "ok": v % 2 == 0} for k, v in enumerate(data["values"])]
    return {"rows": rows, "total": sum(r["value"] for r in rows), "none": None}
"""
REHEARSAL_INPUT = b'{"values": [1, 2, 3], "text": "\\u00e9"}'


def rehearse():
    """The harness's own path once, on a request of our own, before the real one comes: parse,
    compile, call, check and encode. The pages it touches are copied from the zygote now (a fork
    shares them until written), not on the request's path. Nothing of it remains: no output, no
    file, no module registered, its objects freed (the cycle broken, for the run's collector)."""
    namespace = {"__name__": harness.MODULE_NAME}
    try:
        request = harness.parse_request(b"%s %d %d -1 -1\n%s%s" % (
            harness.REQUEST_MAGIC, len(REHEARSAL_SCRIPT), len(REHEARSAL_INPUT), REHEARSAL_SCRIPT, REHEARSAL_INPUT))
        exec(compile(request.source, harness.FILENAME, "exec", dont_inherit=True), namespace)
        message = {"ok": True, "result": namespace["main"](*request.args)}
        harness.check_json(message["result"])
        harness.encode(message, RESULT_LIMIT)
    except Exception:  # it only copies pages early: no run may fail for it
        pass
    finally:
        namespace.clear()  # main() and its module refer to each other: no cycle left for the run


def relay(run_id, pid, pipes):
    """Forward the child's streams as frames, capped, until it ends; then kill every other
    process of the jail and drain the pipes. Returns the child's wait status, whether the sweep
    held, and whether the status was already reported (see below). The bytes pass
    through one preallocated buffer, wiped afterwards: nothing of a run stays in the zygote's
    memory, which every later run's child inherits."""
    pidfd = os.pidfd_open(pid)
    room = {STDOUT: OUTPUT_LIMIT + 1, STDERR: OUTPUT_LIMIT + 1, RESULT: CHANNEL_LIMIT + 1}
    streams = {}
    poll = select.poll()
    for stream, (read, write) in zip((STDOUT, STDERR, RESULT), pipes, strict=False):  # and "frame read"
        os.close(write)
        os.set_blocking(read, False)
        streams[read] = stream
        poll.register(read, select.POLLIN)
    poll.register(pidfd, select.POLLIN)
    # fd 0 is the child's until it has read its script frame; it says so by closing this pipe.
    framed, framed_w = pipes[-1]
    os.close(framed_w)
    poll.register(framed, select.POLLIN)

    def stop_requested():
        """Read a frame from the server while a run is going: only a stop of this run is valid."""
        header = read_exactly(IN_FD, REQUEST.size)
        if header is None:  # the server went away: end the run; the loop then shuts down
            return True
        stopped, length = REQUEST.unpack(header)
        if length != STOP:
            os._exit(EXIT_BAD_FRAME)
        return stopped == run_id

    def forward(fd):
        stream = streams[fd]
        try:
            n = os.readv(fd, [BUFFER])
        except BlockingIOError:
            return True
        if n == 0:
            return False
        if room[stream] > 0:
            n = min(n, room[stream])
            room[stream] -= n
            header = HEADER.pack(run_id, stream, n)
            written = os.writev(OUT_FD, [header, VIEW[:n]])  # one write a frame: the server reads it whole
            if written < HEADER.size + n:  # a pipe may take part of it (no copy of the run's bytes)
                workdir.write_all(OUT_FD, header[written:])
                workdir.write_all(OUT_FD, VIEW[max(0, written - HEADER.size):n])
        elif stream == RESULT:  # the server ends a run whose result is over the cap
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        return True

    alive, reported = True, False
    while alive:
        for fd, _ in poll.poll():
            if fd == pidfd:
                alive = False
            elif fd == framed:
                if os.read(framed, 1) != FRAME_READ:  # the spare ended before it read its frame
                    os._exit(0 if input_closed() else EXIT_SPARE_ENDED)
                poll.unregister(framed)
                os.close(framed)
                framed = -1
                poll.register(IN_FD, select.POLLIN)
            elif fd == IN_FD:
                if stop_requested():
                    poll.unregister(IN_FD)
                    os.kill(pid, 9)  # its status (signal 9) follows; the sweep takes the rest
            elif not forward(fd):
                poll.unregister(fd)
                del streams[fd]
                os.close(fd)
        if alive and not streams and room[RESULT] <= CHANNEL_LIMIT:
            # A message, then every stream closed: run.py's last act before it exits. Report
            # now and end the process ourselves: its teardown (milliseconds with pandas mapped)
            # and the sweep happen after the reply, before this jail says ready again.
            frame(run_id, STATUS, b"exit 0")
            os.kill(pid, 9)
            alive, reported = False, True
    _, status = os.waitpid(pid, 0)
    os.close(pidfd)
    if framed >= 0:
        os.close(framed)
    # The script's process is gone: so goes everything it started, then the pipes end.
    swept = sweep(reap_any)
    for fd in list(streams):
        os.set_blocking(fd, True)
        while forward(fd):
            pass
    for fd in streams:
        os.close(fd)
    BUFFER[:] = ZEROS
    return status, swept, reported


def clean():
    """In a process of its own with the run's uid (names the run chose never enter the zygote, and
    the cleaner can undo exactly what the run could do): empty /tmp (output/ itself stays), its
    output/ and /dev/shm, remove what was added to /dev, remove SysV IPC objects. Unix sockets
    kept alive only by a message in flight (an abstract name that outlives every process) cannot
    be removed from outside: their presence fails the clean-up, so the jail is replaced. Runs
    after every process of the run is dead."""
    try:
        drop_privileges()
        empty_dir("/tmp", keep=(workdir.OUTPUT_DIR,))
        empty_dir(OUTPUT_DIR)
        empty_dir("/dev/shm")
        empty_dir("/dev", keep=DEV_ENTRIES)
        remove_ipc(libc)
        with open("/proc/net/unix") as table:
            if len(table.readlines()) > 1:
                os._exit(CLEAN_SOCKETS_LEFT)
    except OSError:
        os._exit(CLEAN_ERROR)
    os._exit(CLEAN_OK)


def restore_tops():
    """The writable directories' mode and times as the zygote found them (a run's entries change
    the times, which could carry data to the next run). They belong to the zygote's uid: only it
    can set them, and it touches no name the run chose."""
    for path, (mode, atime, mtime) in TOPS.items():
        os.chmod(path, mode)
        os.utime(path, ns=(atime, mtime), follow_symlinks=False)


def untouched():
    """True when the run changed nothing the clean-up restores, judged without reading anything
    the run chose (names, keys): the writable directories' mode, times and size of extended
    attributes, the inode counts of their file systems (a run can only add inodes: the entries
    of /dev are mount points), and whether the IPC and unix-socket tables have more than their
    header. Then no clean-up process is needed."""
    for path, (mode, atime, mtime) in TOPS.items():
        st = os.stat(path, follow_symlinks=False)
        if (st.st_mode & 0o7777 != mode or st.st_atime_ns != atime or st.st_mtime_ns != mtime
                or libc.listxattr(path.encode(), None, 0) != 0 or used_inodes(path) != INODES[path]):
            return False
    for path, size in HEADERS.items():
        fd = os.open(path, os.O_RDONLY)
        try:
            if len(os.read(fd, size + 1)) != size:
                return False
        finally:
            os.close(fd)
    return True


def used_inodes(path):
    st = os.statvfs(path)
    return st.f_files - st.f_ffree


def fork_child():
    pipes = [os.pipe() for _ in range(4)]  # stdout, stderr, result; the last says "frame read"
    pid = os.fork()
    if pid == 0:
        child(pipes)
    return pid, pipes


def input_closed():
    events = select.poll()
    events.register(IN_FD, select.POLLIN)
    return any(mask & select.POLLHUP and not mask & select.POLLIN for _, mask in events.poll(0))


def footprint():
    """b"rss KIB anon KIB": the resident set and its anonymous part (what a memory cgroup charges)."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon"):
                fields[name] = int(value.split()[0])
    return b"rss %d anon %d" % (fields.get("VmRSS", 0), fields.get("RssAnon", 0))


def import_pyplot():
    """matplotlib's pyplot (Agg, from the environment), its font cache read from the one built at
    install through the run's configuration directory, which is removed again: /tmp is as it was."""
    config = os.environ["MPLCONFIGDIR"]
    workdir.watch_figures(SITE_PACKAGES)
    try:
        import io

        import matplotlib.pyplot as pyplot
        # One chart drawn and closed: the fonts, their glyph caches and the renderer a run's first
        # chart needs are loaded here, once (a run's first chart took tens of milliseconds more).
        figure = pyplot.figure()
        figure.gca().plot([0, 1], [0, 1], label="warm")
        figure.gca().set_title("warm")
        figure.legend()
        figure.savefig(io.BytesIO(), format="png")
        pyplot.close(figure)
    finally:
        if os.path.isdir(config):
            for name in os.listdir(config):
                os.unlink(os.path.join(config, name))
            os.rmdir(config)


def make_output_dir():
    """/tmp/output, the zygote's, where every run may add files (sticky, as /tmp). A run's harness
    lists it only when its time of change says something was added (workdir.py's walk): listing
    it would touch its access time, and the jail would be cleaned after every run. Its times are
    set back by twice the harness's margin, so that holds from the first run on."""
    os.mkdir(OUTPUT_DIR)
    os.chmod(OUTPUT_DIR, 0o1777)
    st = os.stat(OUTPUT_DIR)
    back = 2 * workdir.UNCHANGED_MARGIN_NS
    os.utime(OUTPUT_DIR, ns=(st.st_atime_ns - back, st.st_mtime_ns - back))


def main():
    global libc
    import _signal
    # pid 1 of its namespace: with no handler installed no signal from inside can reach us.
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
    if os.getuid() != 0:  # the launcher gives the zygote uid 0 of the jail, the runs another
        sys.exit("zygote.py runs as uid 0 of its jail, with CAP_SETUID, CAP_SETGID and CAP_KILL")
    sys.path.append(SITE_PACKAGES)
    # Imported once, before any child is forked: numpy and pandas first, then what a run may need.
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import_pyplot()
    import asyncio  # noqa: F401
    import json  # noqa: F401
    import linecache  # noqa: F401
    import resource  # noqa: F401
    import traceback  # noqa: F401
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        os._exit(EXIT_DUMPABLE)
    gc.collect()
    gc.freeze()  # fewer pages touched (copied) by the children's collector
    gc.disable()
    make_output_dir()
    # The writable places as no run has touched them: what the clean-up restores and checks.
    for path in ("/tmp", OUTPUT_DIR, "/dev/shm", "/dev"):
        st = os.stat(path, follow_symlinks=False)
        TOPS[path] = (st.st_mode & 0o7777, st.st_atime_ns, st.st_mtime_ns)
    DEV_ENTRIES[:] = sorted(os.listdir("/dev"))
    for path in HEADERS:
        with open(path, "rb") as table:
            HEADERS[path] = len(table.readline())
    for path in TOPS:
        INODES[path] = used_inodes(path)
    # Once, before the first fork: every child inherits the environment the zygote started with.
    os.environ.clear()
    os.environ.update(ENVIRON)
    run_id = 0
    while True:
        run_id = serve(run_id)


def serve(run_id):
    """One run: the spare forked, ready said, the run relayed, its jail swept and cleaned up after.
    A function of its own so that nothing of a run is a local of a frame the next spare inherits
    (a script can walk its stack up to main(): the status of the run before was there)."""
    # The next run's process (the spare) exists before the jail says ready, set up but for its
    # request: the request waits for no fork. It is forked once the run before is swept and
    # cleaned up after, so it never shares the jail with anything of that run.
    pid, pipes = fork_child()
    frame(run_id, READY, footprint())
    run_id += 1
    status, swept, reported = relay(run_id, pid, pipes)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_NO_INPUT and input_closed():
        os._exit(0)  # the server closed our input: shut down
    if not reported:
        frame(run_id, STATUS, b"signal %d" % os.WTERMSIG(status) if os.WIFSIGNALED(status)
              else b"exit %d" % os.waitstatus_to_exitcode(status))
    if not swept:
        os._exit(EXIT_SWEEP_FAILED)
    if not restore_autogroup():
        os._exit(EXIT_AUTOGROUP)
    if not untouched():
        cleaner = os.fork()
        if cleaner == 0:
            try:
                clean()
            finally:
                os._exit(EXIT_CLEANER_RETURNED)
        _, status = os.waitpid(cleaner, 0)
        if status != 0 or not sweep(reap_any):
            os._exit(EXIT_CLEAN_FAILED)
        restore_tops()
        if not untouched():  # the clean-up must leave the jail as the zygote found it
            os._exit(EXIT_NOT_RESTORED)
    return run_id

libc = None

if __name__ == "__main__":
    if os.getpid() != 1:  # kill(-1) outside a pid namespace of its own would be a disaster
        sys.exit("zygote.py runs only as pid 1 of a sandbox's pid namespace")
    main()
