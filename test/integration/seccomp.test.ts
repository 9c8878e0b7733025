// The nsjail seccomp policy, tried from scripts through ctypes: every refused call fails with
// EPERM or ENOSYS (or kills with SIGSYS), and the legitimate twins keep working.
import t from 'tap'
import { I386_SYSCALL, NESTED_USERNS_CLONE, REFUSED_SYSCALLS, syscallScript } from '../helpers/seccomp.js'
import { get, post, script, startServer, type Target } from '../helpers/server.js'

const EPERM = 1
const ENOSYS = 38

let target: Target
t.before(async () => { target = await startServer({ SANDBOX_BACKEND: 'nsjail' }) })
t.teardown(async () => { await target.close() })

t.test('the backend under test is nsjail', async t => {
  t.equal((await get(target, '/readyz')).body.backend, 'nsjail')
})

t.test('deny: each refused system call fails with EPERM or ENOSYS', async t => {
  const reply = await post(target, syscallScript(Object.keys(REFUSED_SYSCALLS)))
  t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 300))
  for (const [name, [ret, errno]] of Object.entries(reply.body.result as Record<string, [number, number]>)) {
    t.equal(ret, -1, `${name} fails`)
    t.ok(errno === EPERM || errno === ENOSYS, `${name}: errno ${errno}`)
  }
})

t.test('deny: clone() cannot make a nested user namespace', async t => {
  const reply = await post(target, NESTED_USERNS_CLONE)
  t.same(reply.body.result, [-1, EPERM])
})

t.test('deny: the 32-bit ABI (int 0x80) is killed by the filter', async t => {
  const reply = await post(target, I386_SYSCALL)
  t.equal(reply.body.code, 'CRASHED')
  t.equal(reply.body.signal, 'SIGSYS')
})

t.test('deny: the x32 ABI is refused', async t => {
  const reply = await post(target, script(`
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
return [libc.syscall(ctypes.c_long(0x40000000 | 39)), ctypes.get_errno()]`, 'import ctypes'))
  t.same(reply.body.result, [-1, ENOSYS])
})

t.test('allow: threads, fork, multiprocessing with /dev/shm, the interpreter as a subprocess', async t => {
  const reply = await post(target, script(`
with multiprocessing.Pool(2) as pool:
    squares = pool.map(abs, [-1, -2, -3])
memory = shared_memory.SharedMemory(create=True, size=4096)
memory.buf[0] = 7
seen = memory.buf[0]
memory.close()
memory.unlink()
pid = os.fork()
if pid == 0:
    os._exit(5)
_, status = os.waitpid(pid, 0)
box = []
thread = threading.Thread(target=box.append, args=(1,))
thread.start()
thread.join()
child = subprocess.run([sys.executable, "-c", "print('child')"], capture_output=True, text=True)
return [squares, seen, os.waitstatus_to_exitcode(status), box, child.stdout]`,
  'import multiprocessing, os, subprocess, sys, threading\nfrom multiprocessing import shared_memory'))
  t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 400))
  t.same(reply.body.result, [[1, 2, 3], 7, 5, [1], 'child\n'])
})
