"""The run's working directory, inside the sandbox: the caller's files placed in it before the
script runs, and what comes back after main() has returned: the regular files under output/ and
the figures still open, within the limits. Everything here runs as the run's own user, on names
the script chose: nothing is followed, nothing is read past the size it had when opened.
"""

import binascii
import os
import stat
import sys

# The directory (in the working directory) whose regular files come back, and the rules for their
# names, as the server checks them (src/files.ts).
OUTPUT_DIR = "output"
FIGURES_DIR = "figures"
MAX_PATH_BYTES = 1024
MAX_NAME_BYTES = 255
MAX_PATH_DEPTH = 32
# Bytes that make a file base64 rather than text: the C0 controls but tab, newline and carriage
# return, and DEL (each would be escaped as six bytes of JSON).
CONTROL_BYTES = bytes([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
# matplotlib's font cache, built at install beside the sandbox's packages (Makefile).
FONT_CACHE_DIR = "matplotlib-cache"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_REASON_CHARS = 512  # of a script's own words in a reason (the server takes 1024)
# Descriptors set aside before the script runs and given back to collect its files: a script
# that leaves every descriptor open would otherwise leave the collection none.
RESERVED_FDS = 8
UNCHANGED_MARGIN_NS = 1_000_000_000
# Characters no name may hold: C0 and C1 controls, DEL, and the bidirectional controls that make
# a name display as another (src/files.ts refuses the same).
BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# Two-byte UTF-8 of the C1 controls: text holding one comes back as base64, as a C0 control does.
C1_BYTES = tuple(bytes((0xC2, c)) for c in range(0x80, 0xA0))


class TooMuchOutput(Exception):
    """More files or bytes under output/ than the limits: `count` and `size` as far as counted."""

    def __init__(self, message, count, size):
        super().__init__(message)
        self.count, self.size = count, size


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def place_files(files):
    """The caller's files at their paths in the working directory, before the script runs. The
    server checked every path (relative, normalised, no collisions) and that they fit in /tmp."""
    for path, content in files:
        directory = path.rpartition("/")[0]
        if directory:
            os.makedirs(directory, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            write_all(fd, content)
        finally:
            os.close(fd)


def replace_files(files):
    """A session's call: the caller's files at their paths in the working directory, replacing
    files of earlier calls (O_TRUNC). Each directory is opened relative to its parent with
    O_NOFOLLOW and the file itself too, so no link the session planted is ever followed; a FIFO
    or device in the way is refused, not opened for writing. Raises OSError naming the path."""
    for path, content in files:
        *directories, name = path.split("/")
        fd = os.open(".", DIR_FLAGS)
        try:
            for directory in directories:
                try:
                    os.mkdir(directory, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
                child = os.open(directory, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
            flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
            file = os.open(name, flags, 0o644, dir_fd=fd)
            try:
                if not stat.S_ISREG(os.fstat(file).st_mode):
                    raise OSError(f"{path} is not a regular file")
                os.ftruncate(file, 0)
                write_all(file, content)
            finally:
                os.close(file)
        except OSError as exc:
            raise OSError(f"the file {path} could not be placed: {described(exc)}") from None
        finally:
            os.close(fd)


def make_output_dir():
    """output/, for the files to return (a warm jail's zygote made it already)."""
    if not os.path.isdir(OUTPUT_DIR):
        os.mkdir(OUTPUT_DIR)


def link_font_cache(cache):
    """matplotlib's configuration directory, holding the font cache built at install, so a run's
    first chart does not scan fonts. matplotlib wants the directory writable: a directory of
    links, made when matplotlib is first imported (so no other run sees it)."""
    config = os.environ.get("MPLCONFIGDIR")
    if config and not os.path.lexists(config) and os.path.isdir(cache):
        os.mkdir(config)
        for name in os.listdir(cache):
            os.symlink(os.path.join(cache, name), os.path.join(config, name))


def valid_name(name):
    """None, or why a name cannot travel as a returned path (the server's rules, src/files.ts)."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    if len(encoded) > MAX_NAME_BYTES:
        return f"its name is longer than {MAX_NAME_BYTES} bytes"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in BIDI for c in name):
        return "its name holds control characters"
    return None


def shown(text):
    """Text fit for the channel and a terminal: valid UTF-8 (bytes that are not shown as \\xNN),
    controls shown as \\xNN or \\uNNNN, whatever a name's bytes or a script's words hold."""
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name makes
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)


def described(exc):
    """An exception as `Type: words`, bounded and shown, even one whose str() raises."""
    try:
        words = f"{type(exc).__name__}: {exc}"
    except BaseException:
        words = type(exc).__name__
    return shown(words[:MAX_REASON_CHARS])


class Reserve:
    """Descriptors held while the script runs, released to collect its files."""

    def __init__(self):
        self.fds = [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC) for _ in range(RESERVED_FDS)]

    def release(self):
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:  # the script closed it: its own loss
                pass
        self.fds = []


def kind_of(mode):
    for test, kind in ((stat.S_ISLNK, "a symbolic link (not followed)"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


class Returned:
    """The files of one run being returned, within the limits: `files` and `left_out`, entries
    ready for the channel; `count` and `size`, every file seen (read or not) and its bytes."""

    def __init__(self, max_files, max_bytes):
        self.max_files, self.max_bytes = max_files, max_bytes
        self.files, self.left_out = [], []
        self.paths, self.directories = set(), set()  # returned so far, and their parents
        self.count = self.size = 0
        self.changed_since_ns = None  # a session's call: only entries changed since (None: all)

    def over(self):
        return self.count > self.max_files or self.size > self.max_bytes

    def leave_out(self, path, reason):
        self.count += 1
        if not self.over():
            self.left_out.append({"path": shown(path), "reason": reason})

    def take(self, path):
        self.paths.add(path)
        parts = path.split("/")
        self.directories.update("/".join(parts[:depth]) for depth in range(1, len(parts)))

    def free(self, path):
        """Whether a path of ours (a figure) clashes with nothing returned: not a path, not a
        directory of one, not under one."""
        parts = path.split("/")
        parents = ("/".join(parts[:depth]) for depth in range(1, len(parts)))
        return path not in self.paths and path not in self.directories and not any(p in self.paths for p in parents)

    def add(self, path, content):
        self.count += 1
        self.size += len(content)
        self.take(path)
        if self.over():
            return
        if len(content.translate(None, CONTROL_BYTES)) == len(content) and not any(c in content for c in C1_BYTES):
            try:
                self.files.append({"path": path, "encoding": "utf8", "content": str(content, "utf-8")})
                return
            except UnicodeDecodeError:
                pass
        text = binascii.b2a_base64(content, newline=False).decode("ascii")
        self.files.append({"path": path, "encoding": "base64", "content": text})

    def read_file(self, fd, name, path):
        """A regular file with one name, read without following anything; else left out."""
        try:
            file = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY, dir_fd=fd)
        except OSError as exc:
            return self.leave_out(path, f"not readable ({exc.strerror})")
        try:
            info = os.fstat(file)
            if not stat.S_ISREG(info.st_mode):  # replaced since it was listed
                return self.leave_out(path, kind_of(info.st_mode))
            if info.st_nlink != 1:
                return self.leave_out(path, f"a hard link (the file has {info.st_nlink} names)")
            if self.over() or self.size + info.st_size > self.max_bytes:
                self.count += 1  # counted, not read: the run is refused anyway
                self.size += info.st_size
                return None
            # What a process left behind may still write: the size when it was opened, no more.
            chunks, left = [], info.st_size
            while left > 0:
                chunk = os.read(file, min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return self.add(path, b"".join(chunks))
        finally:
            os.close(file)

    def walk(self, root, unchanged_before_ns):
        """Every entry under root, depth first in name order, through directory descriptors and
        names relative to them: nothing the script made can redirect the walk. Only the current
        directory and its ancestors are open (at most MAX_PATH_DEPTH + 1 descriptors). A root
        whose entries have not changed since `unchanged_before_ns` (a warm jail's output/, emptied
        before the run) is not listed: listing it would touch its access time."""
        try:
            top = os.open(root, DIR_FLAGS)
        except FileNotFoundError:  # the script removed it: nothing to return
            return
        except OSError as exc:  # e.g. replaced by a link: not followed
            return self.leave_out(".", f"{root}/ is not a directory that can be read ({exc.strerror})")
        if os.fstat(top).st_mtime_ns < unchanged_before_ns:
            os.close(top)
            return
        stack = [(top, "", self.listed(top, "", "."))]  # (descriptor, its path + "/", subdirectories left)
        try:
            while stack and self.count <= self.max_files:
                fd, prefix, subdirectories = stack[-1]
                if not subdirectories:
                    os.close(stack.pop()[0])
                    continue
                name = subdirectories.pop()
                try:
                    child = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    self.leave_out(prefix + name, f"the directory is not readable ({exc.strerror})")
                    continue
                stack.append((child, f"{prefix}{name}/", self.listed(child, prefix + name + "/", prefix + name)))
        finally:
            for fd, _, _ in stack:
                os.close(fd)

    def listed(self, fd, prefix, shown_as):
        """The directory's files read (or left out); its subdirectories' names, last first."""
        try:
            with os.scandir(fd) as listing:
                entries = sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in listing)
        except OSError as exc:
            self.leave_out(shown_as, f"the directory is not readable ({exc.strerror})")
            return []
        subdirectories = []
        for name, is_dir in entries:
            if self.count > self.max_files:
                break
            path = prefix + name
            why = valid_name(name)
            if why is None and (len(path.encode()) > MAX_PATH_BYTES or path.count("/") >= MAX_PATH_DEPTH):
                why = f"its path is longer than {MAX_PATH_BYTES} bytes or {MAX_PATH_DEPTH} levels"
            if why is not None:
                self.leave_out(path, why)
            elif is_dir:
                subdirectories.append(name)
            else:
                self.read_regular(fd, name, path)
        return subdirectories[::-1]

    def changed(self, fd, name):
        """Modified or changed (renamed, linked, its mode set) since changed_since_ns."""
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:  # gone since: read_file says why if it is read
            return True
        return max(info.st_mtime_ns, info.st_ctime_ns) >= self.changed_since_ns

    def read_regular(self, fd, name, path):
        try:
            mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
        except OSError as exc:
            return self.leave_out(path, f"not readable ({exc.strerror})")
        if self.changed_since_ns is not None and not self.changed(fd, name):
            return None  # an earlier call of the session left it: returned then
        if not stat.S_ISREG(mode):
            return self.leave_out(path, kind_of(mode))
        return self.read_file(fd, name, path)

    def add_figures(self):
        """Figures still open that the script never saved come back as figures/<number>.png: a
        script that saved or closed its figures gets no duplicates. Each is closed once saved (its
        renderer's memory goes with it); figures past the count limit are counted, not drawn."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return
        import io
        try:
            figures = [(number, pyplot.figure(number)) for number in pyplot.get_fignums()]
        except BaseException as exc:  # the script replaced pyplot or broke it
            return self.leave_out(FIGURES_DIR, f"the open figures could not be listed ({described(exc)})")
        figures = [(number, figure) for number, figure in figures if not getattr(figure, SAVED, False)]
        if self.count + len(figures) > self.max_files:
            self.count += len(figures)
            return
        for position, (number, figure) in enumerate(figures, 1):
            path = self.figure_path(number, position)
            buffer = io.BytesIO()
            try:
                figure.savefig(buffer, format="png")
            except BaseException as exc:  # the script's figure: say why, as for any file left out
                self.take(path)
                self.leave_out(path, f"the figure could not be saved as PNG ({described(exc)})")
                continue
            finally:
                try:
                    pyplot.close(figure)
                except BaseException:
                    pass
            self.add(path, buffer.getvalue())
            if self.over():
                return

    def count_figures(self):
        """Over a limit already: the open figures only counted, for the error's figures."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        try:
            numbers = [] if pyplot is None else pyplot.get_fignums()
            self.count += sum(not getattr(pyplot.figure(number), SAVED, False) for number in numbers)
        except BaseException:  # the script broke pyplot: the limit is exceeded anyway
            pass

    def figure_path(self, number, position):
        """figures/<number>.png, or the next free name: never a returned path or directory."""
        directory = FIGURES_DIR
        for copy in range(2, 10_000):
            if directory not in self.paths:
                break
            directory = f"{FIGURES_DIR}-{copy}"
        name = str(number) if len(str(number)) <= 32 else f"figure-{position}"
        path, copy = f"{directory}/{name}.png", 1
        while not self.free(path):
            copy += 1
            path = f"{directory}/{name}-{copy}.png"
        return path

    def entries(self):
        """The channel's entries (files, leftOut), or TooMuchOutput."""
        if self.over():
            left = (f"more than {self.max_files} files" if self.count > self.max_files
                    else f"{self.count} files of {self.size} bytes")
            raise TooMuchOutput(f"the script left {left} under {OUTPUT_DIR}/ (figures included); the limits are "
                                f"{self.max_files} files (LIMIT_FILES_OUT) and {self.max_bytes} bytes "
                                "(LIMIT_FILES_OUT_BYTES)", self.count, self.size)
        returned = {}
        if self.files:
            returned["files"] = self.files
        if self.left_out:
            returned["leftOut"] = self.left_out
        return returned


SAVED = "_pysandbox_saved"  # set on a figure by its savefig


def mark_saved(figure_class):
    """Figure.savefig, wrapped to mark the figure saved (matplotlib keeps no such record: a saved
    figure is as stale as before)."""
    original = figure_class.savefig

    def savefig(self, *args, **kwargs):
        setattr(self, SAVED, True)
        return original(self, *args, **kwargs)

    savefig.__doc__, savefig.__wrapped__ = original.__doc__, original
    figure_class.savefig = savefig


class FigureWatch:
    """A finder ahead of the path finder: when matplotlib is imported it links the font cache
    (link_font_cache); when matplotlib.figure is, it wraps its Figure.savefig (mark_saved) and
    steps aside. Every import passes through to the other finders."""
    font_cache = ""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "matplotlib":
            link_font_cache(FigureWatch.font_cache)
        if name != "matplotlib.figure":
            return None
        sys.meta_path.remove(FigureWatch)
        spec = next(filter(None, (f.find_spec(name, path, target) for f in sys.meta_path
                                  if hasattr(f, "find_spec"))), None)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            mark_saved(module.Figure)

        spec.loader.exec_module = exec_module
        return spec


def watch_figures(site_packages):
    """FigureWatch in place, unless matplotlib is imported already (a warm run's zygote did)."""
    FigureWatch.font_cache = os.path.join(site_packages, FONT_CACHE_DIR)
    if "matplotlib.figure" not in sys.modules and FigureWatch not in sys.meta_path:
        sys.meta_path.insert(0, FigureWatch)


def returned_files(max_files, max_bytes, run_started_ns, changed_since_ns=None):
    """The files under output/ and the open figures: entries for the channel; TooMuchOutput when
    they are over the limits. output/ is listed unless its entries last changed a second or more
    before the run started (the file system's clock is coarse: a margin, never a file missed).
    With `changed_since_ns` (a session's call, whose output/ holds earlier calls' files) output/
    is always listed (a file rewritten in place leaves its directory's times as they were) and
    only entries modified or changed since then come back."""
    returned = Returned(max_files, max_bytes)
    returned.changed_since_ns = changed_since_ns
    returned.walk(OUTPUT_DIR, run_started_ns - UNCHANGED_MARGIN_NS if changed_since_ns is None else 0)
    if returned.over():
        returned.count_figures()
    else:
        returned.add_figures()
    return returned.entries()
