// The isolation guarantees as deny/allow pairs, shared by the sandbox suites (every deny must
// hold) and the sabotage suite (against `direct`, every non-destructive deny must be breached,
// which proves the test can fail). Each deny returns whether the attack got through.
import { randomUUID } from 'node:crypto'
import { post, script, type Target } from './server.js'
import { SERVER_SECRET } from './server.js'
import { TEST_LIMITS } from './server.js'

export interface Attempt {
  breached: boolean
  evidence: string
}

export interface Guarantee {
  name: string
  /** Harmless outside a sandbox, so it may run against `direct` (no bombs, no kill(-1)). */
  sabotageSafe: boolean
  deny: (target: Target) => Promise<Attempt>
  /** A deployment without a memory cgroup cannot hold it: there /readyz must say so instead
   *  (`memoryBound` "per process", the image's RLIMIT_AS rung). */
  needsRunMemoryBound?: boolean
  /** The legitimate twin: what must keep working. */
  allow: (target: Target) => Promise<boolean>
}

async function attempt (target: Target, source: string): Promise<Attempt> {
  const reply = await post(target, source)
  if (reply.status !== 200) throw new Error(`attack script failed: ${JSON.stringify(reply.body)}`)
  return reply.body.result as Attempt
}

async function works (target: Target, source: string): Promise<boolean> {
  const reply = await post(target, source)
  return reply.status === 200 && reply.body.result === true
}

/** The memory limit of the servers under test, which no run may get past in total. */
const MEMORY_LIMIT_MIB = Number(TEST_LIMITS.LIMIT_MEMORY_MB)

/** A memory attack is denied when the run is stopped for memory, or what it held stayed under
 *  the limit (a memory cgroup's OOM killer may take one of its processes and let the rest go on). */
async function memoryAttempt (target: Target, source: string): Promise<Attempt> {
  const reply = await post(target, source)
  if (reply.status === 422 && reply.body.code === 'MEMORY_LIMIT_EXCEEDED') {
    return { breached: false, evidence: `the run ended MEMORY_LIMIT_EXCEEDED: ${String(reply.body.message)}` }
  }
  if (reply.status !== 200) throw new Error(`attack script failed: ${JSON.stringify(reply.body).slice(0, 600)}`)
  return reply.body.result as Attempt
}

/** `children` forked processes that each write `shareMiB` and hold it: how many held at once.
 *  Each share stays under RLIMIT_AS, so only a bound on the whole run can stop them together. */
function heldTogether (children: number, shareMiB: number): string {
  return script(`
ready_r, ready_w = os.pipe()
gate_r, gate_w = os.pipe()
pids = []
for _ in range(${children}):
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(gate_w)
        try:
            block = bytearray(b"x") * ${shareMiB * 1024 * 1024}
            os.write(ready_w, os.getpid().to_bytes(4, "little"))
        except MemoryError:
            pass
        os.read(gate_r, 1)  # hold it until the parent has counted
        os._exit(0)
    pids.append(pid)
os.close(ready_w)
os.close(gate_r)
holding, ended = set(), set()
def gone(pid):
    if pid not in ended and os.waitpid(pid, os.WNOHANG)[0] == pid:
        ended.add(pid)
    return pid in ended
deadline = time.monotonic() + 2.5
while time.monotonic() < deadline and any(p not in holding and not gone(p) for p in pids):
    if select.select([ready_r], [], [], 0.02)[0]:
        record = os.read(ready_r, 4)
        if len(record) == 4:
            holding.add(int.from_bytes(record, "little"))
# A child the OOM killer ended a moment ago may not have exited yet: let it, then count.
time.sleep(0.3)
together = sum(1 for pid in holding if not gone(pid))
os.close(gate_w)
for pid in pids:
    if pid not in ended:
        os.waitpid(pid, 0)
held = together * ${shareMiB}
return {"breached": held > ${MEMORY_LIMIT_MIB}, "evidence": f"{together} of ${children} children held ${shareMiB} MiB each at once: {held} MiB (limit ${MEMORY_LIMIT_MIB} MiB)"}`, 'import os, select, time')
}

const UNREACHABLE = `
import errno, socket
def route_refused(family, address):
    # UDP connect() only looks up a route: no packet is sent, so this is safe on any host.
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.connect(address)
        return False
    except OSError as e:
        return e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL)
    finally:
        s.close()
`

/** A run's own scheduling, priority and limits, as JSON text (for before/after comparison). */
const ATTRIBUTES_SETUP = 'import ctypes, json, os, resource\nlibc = ctypes.CDLL(None, use_errno=True)'
const ATTRIBUTES = `json.dumps({"limits": [resource.getrlimit(getattr(resource, n)) for n in ("RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_AS", "RLIMIT_STACK", "RLIMIT_CPU")],
                   "nice": os.getpriority(os.PRIO_PROCESS, 0), "affinity": sorted(os.sched_getaffinity(0)),
                   "policy": os.sched_getscheduler(0), "ioprio": libc.syscall(252, 1, 0)})`
/** Every per-process attribute an unprivileged process can try to set on pid 1. */
const CHANGE_PID_1 = `
for change in (lambda: resource.prlimit(1, resource.RLIMIT_FSIZE, (4096, 4096)),
               lambda: resource.prlimit(1, resource.RLIMIT_NOFILE, (32, 32)),
               lambda: resource.prlimit(1, resource.RLIMIT_NPROC, (4, 4)),
               lambda: os.setpriority(os.PRIO_PROCESS, 1, 19),
               lambda: os.sched_setaffinity(1, {min(os.sched_getaffinity(0))}),
               lambda: os.sched_setscheduler(1, os.SCHED_IDLE, os.sched_param(0))):
    try:
        change()
    except OSError:
        pass
libc.syscall(251, 1, 1, 3 << 13)  # ioprio_set(IOPRIO_WHO_PROCESS, 1, IOPRIO_CLASS_IDLE)
return {"breached": False, "evidence": ""}`

export const GUARANTEES: Guarantee[] = [
  {
    name: 'network: the service\'s own port on loopback is unreachable',
    sabotageSafe: true,
    deny: async target => await attempt(target, script(`
s = socket.socket()
s.settimeout(2)
try:
    s.connect(("127.0.0.1", ${target.port}))
    return {"breached": True, "evidence": "connected to the service"}
except OSError as e:
    return {"breached": False, "evidence": str(e)}`, 'import socket')),
    allow: async target => await works(target, script(`
a, b = socket.socketpair()
a.sendall(b"ping")
return b.recv(4) == b"ping"`, 'import socket'))
  },
  {
    name: 'network: metadata servers (by address and by name), public and IPv6 addresses have no route',
    sabotageSafe: true,
    deny: async target => await attempt(target, script(`
targets = [(socket.AF_INET, ("169.254.169.254", 80)), (socket.AF_INET, ("8.8.8.8", 53)),
           (socket.AF_INET6, ("2001:4860:4860::8888", 53, 0, 0)), (socket.AF_INET6, ("fd00:ec2::254", 80, 0, 0)),
           (socket.AF_INET6, ("::1", 80, 0, 0))]
routable = [str(a) for f, a in targets if not route_refused(f, a)]
for name in ("metadata.google.internal", "metadata", "localhost"):
    try:
        routable.append(f"{name} resolves to {socket.getaddrinfo(name, 80)[0][4][0]}")
    except OSError:
        pass
return {"breached": bool(routable), "evidence": ",".join(routable)}`, UNREACHABLE)),
    allow: async target => await works(target, script('return len(socket.gethostname()) > 0', 'import socket'))
  },
  {
    name: 'filesystem: the root is read-only',
    sabotageSafe: true,
    deny: async target => {
      const marker = `pysandbox-ro-${randomUUID()}`
      return await attempt(target, script(`
written = []
for d in ["/", "/usr/lib", "/etc", "/var/tmp"]:
    try:
        with open(os.path.join(d, "${marker}"), "w") as f:
            f.write("x")
        written.append(d)
        os.remove(os.path.join(d, "${marker}"))
    except OSError:
        pass
return {"breached": bool(written), "evidence": ",".join(written)}`, 'import os'))
    },
    allow: async target => await works(target, script(`
with open("/tmp/x", "w") as f:
    f.write("hello")
return open("/tmp/x").read() == "hello"`))
  },
  {
    name: 'filesystem: the server\'s code is invisible',
    sabotageSafe: true,
    deny: async target => await attempt(target, script(`
seen = [p for p in ["${target.serverRoot}/package.json", "${target.serverRoot}/dist", "/proc/1/cwd/package.json"] if os.path.exists(p)]
return {"breached": bool(seen), "evidence": ",".join(seen)}`, 'import os')),
    allow: async target => await works(target, script('import json, os.path\nreturn os.path.exists(json.__file__)'))
  },
  {
    name: 'secrets: the server\'s environment is invisible, even through /proc',
    sabotageSafe: true,
    deny: async target => await attempt(target, script(`
found = ["os.environ"] if any("${SERVER_SECRET}" in v for v in os.environ.values()) else []
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        if b"${SERVER_SECRET}" in open(f"/proc/{pid}/environ", "rb").read():
            found.append(pid)
    except OSError:
        pass
return {"breached": bool(found), "evidence": ",".join(found)}`, 'import os')),
    allow: async target => await works(target, script('return os.environ["LANG"] == "C.UTF-8" and "PATH" in os.environ', 'import os'))
  },
  {
    name: 'privileges: not root, no capabilities',
    sabotageSafe: true,
    deny: async target => await attempt(target, script(`
cap = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff:")][0]
return {"breached": os.getuid() == 0 or int(cap, 16) != 0, "evidence": f"uid={os.getuid()} CapEff={cap}"}`, 'import os')),
    allow: async target => await works(target, script('return isinstance(os.getuid(), int) and os.getpid() > 0', 'import os'))
  },
  {
    name: 'cross-request: /tmp is private to each run',
    sabotageSafe: true,
    deny: async target => {
      const marker = `/tmp/pysandbox-leak-${randomUUID()}`
      await attempt(target, script(`open("${marker}", "w").write("x")\nreturn {"breached": False, "evidence": ""}`))
      return await attempt(target, script(`
seen = os.path.exists("${marker}")
if seen:
    os.remove("${marker}")
return {"breached": seen, "evidence": "${marker}" if seen else ""}`, 'import os'))
    },
    allow: async target => await works(target, script('open("/tmp/a", "w").write("1")\nreturn open("/tmp/a").read() == "1"'))
  },
  {
    name: 'cross-request: a concurrent run\'s processes are invisible',
    sabotageSafe: true,
    deny: async target => {
      const marker = `pysandbox-proc-${randomUUID()}`
      const sleeper = post(target, script(`
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)", "${marker}"])
time.sleep(2.5)
child.kill()
child.wait()
return {"breached": False, "evidence": ""}`, 'import subprocess, sys, time'))
      await new Promise(resolve => setTimeout(resolve, 1200))
      const spy = await attempt(target, script(`
seen = []
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        if b"${marker}" in open(f"/proc/{pid}/cmdline", "rb").read():
            seen.append(pid)
    except OSError:
        pass
return {"breached": bool(seen), "evidence": ",".join(seen)}`, 'import os'))
      await sleeper
      return spy
    },
    allow: async target => await works(target, script('return len([p for p in os.listdir("/proc") if p.isdigit()]) >= 1', 'import os'))
  },
  {
    name: 'filesystem: /etc/shadow, /sys and the host\'s devices are out of reach',
    sabotageSafe: true,
    deny: async target => await attempt(target, script(`
reached = []
for path in ["/etc/shadow", "/etc/passwd", "/sys/kernel", "/dev/mem", "/dev/kmsg", "/root", "/home", "/var/run"]:
    if os.path.exists(path):
        reached.append(path)
return {"breached": bool(reached), "evidence": ",".join(reached)}`, 'import os')),
    allow: async target => await works(target, script('return len(open("/dev/urandom", "rb").read(16)) == 16 and open("/dev/null").read() == ""'))
  },
  {
    name: 'filesystem: no directory on sys.path is writable (no planted sitecustomize)',
    sabotageSafe: true,
    deny: async target => {
      const name = `pysandbox_plant_${randomUUID().replaceAll('-', '')}.py`
      return await attempt(target, script(`
planted = []
for directory in [d for d in sys.path if d and os.path.isdir(d)]:
    path = os.path.join(directory, "${name}")
    try:
        open(path, "w").close()
        planted.append(directory)
        os.remove(path)
    except OSError:
        pass
return {"breached": bool(planted), "evidence": ",".join(planted)}`, 'import os, sys'))
    },
    allow: async target => await works(target, script('open("/tmp/mod_x.py", "w").write("X = 7")\nsys.path.insert(0, "/tmp")\nimport mod_x\nreturn mod_x.X == 7', 'import sys'))
  },
  {
    name: 'network: raw and packet sockets cannot be opened',
    sabotageSafe: true,
    deny: async target => await attempt(target, script(`
opened = []
for family, kind, proto in [(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), (socket.AF_PACKET, socket.SOCK_RAW, 0)]:
    try:
        socket.socket(family, kind, proto).close()
        opened.append(str(family))
    except OSError:
        pass
return {"breached": bool(opened), "evidence": ",".join(opened)}`, 'import socket')),
    allow: async target => await works(target, script('socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()\nreturn True', 'import socket'))
  },
  {
    name: 'cross-request: an abstract unix socket of a concurrent run is unreachable',
    sabotageSafe: true,
    deny: async target => {
      const name = `pysandbox-abstract-${randomUUID()}`
      const listener = post(target, script(`
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind("\\0${name}")
server.listen(1)
time.sleep(2.5)
server.close()
return {"breached": False, "evidence": ""}`, 'import socket, time'))
      await new Promise(resolve => setTimeout(resolve, 1200))
      const spy = await attempt(target, script(`
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    client.connect("\\0${name}")
    return {"breached": True, "evidence": "connected"}
except OSError as e:
    return {"breached": False, "evidence": str(e)}`, 'import socket'))
      await listener
      return spy
    },
    allow: async target => await works(target, script(`
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind("\\0own")
server.listen(1)
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.connect("\\0own")
return True`, 'import socket'))
  },
  {
    name: 'cross-request: SysV shared memory of a concurrent run is invisible',
    sabotageSafe: true,
    deny: async target => {
      const key = 0x5a000000 + Math.floor(Math.random() * 0xffffff)
      const SYSV = `import ctypes
libc = ctypes.CDLL(None, use_errno=True)
KEY = ${key}`
      const owner = post(target, script(`
segment = libc.shmget(KEY, 4096, 0o1600)  # IPC_CREAT | 0600
time.sleep(2.5)
libc.shmctl(segment, 0, None)  # IPC_RMID
return {"breached": False, "evidence": ""}`, `${SYSV}\nimport time`))
      await new Promise(resolve => setTimeout(resolve, 1200))
      const spy = await attempt(target, script(`
found = libc.shmget(KEY, 0, 0)
return {"breached": found >= 0, "evidence": f"shmget gave {found}"}`, SYSV))
      await owner
      return spy
    },
    allow: async target => await works(target, script(`
segment = libc.shmget(0, 4096, 0o1600)  # IPC_PRIVATE
ok = segment >= 0
libc.shmctl(segment, 0, None)
return ok`, 'import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)'))
  },
  {
    name: 'kernel memory: no POSIX message queue, no locked memory (RLIMIT_MSGQUEUE and RLIMIT_MEMLOCK 0)',
    sabotageSafe: true,
    deny: async target => {
      const queue = `/pysandbox-${randomUUID()}`
      return await attempt(target, script(`
evidence = []
q = libc.mq_open(b"${queue}", os.O_CREAT | os.O_RDWR, 0o600, None)
if q >= 0:
    libc.mq_close(q)
    libc.mq_unlink(b"${queue}")
    evidence.append("created a POSIX message queue")
page = mmap.mmap(-1, 4096)
address = ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(page)))
if libc.mlock(address, 4096) == 0:
    libc.munlock(address, 4096)
    evidence.append("locked a page in memory")
return {"breached": bool(evidence), "evidence": "; ".join(evidence) or "mq_open and mlock refused"}`, 'import ctypes, mmap, os\nlibc = ctypes.CDLL(None, use_errno=True)'))
    },
    allow: async target => await works(target, script(`
page = mmap.mmap(-1, 1 << 20)
page[:5] = b"hello"
a, b = os.pipe()
os.write(b, page[:5])
return os.read(a, 5) == b"hello"`, 'import mmap, os'))
  },
  {
    // RLIMIT_AS bounds each process, not their sum (finding 2 of issue 10: 4 children held 400 MiB each).
    name: `memory: one run's processes together stay under the memory limit (4 children of 150 MiB each, limit ${MEMORY_LIMIT_MIB} MiB)`,
    sabotageSafe: true, // 600 MiB at most, then all of it is freed
    needsRunMemoryBound: true,
    deny: async target => await memoryAttempt(target, heldTogether(4, 150)),
    allow: async target => {
      const reply = await post(target, heldTogether(2, 60))
      return reply.status === 200 && /^2 of 2 children/.test(String(reply.body.result?.evidence))
    }
  },
  {
    // Kernel memory is outside RLIMIT_AS: a unix socket's send buffer holds up to 2 × wmem_max.
    name: `memory: kernel memory counts: socket send buffers cannot park more than the memory limit (${MEMORY_LIMIT_MIB} MiB)`,
    sabotageSafe: true, // stops at the limit + 128 MiB
    needsRunMemoryBound: true,
    deny: async target => await memoryAttempt(target, script(`
cap, parked, sockets, chunk = ${(MEMORY_LIMIT_MIB + 128) * 1024 * 1024}, 0, [], b"x" * 65536
try:
    while parked < cap:
        a, b = socket.socketpair()
        sockets.append((a, b))
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 30)
        a.setblocking(False)
        while parked < cap:
            try:
                parked += a.send(chunk)
            except BlockingIOError:
                break  # this one is full: the next socket
except OSError as e:
    if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
        raise
mib = parked >> 20
return {"breached": mib > ${MEMORY_LIMIT_MIB}, "evidence": f"{mib} MiB parked unread in the send buffers of {len(sockets)} unix sockets"}`, 'import errno, socket')),
    allow: async target => await works(target, script(`
a, b = socket.socketpair()
a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
a.setblocking(False)
sent = a.send(b"x" * 131072)
return sent > 0 and len(b.recv(sent, socket.MSG_WAITALL)) == sent`, 'import socket'))
  },
  {
    // Under a warm jail pid 1 is the zygote, which forks every later run of its slot: a run that
    // could change it would change other clients' runs (issue 10, finding 1). Not run against
    // `direct`: there pid 1 is the host's init.
    name: 'cross-run: no run can change the limits, scheduling or priority later runs start with',
    sabotageSafe: false,
    deny: async target => {
      const before = await attempt(target, script(`return {"breached": False, "evidence": ${ATTRIBUTES}}`, ATTRIBUTES_SETUP))
      for (let i = 0; i < 3; i++) await attempt(target, script(CHANGE_PID_1, ATTRIBUTES_SETUP))
      for (let i = 0; i < 3; i++) {
        const after = await attempt(target, script(`return {"breached": False, "evidence": ${ATTRIBUTES}}`, ATTRIBUTES_SETUP))
        if (after.evidence !== before.evidence) return { breached: true, evidence: `before: ${before.evidence}; after: ${after.evidence}` }
      }
      return { breached: false, evidence: before.evidence }
    },
    allow: async target => await works(target, script(`
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
os.nice(1)
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
return resource.getrlimit(resource.RLIMIT_FSIZE)[0] == 4096`, ATTRIBUTES_SETUP))
  },
  {
    // A warm jail's runs share its session, so its autogroup: a nice set through
    // /proc/self/autogroup slowed every later run twentyfold (found by review after finding 1).
    // Not under `direct`, where each run is a session of its own anyway.
    name: 'cross-run: the CPU share a run sets for its session (autogroup nice) does not reach later runs',
    sabotageSafe: false,
    deny: async target => {
      for (let i = 0; i < 3; i++) {
        await post(target, script(`
for _ in range(40):
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write("19")
        break
    except BlockingIOError:
        time.sleep(0.05)`, 'import time'))
      }
      for (let i = 0; i < 3; i++) {
        const after = await attempt(target, script(`
text = open("/proc/self/autogroup").read().strip()
return {"breached": not text.endswith(" nice 0"), "evidence": text}`))
        if (after.breached) return after
      }
      return { breached: false, evidence: 'nice 0 in every later run' }
    },
    allow: async target => await works(target, script(`
os.nice(1)
return os.getpriority(os.PRIO_PROCESS, 0) >= 1`, 'import os'))
  },
  {
    name: 'cross-run: a run sees no process but its own (no pid 1 of ours, no counters of earlier runs)',
    sabotageSafe: true,
    deny: async target => await attempt(target, script(`
me = os.getuid()
foreign = []
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        with open(f"/proc/{pid}/status") as f:
            uid = int(next(l for l in f if l.startswith("Uid:")).split()[1])
    except (OSError, StopIteration):
        continue
    if uid != me:
        foreign.append(pid)
if os.getpid() != 1 and os.path.exists("/proc/1/stat"):
    foreign.append("1 (not this process)")
return {"breached": bool(foreign), "evidence": ",".join(foreign[:10])}`, 'import os')),
    allow: async target => await works(target, script(`
pid = os.fork()
if pid == 0:
    time.sleep(1)
    os._exit(0)
seen = str(pid) in os.listdir("/proc") and open("/proc/self/stat").read().startswith(str(os.getpid()))
os.kill(pid, 9)
os.waitpid(pid, 0)
return seen`, 'import os, time'))
  },
  {
    // vsock's port space is host-wide (a port bound in one jail was EADDRINUSE in another);
    // netlink, packet and the rest reach kernel code no script needs (finding 4).
    name: 'cross-run: socket families other than unix, IPv4 and IPv6 are refused (vsock, netlink, packet, ...)',
    sabotageSafe: true,
    deny: async target => await attempt(target, script(`
opened = []
for name, family, kind in [("vsock", 40, socket.SOCK_STREAM), ("netlink", 16, socket.SOCK_RAW), ("packet", 17, socket.SOCK_DGRAM),
                           ("alg", 38, socket.SOCK_SEQPACKET), ("key", 15, socket.SOCK_RAW), ("tipc", 30, socket.SOCK_RDM),
                           ("xdp", 44, socket.SOCK_RAW), ("can", 29, socket.SOCK_RAW), ("rds", 21, socket.SOCK_SEQPACKET)]:
    try:
        socket.socket(family, kind).close()
        opened.append(name)
    except OSError:
        pass
try:
    socket.socketpair(16, socket.SOCK_RAW)
    opened.append("netlink pair")
except OSError:
    pass
return {"breached": bool(opened), "evidence": ",".join(opened) or "all refused"}`, 'import socket')),
    allow: async target => await works(target, script(`
a, b = socket.socketpair()
a.sendall(b"x")
ok = b.recv(1) == b"x"
for family in (socket.AF_INET, socket.AF_INET6):
    socket.socket(family, socket.SOCK_DGRAM).close()
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close()
return ok`, 'import socket'))
  },
  {
    // Each session is a scheduler autogroup of its own: 48 of them took 48 shares of the CPU
    // from a concurrent run (finding 5).
    name: 'cross-run: a run cannot make a session of its own (a CPU share per session)',
    sabotageSafe: true,
    deny: async target => await attempt(target, script(`
pid = os.fork()
if pid == 0:
    try:
        os.setsid()
        os._exit(0)
    except OSError:
        os._exit(1)
_, status = os.waitpid(pid, 0)
made = os.waitstatus_to_exitcode(status) == 0
return {"breached": made, "evidence": "setsid() succeeded" if made else "setsid() refused"}`, 'import os')),
    allow: async target => await works(target, script(`
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    os._exit(0 if os.getpgrp() == os.getpid() else 1)
_, status = os.waitpid(pid, 0)
child = subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True, text=True)
return os.waitstatus_to_exitcode(status) == 0 and child.stdout == "1\\n"`, 'import os, subprocess, sys'))
  },
  {
    // The AIO pool (fs.aio-max-nr) is host-wide: one run took all 65,536 entries and another's
    // io_setup failed. inotify watches on the shared read-only files see other jails' reads.
    name: 'cross-run: kernel AIO, inotify and dnotify are refused (host-wide pool, watches on shared files)',
    sabotageSafe: true,
    deny: async target => await attempt(target, script(`
evidence = []
context = ctypes.c_ulong(0)
if libc.syscall(206, 16, ctypes.byref(context)) == 0:  # io_setup
    libc.syscall(207, context)  # io_destroy
    evidence.append("io_setup")
fd = libc.inotify_init1(0)
if fd >= 0:
    if libc.inotify_add_watch(fd, os.__file__.encode(), 0xfff) >= 0:
        evidence.append("inotify watch on a shared file")
    os.close(fd)
fd = os.open(os.path.dirname(os.__file__), os.O_RDONLY)
try:
    fcntl.fcntl(fd, 1026, 0x80000001)  # F_NOTIFY, DN_ACCESS | DN_MULTISHOT
    evidence.append("dnotify on a shared directory")
except OSError:
    pass
os.close(fd)
return {"breached": bool(evidence), "evidence": ",".join(evidence) or "refused"}`, 'import ctypes, fcntl, os\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long')),
    allow: async target => await works(target, script(`
a, b = os.pipe()
poller = select.epoll()
poller.register(a, select.EPOLLIN)
os.write(b, b"x")
return len(poller.poll(1)) == 1`, 'import os, select'))
  },
  {
    // A kernel-memory overrun must find the run first, not the warm jail's zygote (finding 10:
    // the child's write failed silently on a read-only /proc and it stayed at 0). The kernel lets
    // an unprivileged process lower its own score back to what it inherited (0), so this is the
    // run's start, not a ceiling (docs/security.md). `direct` sets it too: not a sabotage case.
    name: 'cross-run: a run starts as the OOM killer\'s first choice (oom_score_adj 1000)',
    sabotageSafe: false,
    deny: async target => await attempt(target, script(`
value = open("/proc/self/oom_score_adj").read().strip()
return {"breached": value != "1000", "evidence": f"oom_score_adj {value}"}`)),
    allow: async target => await works(target, script('return int(open("/proc/self/oom_score").read()) > 0'))
  }
]
