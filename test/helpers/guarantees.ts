// The isolation guarantees as deny/allow pairs, shared by the sandbox suites (every deny must
// hold) and the sabotage suite (against `direct`, every non-destructive deny must be breached,
// which proves the test can fail). Each deny returns whether the attack got through.
import { randomUUID } from 'node:crypto'
import { post, script, type Target } from './server.js'
import { SERVER_SECRET } from './server.js'

export interface Attempt {
  breached: boolean
  evidence: string
}

export interface Guarantee {
  name: string
  /** Harmless outside a sandbox, so it may run against `direct` (no bombs, no kill(-1)). */
  sabotageSafe: boolean
  deny: (target: Target) => Promise<Attempt>
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
  }
]
