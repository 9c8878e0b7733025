// Sabotage of nsjail, one protection at a time (test/helpers/sabotage.ts): the tests that cover
// that protection must then report the breach. Only attacks that stay harmless with the
// protection off are used: a limit is sabotaged with a script that reads the limit, not a bomb.
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { GUARANTEES, type Guarantee } from '../helpers/guarantees.js'
import { SabotagedNsjail, type Protection } from '../helpers/sabotage.js'
import { syscallScript } from '../helpers/seccomp.js'
import { TEST_LIMITS, externalUrl, post, script, type Target } from '../helpers/server.js'

async function sabotagedServer (protection: Protection): Promise<{ app: FastifyInstance, target: Target }> {
  const app = await buildApp({ config: loadConfig({ ...TEST_LIMITS }), backends: [new SabotagedNsjail(protection)] })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  return { app, target: { url: `http://127.0.0.1:${port}`, serverRoot: '', port, close: async () => await app.close() } }
}

function guarantee (name: string): Guarantee {
  const found = GUARANTEES.find(g => g.name.startsWith(name))
  if (found === undefined) throw new Error(`no guarantee ${name}`)
  return found
}

const CASES: Array<{ protection: Protection, test: string, breached: (target: Target) => Promise<boolean> }> = [
  { protection: 'network', test: 'network: the service\'s own port', breached: async target => (await guarantee('network: the service').deny(target)).breached },
  { protection: 'readonly', test: 'filesystem: the root is read-only', breached: async target => (await guarantee('filesystem: the root').deny(target)).breached },
  { protection: 'uid', test: 'privileges: not root', breached: async target => (await guarantee('privileges').deny(target)).breached },
  {
    protection: 'seccomp',
    test: 'seccomp: unshare(CLONE_NEWUSER) and ptrace(TRACEME) are refused',
    breached: async target => {
      const result = (await post(target, syscallScript(['unshare', 'ptrace']))).body.result as Record<string, [number, number]>
      return result.unshare?.[0] === 0 || result.ptrace?.[0] === 0
    }
  },
  { protection: 'seccomp', test: 'cross-run: socket families', breached: async target => (await guarantee('cross-run: socket families').deny(target)).breached },
  { protection: 'seccomp', test: 'cross-run: no sessions', breached: async target => (await guarantee('cross-run: a run cannot make a session').deny(target)).breached },
  { protection: 'seccomp', test: 'cross-run: kernel AIO and inotify', breached: async target => (await guarantee('cross-run: kernel AIO').deny(target)).breached },
  {
    protection: 'limits',
    test: 'limits: the process, file and file-size rlimits are in force',
    breached: async target => {
      const reply = await post(target, script(`
return [resource.getrlimit(resource.RLIMIT_NPROC)[0], resource.getrlimit(resource.RLIMIT_NOFILE)[0], resource.getrlimit(resource.RLIMIT_FSIZE)[0]]`, 'import resource'))
      const [nproc, nofile, fsize] = reply.body.result as number[]
      return nproc !== Number(TEST_LIMITS.LIMIT_PROCESSES) || nofile !== 256 || fsize !== Number(TEST_LIMITS.LIMIT_TMP_MB) * 1024 * 1024
    }
  }
]

if (externalUrl !== undefined) {
  t.pass('skipped: sabotage needs servers of its own')
} else {
  for (const c of CASES) {
    t.test(`with ${c.protection} sabotaged, "${c.test}" reports the breach`, async t => {
      const { target } = await sabotagedServer(c.protection)
      t.teardown(target.close)
      t.equal(await c.breached(target), true)
    })
  }
  t.test('the same checks pass on an intact nsjail (the sabotage, not the check, makes the difference)', async t => {
    const app = await buildApp({ config: loadConfig({ ...TEST_LIMITS, SANDBOX_BACKEND: 'nsjail' }) })
    await app.listen({ port: 0, host: '127.0.0.1' })
    t.teardown(async () => await app.close())
    const { port } = app.server.address() as { port: number }
    const target: Target = { url: `http://127.0.0.1:${port}`, serverRoot: '', port, close: async () => {} }
    for (const c of CASES) t.equal(await c.breached(target), false, c.test)
  })
}
