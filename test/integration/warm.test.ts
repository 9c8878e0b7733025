// Warm sandboxes (docs/warm.md) against a real listening server with nsjail: one slot, so every
// request runs in the same long-lived jail, forked from the same zygote. What one run leaves
// behind must be gone for the next; the zygote must be out of every run's reach; a run that
// exhausts its limits must not break the next.
import t from 'tap'
import { seriesValue } from '../helpers/prometheus.js'
import { HELLO, TEST_LIMITS, externalUrl, get, post, script, startServer, type Target } from '../helpers/server.js'
import { HARASS_SIBLING, harassReachesNextRun, tokenReachesNextRun } from '../helpers/spare.js'

/** Which jail a run ran in, as the run can tell (the zygote itself is invisible to it): its pid
 *  namespace, and whether it is that namespace's pid 1 (a cold run is; a warm run is a child). */
const ZYGOTE = script(`
return [os.readlink("/proc/self/ns/pid"), os.getpid() != 1]`, 'import os')

async function zygote (target: Target): Promise<string> {
  const reply = await post(target, ZYGOTE)
  const [namespace, forked] = reply.body.result as [string, boolean]
  if (!forked) throw new Error(`not a warm run: ${JSON.stringify(reply.body)}`)
  return namespace
}

/** One series of /metrics, e.g. 'pysandbox_warm_runs_total{served="waited"}'. */
async function warmMetric (target: Target, series: string): Promise<number> {
  return seriesValue(await (await fetch(`${target.url}/metrics`)).text(), series) ?? 0
}

/** Waits until no warm sandbox is importing; returns how many are ready. */
async function settled (target: Target): Promise<number> {
  for (let i = 0; i < 600; i++) {
    if (await warmMetric(target, 'pysandbox_warm_sandboxes{state="starting"}') === 0) break
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  return await warmMetric(target, 'pysandbox_warm_sandboxes{state="ready"}')
}

const PLANT = script(`
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
for d in ("/tmp", "/dev/shm", "/tmp/output"):
    os.makedirs(f"{d}/planted/deeper", exist_ok=True)
    with open(f"{d}/planted/deeper/file", "w") as f:
        f.write("left behind")
    with open(f"{d}/planted-file", "w") as f:
        f.write("left behind")
    os.chmod(f"{d}/planted/deeper", 0)  # the clean-up must cope with an unreadable directory
# A daemon: double fork, a process group of its own (no session: setsid is refused), SIGHUP ignored.
if os.fork() == 0:
    os.setpgid(0, 0)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", "planted-daemon"])
    os._exit(0)
os.wait()
# The writable directories themselves: extended attributes, times, modes, new entries in /dev.
# They belong to the zygote's uid: all but touching the times are refused, and tried anyway.
for change in (lambda: os.setxattr("/tmp", "user.planted", b"data for the next run"),
               lambda: os.rmdir("/tmp/output"), lambda: os.chmod("/tmp/output", 0o777),
               lambda: os.utime("/tmp/output", (1, 1)),
               lambda: os.utime("/tmp", (1, 1)), lambda: os.utime("/dev/shm", None),
               lambda: os.chmod("/dev", 0o777), lambda: os.chmod("/dev/shm", 0),
               lambda: os.mkdir("/dev/planted")):
    try:
        change()
    except OSError:
        pass
# SysV IPC objects of all three kinds.
ipc = [libc.shmget(0x5eed, 4096, 0o1666), libc.semget(0x5eed, 1, 0o1666), libc.msgget(0x5eed, 0o1666)]
# The interpreter's state.
os.environ["PLANTED"] = "1"
sys.modules["planted_module"] = types.ModuleType("planted_module")
builtins.planted = True
builtins.len = lambda x: 42
json.dumps = lambda *a, **k: "hijacked"
sys.path.insert(0, "/tmp/planted")
os.umask(0o777)
os.chdir("/")
signal.signal(signal.SIGTERM, signal.SIG_IGN)
return {"ipc": [i >= 0 for i in ipc], "tmp": sorted(os.listdir("/tmp"))}`, 'import builtins, json, os, signal, sys, types')

const INSPECT = script(`
def procs(marker):
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if marker in f.read():
                        found.append(p)
            except OSError:
                pass
    return found
def ipc(kind):
    with open(f"/proc/sysvipc/{kind}") as f:
        return len(f.readlines()) - 1
return {
    "tmp": os.listdir("/tmp"), "shm": os.listdir("/dev/shm"), "output": os.listdir("/tmp/output"),
    "dev": sorted(os.listdir("/dev")), "modes": [oct(os.stat(d).st_mode) for d in ("/tmp", "/dev", "/dev/shm", "/tmp/output")],
    "xattr": os.listxattr("/tmp"), "mtime": os.stat("/tmp").st_mtime > 1,
    "daemon": procs(b"planted-daemon"),
    "ipc": [ipc("shm"), ipc("sem"), ipc("msg")],
    "environ": "PLANTED" in os.environ,
    "module": "planted_module" in sys.modules,
    "builtins": hasattr(builtins, "planted") or len([1, 2]) != 2,
    "json": json.dumps({"a": 1}),
    "path": "/tmp/planted" in sys.path,
    "umask": os.umask(0o022), "cwd": os.getcwd(),
    "sigterm": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
    "pandas": int(pandas.Series([1, 2, 3]).sum()),
}`, 'import builtins, json, os, signal, sys\nimport pandas')

const CLEAN = {
  tmp: ['output'],
  shm: [],
  output: [],
  dev: ['null', 'random', 'shm', 'urandom', 'zero'],
  modes: ['0o41777', '0o40755', '0o41777', '0o41777'],
  xattr: [],
  mtime: true,
  daemon: [],
  ipc: [0, 0, 0],
  environ: false,
  module: false,
  builtins: false,
  json: '{"a": 1}',
  path: false,
  umask: 0o022,
  cwd: '/tmp',
  sigterm: true,
  pandas: 6
}

if (externalUrl !== undefined) {
  t.pass('skipped: needs a server of its own with one warm slot')
} else {
  let target: Target
  t.before(async () => { target = await startServer({ SANDBOX_BACKEND: 'nsjail', WARM_SANDBOXES: 'true', CONCURRENCY: '1', WARM_RECYCLE_RUNS: '1000' }) })
  t.teardown(async () => { await target.close() })

  t.test('/readyz reports the warm pool and its memory', async t => {
    const reply = await get(target, '/readyz')
    const features = reply.body.probes.at(-1).features
    t.equal(features.warm, 'zygote')
    t.equal(features.zygotes, 1)
    t.ok(features.zygoteMemoryMiB > 0 && features.zygoteMemoryMiB < 256, `zygote ${String(features.zygoteMemoryMiB)} MiB`)
    // One slot: its jail (the run's limit and the zygote's allowance) and a successor's allowance.
    const allowance = features.warmJailMemoryMiB - Number(TEST_LIMITS.LIMIT_MEMORY_MB)
    t.ok(allowance > features.zygoteAnonMemoryMiB, `allowance ${String(allowance)} MiB covers the zygote`)
    t.equal(features.warmPoolMemoryMiB, features.warmJailMemoryMiB + allowance)
  })

  t.test('a run that leaves nothing behind is not cleaned up after: the next run is the next fork (pid + 1)', async t => {
    // The clean-up is a process of its own: had it run, the next run's pid would be one further.
    // Listing an unchanged output/ (a run's own harness collects its files) once touched the
    // directory's access time, and every run was cleaned up after: hello took twice as long.
    await post(target, HELLO) // a jail's first run is cleaned up after once (something of its start-up touches /tmp)
    const pids: number[] = []
    for (let i = 0; i < 4; i++) pids.push((await post(target, 'import os\ndef main():\n    return os.getpid()\n')).body.result as number)
    t.same(pids.slice(1).map((pid, i) => pid - (pids[i] ?? 0)), [1, 1, 1], `pids ${pids.join(', ')}`)
    const wrote = (await post(target, 'import os\ndef main():\n    open("output/x", "w").close()\n    return os.getpid()\n')).body.result as number
    const after = (await post(target, 'import os\ndef main():\n    return os.getpid()\n')).body.result as number
    t.equal(after - wrote, 2, 'allow: a run that left a file is cleaned up after (one process more)')
  })

  t.test('what one run plants, the next run in the same slot does not see', async t => {
    const first = await zygote(target)
    const planted = await post(target, PLANT)
    t.equal(planted.status, 200, JSON.stringify(planted.body).slice(0, 500))
    t.same(planted.body.result, { ipc: [true, true, true], tmp: ['output', 'planted', 'planted-file'] }, 'the run could plant')
    const seen = await post(target, INSPECT)
    t.equal(seen.status, 200, JSON.stringify(seen.body).slice(0, 500))
    t.same(seen.body.result, CLEAN)
    t.equal(await zygote(target), first, 'and it ran in the same warm jail (no replacement hid the traces)')
  })

  t.test('kernel objects that outlive their processes do not reach the next run', async t => {
    const reply = await post(target, script(`
import array, ctypes, socket
libc = ctypes.CDLL(None, use_errno=True)
queue = libc.mq_open(b"/planted", os.O_CREAT | os.O_RDWR, 0o600, None)
# An abstract unix socket whose only reference is a message in its own queue: no process holds it.
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(b"\\0planted-socket")
s.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [s.fileno()]))], 0, b"\\0planted-socket")
s.close()
return [queue, ctypes.get_errno()]`, 'import os'))
    t.same(reply.body.result, [-1, 24], 'a POSIX message queue cannot be created (EMFILE)')
    const next = await post(target, script(`
c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
try:
    c.sendto(b"hello", b"\\0planted-socket")
    bound = True
except OSError:
    bound = False
return [bound, "planted-socket" in open("/proc/net/unix").read()]`, 'import socket'))
    t.same(next.body.result, [false, false], 'the socket and its name are gone (collected, or the jail was replaced)')
  })

  t.test('the next run\'s process (the spare, forked and set up ahead of its request) holds no byte of the run before', async t => {
    const { reached, searched } = await tokenReachesNextRun(target, 1)
    t.equal(searched, true, 'allow: the search finds a token the run holds itself')
    t.equal(reached, false, 'deny: what the run before printed and returned is nowhere in the next run\'s memory')
  })

  t.test('a process the run before left cannot reach the next run\'s process (the spare)', async t => {
    t.same((await post(target, HARASS_SIBLING)).body.result, [19, 16], 'allow: within one run, a process lowers another\'s priority and file limit')
    t.equal(await harassReachesNextRun(target, 1), false, 'deny: the next run starts with its own priority and limits')
  })

  t.test('the zygote\'s frames a run inherits hold nothing of the run before (its status, pid, sweep)', async t => {
    await post(target, 'import os\ndef main():\n    os._exit(7)\n') // a status to look for
    const reply = await post(target, script(`
seen = {}
frame = sys._getframe()
while frame is not None:
    if frame.f_code.co_filename.endswith("zygote.py"):
        seen[frame.f_code.co_name] = sorted(frame.f_locals)
    frame = frame.f_back
return seen`, 'import sys'))
    const seen = reply.body.result as Record<string, string[]>
    t.ok('main' in seen && 'serve' in seen, `allow: the run sees the zygote's frames it was forked in: ${Object.keys(seen).join(', ')}`)
    // (fork_child's own pid is 0 in the child: fork's answer to it, nothing of another run.)
    const locals = [...seen.serve ?? [], ...seen.main ?? []]
    t.same(['status', 'reported', 'swept', 'pid', 'cleaner'].filter(name => locals.includes(name)), [], `deny: no local of the run before in serve() or main() (${JSON.stringify(seen)})`)
  })

  t.test('a run cannot reach the zygote', async t => {
    const first = await zygote(target)
    const reply = await post(target, script(`
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def attempt(action):
    try:
        action()
        return "succeeded"
    except OSError as e:
        return e.strerror
def read(path):
    with open(path, "rb") as f:
        f.read(1)
def peek():
    with open("/proc/1/mem", "rb") as f:
        f.seek(0x400000)
        f.read(16)
found = {
    "mem": attempt(peek),
    "environ": attempt(lambda: read("/proc/1/environ")),
    "fd": attempt(lambda: os.listdir("/proc/1/fd")),
    "fd0": attempt(lambda: read("/proc/1/fd/0")),
    "maps": attempt(lambda: read("/proc/1/maps")),
    "root": attempt(lambda: os.listdir("/proc/1/root")),
    "ptrace": libc.ptrace(16, 1, 0, 0),  # PTRACE_ATTACH
    "seize": libc.ptrace(0x4206, 1, 0, 0),  # PTRACE_SEIZE
}
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
buf = ctypes.create_string_buffer(16)
local, remote = iovec(ctypes.addressof(buf), 16), iovec(0x400000, 16)
found["vm_readv"] = libc.process_vm_readv(1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGSTOP, signal.SIGUSR1, signal.SIGSEGV):
    try:
        os.kill(1, sig)
        found[f"signal {sig}"] = "delivered"
    except OSError as e:
        found[f"signal {sig}"] = e.strerror
try:
    os.kill(-1, signal.SIGKILL)  # reaches no one: the zygote (pid 1, another uid) is the only other process
    found["kill-1"] = "delivered"
except ProcessLookupError:
    found["kill-1"] = "no process to signal"
return found`, 'import os, signal'))
    t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 500))
    const found = reply.body.result as Record<string, string | number>
    for (const key of ['mem', 'environ', 'fd', 'fd0', 'maps', 'root']) t.not(found[key], 'succeeded', `/proc/1/${key}: ${String(found[key])}`)
    t.equal(found.ptrace, -1, 'ptrace attach refused')
    t.equal(found.seize, -1, 'ptrace seize refused')
    t.equal(found.vm_readv, -1, 'process_vm_readv refused')
    for (const key of Object.keys(found).filter(k => k.startsWith('signal '))) t.equal(found[key], 'Operation not permitted', `${key} to pid 1 refused`)
    t.equal(await zygote(target), first, 'signals to pid 1 (even SIGKILL) and kill(-1) leave the zygote alive')
    t.same((await post(target, HELLO)).body.result, { msg: 'success', value: 42 })
  })

  t.test('a tree too deep or too long for a recursive walk is removed, and the jail kept', async t => {
    const first = await zygote(target)
    const reply = await post(target, script(`
depth = 0
try:
    while depth < 3000:
        os.mkdir("d" * 200)
        os.chdir("d" * 200)
        depth += 1
except OSError:
    pass
open("leaf", "w").close()
return depth`, 'import os\nos.chdir("/tmp")'))
    t.ok(reply.body.result >= 1200, `${String(reply.body.result)} levels, over 4 KiB of path`)
    const seen = await post(target, INSPECT)
    t.same(seen.body.result, CLEAN, 'the next run finds /tmp empty')
    t.equal(await zygote(target), first, 'in the same warm jail: the clean-up did not fail')
  })

  t.test('a run stopped at the wall time or by its client leaving is ended by the zygote; the jail is kept', async t => {
    const first = await zygote(target)
    const slept = await post(target, 'import time\ndef main():\n    print("before", flush=True)\n    time.sleep(100)\n')
    t.equal(slept.body.code, 'TIME_LIMIT_EXCEEDED')
    t.equal(slept.body.stdout, 'before\n', 'its output until then is kept')
    t.equal(await zygote(target), first, 'the same warm jail serves the next run (no re-import)')
    const leaving = new AbortController()
    const gone = fetch(`${target.url}/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ script: 'import time\ndef main():\n    time.sleep(100)\n' }),
      signal: leaving.signal
    }).catch(() => 'aborted')
    await new Promise(resolve => setTimeout(resolve, 500))
    leaving.abort()
    t.equal(await gone, 'aborted')
    const seen = await post(target, INSPECT)
    t.same(seen.body.result, CLEAN, 'the next run is clean')
    t.equal(await zygote(target), first, 'and served by the same warm jail')
  })

  t.test('a run that exhausts its limits does not break the next', async t => {
    const cases: Array<[string, string, RegExp]> = [
      ['memory', 'def main():\n    block = bytearray(b"x") * (2 * 1024**3)\n    return len(block)\n', /MEMORY_LIMIT_EXCEEDED/],
      ['cpu', 'def main():\n    while True:\n        pass\n', /TIME_LIMIT_EXCEEDED/],
      ['fork bomb', 'import os\ndef main():\n    while True:\n        os.fork()\n', /MAIN_RAISED|TIME_LIMIT_EXCEEDED|CRASHED/],
      ['disk', script('with open("/tmp/fill", "wb") as f:\n    while True:\n        f.write(b"x" * 1048576)'), /MAIN_RAISED/],
      ['open files', script('files = []\nwhile True:\n    files.append(open("/dev/null"))'), /MAIN_RAISED|CRASHED/],
      ['output flood', 'import sys\ndef main():\n    while True:\n        sys.stdout.write("x" * 65536)\n', /TIME_LIMIT_EXCEEDED/],
      ['wall time', 'import time\ndef main():\n    time.sleep(100)\n', /TIME_LIMIT_EXCEEDED/]
    ]
    for (const [name, source, code] of cases) {
      const reply = await post(target, source)
      t.match(reply.body.code, code, `${name}: ${String(reply.body.code)}`)
      const next = await post(target, INSPECT)
      t.same(next.body.result, CLEAN, `after ${name}, the next run is clean and correct`)
    }
  })

  t.test('a zygote is recycled after WARM_RECYCLE_RUNS runs; its successor is ready by then', async t => {
    const small = await startServer({ SANDBOX_BACKEND: 'nsjail', WARM_SANDBOXES: 'true', CONCURRENCY: '1', WARM_RECYCLE_RUNS: '4' })
    t.teardown(small.close)
    const first = await zygote(small)
    const waitedAtFirst = await warmMetric(small, 'pysandbox_warm_runs_total{served="waited"}')
    t.equal(await zygote(small), first, 'the second run shares the zygote')
    // Half its runs served: the successor is importing; it is ready long before the recycling.
    t.equal(await settled(small), 2, 'the serving zygote and its successor, both ready')
    t.equal(await zygote(small), first, 'the third run shares the zygote')
    t.equal(await zygote(small), first, 'the fourth too')
    const fifth = await zygote(small)
    t.not(fifth, first, 'the fifth has a fresh one')
    t.equal(await warmMetric(small, 'pysandbox_warm_runs_total{served="waited"}'), waitedAtFirst, 'no run waited for an import')
  })

  t.test('a zygote serves many more runs than it may hold files open (none of its descriptors leak)', async t => {
    const small = await startServer({ SANDBOX_BACKEND: 'nsjail', WARM_SANDBOXES: 'true', CONCURRENCY: '1', WARM_RECYCLE_RUNS: '1000', LIMIT_OPEN_FILES: '32' })
    t.teardown(small.close)
    const starts = new Set<string>()
    for (let i = 0; i < 24; i++) starts.add(await zygote(small)) // three pipes a run: 72 descriptors if they leaked
    t.equal(starts.size, 1, 'one zygote served every run')
  })
}
