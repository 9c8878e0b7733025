// The seccomp policy, tried from scripts through ctypes under both isolating backends (nsjail's
// kafel filter, and the same policy installed by the harness under unshare): every refused call
// fails with EPERM or ENOSYS (or kills with SIGSYS), and the legitimate twins keep working.
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { limitsFrom } from '../../src/backends/backend.js'
import type { Launch } from '../../src/backends/launch.js'
import { unshareOptions } from '../../src/backends/index.js'
import { UnshareBackend } from '../../src/backends/unshare/backend.js'
import { I386_SYSCALL, NESTED_USERNS_CLONE, REFUSED_SYSCALLS, syscallScript } from '../helpers/seccomp.js'
import { TEST_LIMITS, externalUrl, get, post, script, startServer, type Target } from '../helpers/server.js'

const EPERM = 1
const ENOSYS = 38

function seccompSuite (backend: 'nsjail' | 'unshare'): void {
  t.test(`under ${backend}`, async t => {
    const target: Target = await startServer({ SANDBOX_BACKEND: backend })
    t.teardown(async () => { await target.close() })

    t.equal((await get(target, '/readyz')).body.backend, backend, `the backend under test is ${backend}`)

    await t.test('deny: each refused system call fails with EPERM or ENOSYS', async t => {
      const reply = await post(target, syscallScript(Object.keys(REFUSED_SYSCALLS)))
      t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 300))
      for (const [name, [ret, errno]] of Object.entries(reply.body.result as Record<string, [number, number]>)) {
        t.equal(ret, -1, `${name} fails`)
        t.ok(errno === EPERM || errno === ENOSYS, `${name}: errno ${errno}`)
      }
    })

    await t.test('deny: clone() cannot make a nested user namespace', async t => {
      const reply = await post(target, NESTED_USERNS_CLONE)
      t.same(reply.body.result, [-1, EPERM])
    })

    await t.test('deny: the 32-bit ABI (int 0x80) is killed by the filter', async t => {
      const reply = await post(target, I386_SYSCALL)
      t.equal(reply.body.code, 'CRASHED')
      t.equal(reply.body.signal, 'SIGSYS')
    })

    await t.test('deny: the x32 ABI is refused', async t => {
      const reply = await post(target, script(`
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
return [libc.syscall(ctypes.c_long(0x40000000 | 39)), ctypes.get_errno()]`, 'import ctypes'))
      t.same(reply.body.result, [-1, ENOSYS])
    })

    await t.test('allow: threads, fork, multiprocessing with /dev/shm, the interpreter as a subprocess', async t => {
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
  })
}

/** The unshare backend without the harness's filter: what the seccomp tests must catch. */
class UnfilteredUnshare extends UnshareBackend {
  private armed = false
  override async probe (): ReturnType<UnshareBackend['probe']> {
    const report = await super.probe()
    this.armed = true
    return report
  }

  override launch (slot: number): Launch {
    const launch = super.launch(slot)
    return this.armed ? { ...launch, args: launch.args.filter(arg => arg !== '--seccomp') } : launch
  }
}

if (externalUrl !== undefined) {
  seccompSuite('nsjail') // the image's one backend
} else {
  seccompSuite('nsjail')
  seccompSuite('unshare')
  t.test('sabotage: unshare without the harness\'s filter lets the refused calls through', async t => {
    const config = loadConfig({ ...TEST_LIMITS })
    const app: FastifyInstance = await buildApp({ config, backends: [new UnfilteredUnshare(unshareOptions(config, limitsFrom(config)))] })
    await app.listen({ port: 0, host: '127.0.0.1' })
    t.teardown(async () => await app.close())
    const { port } = app.server.address() as { port: number }
    const target: Target = { url: `http://127.0.0.1:${port}`, serverRoot: '', port, close: async () => {} }
    const reply = await post(target, syscallScript(['io_setup', 'inotify_init1']))
    const result = reply.body.result as Record<string, [number, number]>
    t.not(result.io_setup?.[1], ENOSYS, `io_setup is not refused by a filter (${JSON.stringify(result.io_setup)})`)
    t.ok((result.inotify_init1?.[0] ?? -1) >= 0, 'inotify_init1 succeeds')
  })
}
