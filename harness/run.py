"""PySandbox harness: the only code besides the user's that runs inside the sandbox.

    python3 -I -u run.py [--seccomp] CPU_SECONDS RESULT_BYTES FILES_OUT FILES_OUT_BYTES [SITE_PACKAGES]
    (request on fd 4, result on fd 3)

It reads the request from fd 4 (the script, and the input, stdin and files when the caller sent
them: see parse_request), puts the files in the working directory, gives the script its stdin,
runs it as module "sandboxed_script" (not "__main__"), calls main() and writes one JSON message
on fd 3, a channel of its own: main()'s value, and the files the script left under output/ and
its open figures (workdir.py). Whatever the script prints goes to stdout/stderr and can never
become the result. The server treats the channel as untrusted and parses it strictly; this file
only makes honest scripts report precisely.
"""

# Only what every run needs. asyncio, traceback, json and signal (which import re and enum)
# cost tens of milliseconds, a multiple of the interpreter's own start-up, so they are avoided
# or imported only when a script needs them.
import _json
import _signal
import math
import mmap
import os
import resource
import sys
import time
import types

# The working directory's files (in and out), a module of its own beside this one.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workdir

del sys.path[0]

CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect
GETPID = os.getpid  # as it is now: the script may replace os.getpid

RESULT_FD = 3
SCRIPT_FD = 4
FILENAME = "<script>"
MODULE_NAME = "sandboxed_script"
MAX_DEPTH = 200
MAX_SAFE_INT = 2**53 - 1  # beyond this a JSON reader (JavaScript's among them) loses digits
OOM_SCORE_ADJ = b"1000"  # a run is the OOM killer's first choice, before any process of ours
RESERVE_BYTES = 4 * 1024 * 1024  # address space, never touched: costs no time and no memory
# Where the sandbox mounts its own packages (numpy, pandas); not a host path.
SANDBOX_SITE_PACKAGES = "/sandbox/site-packages"

# The error codes this harness sends on the result channel ("code" of a message with "ok": false).
SYNTAX_ERROR = "SYNTAX_ERROR"  # the script does not compile
MISSING_MAIN = "MISSING_MAIN"  # the script defines no main
MAIN_NOT_CALLABLE = "MAIN_NOT_CALLABLE"  # main is not a function
MAIN_RAISED = "MAIN_RAISED"  # the script or main() raised
RESULT_NOT_JSON = "RESULT_NOT_JSON"  # main() returned something that is not strict JSON
RESULT_TOO_LARGE = "RESULT_TOO_LARGE"  # main()'s JSON is over the result limit
MEMORY_LIMIT_EXCEEDED = "MEMORY_LIMIT_EXCEEDED"  # a MemoryError (RLIMIT_AS)
TIME_LIMIT_EXCEEDED = "TIME_LIMIT_EXCEEDED"  # SIGXCPU: over the CPU limit
MAIN_SIGNATURE = "MAIN_SIGNATURE"  # the input was sent, and main cannot take it as its one argument
OUTPUT_TOO_LARGE = "OUTPUT_TOO_LARGE"  # more files or bytes under output/ than the limits
# Every code above: the server's list of codes must hold each one.
CODES = (SYNTAX_ERROR, MISSING_MAIN, MAIN_NOT_CALLABLE, MAIN_SIGNATURE, MAIN_RAISED, RESULT_NOT_JSON,
         RESULT_TOO_LARGE, OUTPUT_TOO_LARGE, MEMORY_LIMIT_EXCEEDED, TIME_LIMIT_EXCEEDED)
# The request's header (src/backends/launch.ts encodes it): the magic, then the byte lengths of
# the script, the input's JSON, stdin and the files, -1 for a field the caller did not send.
REQUEST_MAGIC = b"PYSANDBOX-REQUEST"
MAX_SIGNATURE_CHARS = 1024  # the server accepts a signature of up to 4096
MAX_MESSAGE_CHARS, MAX_EXCEPTION_CHARS = 16_384, 1000  # it accepts 65,536 and 1,024
MAX_TRACEBACK_CHARS = 65_536
EMPTY_STDIN_HINT = "stdin is empty: send it in the request's \"stdin\" field"


class NotJson(Exception):
    pass


class Request:
    """What the caller sent: the script's source; `args`, main()'s arguments (the input, when it
    was sent); `stdin`, bytes or None; `files`, a list of (relative path, bytes)."""

    def __init__(self, source, args, stdin, files, cpu_seconds=None):
        self.source, self.args, self.stdin, self.files = source, args, stdin, files
        self.cpu_seconds = cpu_seconds  # a warm run's own CPU limit (a cold run's is an argument)


class _JsonContext:
    """What _json's scanner needs (json.JSONDecoder's attributes), without importing json."""
    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int

    def __init__(self):
        self.memo = {}  # the C scanner keeps its key cache here

    @staticmethod
    def parse_constant(name):
        raise ValueError(f"{name} is not JSON")


def parse_request(data):
    """The request from its bytes: `PYSANDBOX-REQUEST <script> <input> <stdin> <files>[ <cpu>]\n`
    (byte lengths, -1 for absent; then, for a warm run, its CPU seconds), then the four parts.
    The server wrote it (src/backends/launch.ts); a malformed one is its bug."""
    header, _, body = data.partition(b"\n")
    magic, *lengths = header.split(b" ")
    if magic != REQUEST_MAGIC or len(lengths) not in (4, 5):
        raise ValueError("malformed request")
    cpu_seconds = int(lengths.pop()) if len(lengths) == 5 else None
    parts, at = [], 0
    body = memoryview(body)
    for length in map(int, lengths):
        parts.append(None if length < 0 else body[at:at + length])
        at += max(length, 0)
    script, input_json, stdin, files = parts
    args = ()
    if input_json is not None:
        value, _ = _json.make_scanner(_JsonContext())(str(input_json, "utf-8"), 0)
        args = (value,)
    return Request(str(script, "utf-8"), args, None if stdin is None else bytes(stdin),
                   [] if files is None else parse_files(files), cpu_seconds)


def parse_files(data):
    """The files part: for each file `<path bytes> <content bytes>\n`, the path, the content."""
    files, at = [], 0
    while at < len(data):
        end = bytes(data[at:at + 64]).index(b"\n") + at
        path_length, content_length = map(int, bytes(data[at:end]).split(b" "))
        at = end + 1
        path = str(data[at:at + path_length], "utf-8")
        at += path_length
        files.append((path, data[at:at + content_length]))
        at += content_length
    return files


def read_request():
    chunks = []
    while True:
        chunk = os.read(SCRIPT_FD, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(SCRIPT_FD)
    return parse_request(b"".join(chunks))


def attach_stdin(stdin):
    """The caller's stdin as fd 0: a memory file (charged to the run's memory like any of its
    pages), read like a file. Without it, fd 0 stays /dev/null: input() meets EOF at once."""
    if stdin is None:
        return
    fd = os.memfd_create("stdin", 0)
    workdir.write_all(fd, stdin)
    os.lseek(fd, 0, os.SEEK_SET)
    os.dup2(fd, 0)
    os.close(fd)


def open_channel():
    # Move the channel off fd 3 so a script that writes to fd 3 hits a closed descriptor.
    fd = os.dup(RESULT_FD)
    os.close(RESULT_FD)
    return fd


def to_json(value, parts):
    """Strict JSON of a value check_json accepted (or of the harness's own messages)."""
    if value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif type(value) is str:
        parts.append(_json.encode_basestring(value))
    elif type(value) is int:
        parts.append(int.__repr__(value))
    elif type(value) is float:
        parts.append(float.__repr__(value))
    elif type(value) is dict:
        parts.append("{")
        for index, (key, item) in enumerate(value.items()):
            parts.append("," if index else "")
            parts.append(_json.encode_basestring(key))
            parts.append(":")
            to_json(item, parts)
        parts.append("}")
    else:  # list or tuple
        parts.append("[")
        for index, item in enumerate(value):
            parts.append("," if index else "")
            to_json(item, parts)
        parts.append("]")
    return parts


def send(fd, message, limit, returned=None):
    """The message; `returned`, the returned files' entries, joins a success within its own limits:
    `limit` bounds the message without them (main()'s value)."""
    workdir.write_all(fd, encode(message, limit, returned))


def encode(message, limit, returned=None):
    """send()'s bytes (a session's kernel frames them itself: harness/session.py)."""
    data = "".join(to_json(message, [])).encode("utf-8")
    if len(data) > limit:
        too_large = failure(RESULT_TOO_LARGE, f"main() returned {len(data)} bytes of JSON; the limit is {limit}")
        data = "".join(to_json(too_large, [])).encode()
    elif returned:
        data = data[:-1] + b"," + "".join(to_json(returned, [])).encode("utf-8")[1:]
    return data


def type_name(value):
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def json_hint(item):
    """How to make a common value JSON, or "" (the data-science values scripts return most)."""
    kind, name = type(item).__module__.partition(".")[0], type(item).__name__
    if kind == "numpy":
        return "; return x.tolist()" if name == "ndarray" else (
            "; convert it with x.item() (or int(x), float(x), bool(x))")
    if kind == "pandas":
        hints = {"DataFrame": '; return df.to_dict("records") (or df.to_dict("list"))',
                 "Series": "; return s.tolist() or s.to_dict()"}
        return hints.get(name, "; return x.isoformat()" if hasattr(item, "isoformat") else "")
    if isinstance(item, (set, frozenset)):
        return "; return sorted(x) or list(x)"
    if isinstance(item, (bytes, bytearray)):
        return "; return x.decode() for text, or write the bytes to a file under output/"
    if hasattr(item, "isoformat"):
        return "; return x.isoformat()"
    return "; return str(x) or float(x)" if name == "Decimal" else ""


def check_json(value):
    """Raise NotJson naming the first value that is not strict JSON and where it sits."""
    stack = [(value, "result", 0)]
    on_path = set()
    exits = []
    while stack:
        item, path, depth = stack.pop()
        if item is exits:
            on_path.discard(path)
            continue
        if item is None or (isinstance(item, (bool, str)) and type(item) in (bool, str)):
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise NotJson(f"{path} is a str with a lone surrogate, which is not valid Unicode") from None
            continue
        if type(item) is int:
            if abs(item) > MAX_SAFE_INT:
                raise NotJson(f"{path} is an int beyond ±(2**53 - 1), which JSON readers cannot "
                              "hold exactly; return it as a str")
            continue
        if type(item) is float:
            if not math.isfinite(item):
                raise NotJson(f"{path} is {item!r}, which is not JSON (NaN and Infinity are not numbers in JSON); "
                              "return None for a missing value")
            continue
        if type(item) in (dict, list, tuple):
            if depth >= MAX_DEPTH:
                raise NotJson(f"{path} is nested deeper than {MAX_DEPTH} levels")
            if id(item) in on_path:
                raise NotJson(f"{path} contains itself")
            on_path.add(id(item))
            stack.append((exits, id(item), depth))
            if type(item) is dict:
                for key, sub in item.items():
                    if type(key) is not str:
                        raise NotJson(f"{path} has a key {key!r} of type {type_name(key)}; JSON keys are str")
                    stack.append((sub, f"{path}[{key!r}]", depth + 1))
            else:
                for index, sub in enumerate(item):
                    stack.append((sub, f"{path}[{index}]", depth + 1))
            continue
        raise NotJson(f"{path} is a {type_name(item)}, which is not JSON{json_hint(item)}")


def user_traceback(exc, source):
    """The traceback of the user's frames only: the harness's frames are dropped."""
    import linecache
    import traceback
    # Tracebacks can show the user's source lines.
    linecache.cache[FILENAME] = (len(source), None, source.splitlines(True), FILENAME)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.StackSummary.from_list(frames).format()  # collapses repeated lines
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def failure(code, message, **extra):
    return {"ok": False, "code": code, "message": message, **extra}


def valid_text(text, limit):
    """At most `limit` characters of valid UTF-8 (a lone surrogate shown as \\udNNN): the
    server's channel schema bounds a message to 64 KiB and an exception's name to 1 KiB."""
    if len(text) > limit:
        text = f"{text[:limit - 40]}... ({len(text)} characters in all)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def raised(exc, request):
    try:
        text = str(exc)
    except BaseException:  # an exception whose str() raises: its type says what it can
        text = ""
    name = valid_text(type_name(exc), MAX_EXCEPTION_CHARS)
    message = f"{name}: {text}" if text else name
    if isinstance(exc, EOFError) and request.stdin is None:
        message += f" ({EMPTY_STDIN_HINT})"
    return failure(MAIN_RAISED, valid_text(message, MAX_MESSAGE_CHARS), exception=name,
                   traceback=valid_text(user_traceback(exc, request.source), MAX_TRACEBACK_CHARS))


def signature_failure(main, exc):
    """main cannot take the input as its one argument."""
    import inspect
    try:
        shown = f"main{inspect.signature(main)}"[:MAX_SIGNATURE_CHARS]
    except (TypeError, ValueError):  # a callable without a signature to show
        shown = "main"
    message = f"{shown} cannot be called with the input as its one argument: {exc}"
    return failure(MAIN_SIGNATURE, message, signature=shown)


def run(request):
    source, args = request.source, request.args
    try:
        code = compile(source, FILENAME, "exec", dont_inherit=True)
    except SyntaxError as exc:
        line, column = exc.lineno or 0, exc.offset or 0
        return failure(SYNTAX_ERROR, f"line {line}, column {column}: {exc.msg}",
                       line=line, column=column)
    except ValueError as exc:  # e.g. a null byte in the source
        return failure(SYNTAX_ERROR, str(exc), line=0, column=0)

    module = types.ModuleType(MODULE_NAME)
    sys.modules[MODULE_NAME] = module
    # Room to report a MemoryError in, freed before the report is made. An address-space
    # reservation: a MemoryError comes from RLIMIT_AS (a cgroup kills instead), and a bytearray
    # would cost a zeroed page per 4 KiB of it, milliseconds per run.
    reserve = mmap.mmap(-1, RESERVE_BYTES, flags=mmap.MAP_PRIVATE)
    try:
        exec(code, module.__dict__)
        main = module.__dict__.get("main", None)
        if "main" not in module.__dict__:
            return failure(MISSING_MAIN, "the script defines no function main()")
        if not callable(main):
            return failure(MAIN_NOT_CALLABLE, f"main is a {type_name(main)}, not a function")
        try:
            called = main(*args)
        except TypeError as exc:
            # With the input sent, raised by the call itself (no frame of main's own below this
            # one): main cannot take it. A TypeError from inside main is the script's, as any
            # error; without input, a main() that needs arguments raises as it always did.
            if args and exc.__traceback__ is not None and exc.__traceback__.tb_next is None:
                return signature_failure(main, exc)
            raise
        if getattr(getattr(main, "__code__", None), "co_flags", 0) & CO_COROUTINE:
            import asyncio
            result = asyncio.run(called)
        else:
            result = called
    except MemoryError as exc:
        # The script's memory is still held through the traceback's frames: let it go first.
        exc.__traceback__ = None
        del exc
        reserve.close()
        return failure(MEMORY_LIMIT_EXCEEDED, "the script ran out of memory (MemoryError)")
    except BaseException as exc:  # SystemExit and KeyboardInterrupt are the script's too
        return raised(exc, request)
    try:
        check_json(result)
    except NotJson as exc:
        return failure(RESULT_NOT_JSON, f"main() returned something that is not JSON: {exc}")
    return {"ok": True, "result": result}


def cpu_exceeded(channel, cpu_seconds, result_limit):
    message = failure(TIME_LIMIT_EXCEEDED, f"the script used more than {cpu_seconds} s of CPU time")
    send(channel, message, result_limit)
    os._exit(1)


def close_inherited(channel):
    """Close every descriptor but the standard streams and the channel: a launcher that closes
    nothing it inherited (unshare) would hand the script whatever the server was started with."""
    os.closerange(3, channel)
    os.closerange(channel + 1, 1 << 30)


def volunteer_for_oom():
    # Writable only where /proc is (every jail of ours); raising one's own score needs no privilege.
    try:
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
        try:
            os.write(fd, OOM_SCORE_ADJ)
        finally:
            os.close(fd)
    except OSError:
        pass


def prepare(cpu_seconds, result_limit):
    """Offer this process to the OOM killer first, move the result channel off fd 3, set the CPU
    limit; returns the channel."""
    volunteer_for_oom()
    channel = open_channel()
    limit_cpu(channel, cpu_seconds, result_limit)
    return channel


def limit_cpu(channel, cpu_seconds, result_limit):
    # The sandbox sets the hard CPU limit one second above ours: the soft limit sends SIGXCPU,
    # which the server tells apart from the SIGKILL of a memory cgroup.
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY or cpu_seconds < hard:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, hard))
    # The script runs as pid 1 of its namespace, where a signal's default action does not
    # apply: report the CPU limit ourselves. A script that blocks this still dies at the hard limit.
    _signal.signal(_signal.SIGXCPU, lambda *_: cpu_exceeded(channel, cpu_seconds, result_limit))


def collect(message, files_limits, reserve, started_ns, changed_since_ns=None):
    """The returned files' entries for a success; a failure instead when they are over a limit,
    or when what the script left behind (a replaced function, a broken object) made collecting
    them raise. `changed_since_ns`: only files changed since then (a session's call)."""
    reserve.release()
    if not message["ok"]:
        return message, None
    try:
        return message, workdir.returned_files(*files_limits, started_ns, changed_since_ns)
    except workdir.TooMuchOutput as exc:
        return failure(OUTPUT_TOO_LARGE, str(exc), outputFiles=exc.count, outputBytes=exc.size), None
    except MemoryError:
        return failure(MEMORY_LIMIT_EXCEEDED, "the run ran out of memory while its files were read"), None
    except BaseException as exc:
        text = f"collecting the files under {workdir.OUTPUT_DIR}/ after main() returned raised {workdir.described(exc)}"
        return failure(MAIN_RAISED, text, exception=valid_text(type_name(exc), MAX_EXCEPTION_CHARS)), None


def set_up(site_packages):
    """What a run needs besides its request: the sandbox's packages, output/, the figure watch, the
    descriptors held back to collect its files (returned, a workdir.Reserve)."""
    if site_packages not in sys.path:
        sys.path.append(site_packages)
    sys.argv = [FILENAME]
    workdir.make_output_dir()
    workdir.watch_figures(site_packages)
    return workdir.Reserve()


def conclude(request, channel, result_limit, files_limits, site_packages, reserve=None):
    """Place the caller's files, run the script, send its message and the files it returns on the
    channel, and end the process (never returns). `files_limits`: (files, bytes) returned at most.
    `reserve`: set_up() was done before the request came (a warm run's child)."""
    owner, started_ns = GETPID(), time.time_ns()
    workdir.place_files(request.files)
    request.files = None
    if reserve is None:
        reserve = set_up(site_packages)
    message = run(request)
    if GETPID() != owner:  # a process the script forked came back from main(): it reports nothing
        os._exit(0)
    message, returned = collect(message, files_limits, reserve, started_ns)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # the script may have closed or replaced them
            pass
    sys.setrecursionlimit(max(sys.getrecursionlimit(), MAX_DEPTH * 2 + 100))  # the script may have lowered it
    try:
        send(channel, message, result_limit, returned)
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError) as exc:
        send(channel, failure(RESULT_NOT_JSON, f"main() returned something that is not JSON: {exc}"), result_limit)
    except MemoryError:  # what main() returned and its files do not fit in memory once encoded
        message = returned = None
        send(channel, failure(MEMORY_LIMIT_EXCEEDED, "the run ran out of memory while its reply was encoded"),
             result_limit)
    # The run is over: closing every stream tells a warm jail so before this process's teardown,
    # which costs milliseconds with numpy and pandas mapped.
    for fd in (channel, 1, 2):
        try:
            os.close(fd)
        except OSError:
            pass
    # Skip interpreter teardown: no atexit hooks or lingering threads of the script's run after
    # the result is final.
    os._exit(0)


def entry():
    args = sys.argv[1:]
    if args[0] == "--seccomp":  # a launcher without a filter of its own (unshare)
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import seccomp
        del sys.path[0]
        seccomp.install()
        args = args[1:]
    cpu_seconds, result_limit, files_limits = int(args[0]), int(args[1]), (int(args[2]), int(args[3]))
    site_packages = args[4] if len(args) > 4 else SANDBOX_SITE_PACKAGES
    channel = prepare(cpu_seconds, result_limit)
    request = read_request()
    close_inherited(channel)
    attach_stdin(request.stdin)
    conclude(request, channel, result_limit, files_limits, site_packages)


if __name__ == "__main__":
    entry()
