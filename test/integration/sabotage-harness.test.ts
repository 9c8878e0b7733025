// Sabotage of the harness's own protections (files out, a forked main, the warm clean-up of
// output/), one at a time: a copy of harness/ with one protection edited out is bound into the
// jail in place of the real one, and the attack of the matching deny test must then get through.
// The same checks on the intact harness find nothing (the last test).
import t, { type Test } from 'tap'
import { chmodSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildApp } from '../../src/app.js'
import { limitsFrom } from '../../src/backends/backend.js'
import { nsjailOptions } from '../../src/backends/index.js'
import { HARNESS_DIR, JAIL_HARNESS_DIR, type Launch } from '../../src/backends/launch.js'
import { NsjailBackend } from '../../src/backends/nsjail/backend.js'
import type { JailSpec } from '../../src/backends/nsjail/jail-args.js'
import { loadConfig } from '../../src/config.js'
import { TEST_LIMITS, externalUrl, post, postBody, script, type Target } from '../helpers/server.js'
import { harassReachesNextRun, tokenReachesNextRun } from '../helpers/spare.js'

interface Edit { file: string, from: string, to: string }

/** A copy of harness/ with the edits made (each must apply), removed when the test ends. */
function editedHarness (t: Test, edits: Edit[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'pysandbox-harness-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  cpSync(HARNESS_DIR, dir, { recursive: true })
  chmodSync(dir, 0o755) // the jail's users read it, as they read harness/
  for (const { file, from, to } of edits) {
    const text = readFileSync(join(dir, file), 'utf8')
    if (!text.includes(from)) throw new Error(`${file} no longer holds ${JSON.stringify(from)}: update the sabotage`)
    writeFileSync(join(dir, file), text.replaceAll(from, to))
  }
  return dir
}

class EditedHarnessNsjail extends NsjailBackend {
  constructor (private readonly harness: string) {
    const config = loadConfig({ ...TEST_LIMITS })
    super(nsjailOptions(config, limitsFrom(config)))
  }

  override launchJail (spec: JailSpec): Launch {
    const launch = super.launchJail(spec)
    const bind = `${HARNESS_DIR}:${JAIL_HARNESS_DIR}`
    return { ...launch, args: launch.args.map(arg => arg === bind ? `${this.harness}:${JAIL_HARNESS_DIR}` : arg) }
  }
}

async function serverWith (t: Test, harness: string | undefined): Promise<Target> {
  const backends = harness === undefined ? undefined : [new EditedHarnessNsjail(harness)]
  const app = await buildApp({ config: loadConfig({ ...TEST_LIMITS, SANDBOX_BACKEND: 'nsjail' }), ...(backends !== undefined ? { backends } : {}) })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => await app.close())
  const { port } = app.server.address() as { port: number }
  return { url: `http://127.0.0.1:${port}`, serverRoot: '', port, close: async () => {} }
}

const SLOTS = loadConfig({ ...TEST_LIMITS }).CONCURRENCY

const returnedPaths = (body: Record<string, any>): string[] => ((body.files ?? []) as Array<{ path: string }>).map(f => f.path)

const CASES: Array<{ protection: string, edits: Edit[], breached: (target: Target) => Promise<boolean> }> = [
  {
    protection: 'links under output/ are not followed',
    edits: [
      { file: 'workdir.py', from: 'os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK', to: 'os.O_RDONLY | os.O_NONBLOCK' },
      { file: 'workdir.py', from: 'mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode', to: 'mode = os.stat(name, dir_fd=fd).st_mode' }
    ],
    breached: async target => {
      const reply = await post(target, script('open("/tmp/secret.txt", "w").write("outside output")\nos.symlink("/tmp/secret.txt", "output/up")\nreturn 1', 'import os'))
      return JSON.stringify(reply.body).includes('outside output')
    }
  },
  {
    protection: 'hard links are not read',
    edits: [{ file: 'workdir.py', from: 'if info.st_nlink != 1:', to: 'if False:' }],
    breached: async target => {
      const reply = await post(target, script('open("/tmp/secret.txt", "w").write("outside output")\nos.link("/tmp/secret.txt", "output/hard")\nreturn 1', 'import os'))
      return returnedPaths(reply.body).includes('hard')
    }
  },
  {
    protection: 'the returned files\' count is bounded',
    edits: [{ file: 'workdir.py', from: 'return self.count > self.max_files or self.size > self.max_bytes', to: 'return self.size > self.max_bytes' }],
    breached: async target => {
      const reply = await post(target, script('for i in range(101):\n    open(f"output/f{i}", "w").close()\nreturn 1'))
      // The server's own check of the channel then answers CRASHED: the deny test's 422 OUTPUT_TOO_LARGE is gone.
      return reply.status !== 503 && reply.body.code !== 'OUTPUT_TOO_LARGE'
    }
  },
  {
    protection: 'a forked process back from main() reports nothing',
    edits: [{ file: 'run.py', from: 'if GETPID() != owner:', to: 'if False:' }],
    breached: async target => {
      const reply = await post(target, 'import os\ndef main():\n    pid = os.fork()\n    if pid == 0:\n        return "child"\n    os.waitpid(pid, 0)\n    return "parent"\n')
      return reply.body.code === 'CRASHED'
    }
  },
  {
    protection: 'the zygote\'s relay buffer is wiped before the next run\'s process is forked',
    edits: [{ file: 'zygote.py', from: '    BUFFER[:] = ZEROS\n    return status, swept, reported\n', to: '    return status, swept, reported\n' }],
    breached: async target => (await tokenReachesNextRun(target, SLOTS)).reached
  },
  {
    protection: 'every process of a run is killed before the next run\'s process is forked',
    edits: [{ file: 'zygote.py', from: '    swept = sweep(reap_any)\n', to: '    swept = True  # sabotaged\n' }],
    breached: async target => await harassReachesNextRun(target, SLOTS)
  },
  {
    protection: 'a warm jail empties output/ between runs (and checks that it did)',
    edits: [
      { file: 'zygote.py', from: '        empty_dir(OUTPUT_DIR)\n', to: '' },
      { file: 'zygote.py', from: 'if not untouched():  # the clean-up must leave the jail as the zygote found it', to: 'if False:' }
    ],
    breached: async target => {
      await postBody(target, { script: 'def main():\n    open("output/left.txt", "w").write("run A")\n    return 1\n' })
      for (let i = 0; i < 4; i++) {
        const next = await post(target, 'import os\ndef main():\n    return os.listdir("output")\n')
        if ((next.body.result as string[] | undefined)?.includes('left.txt') === true) return true
      }
      return false
    }
  }
]

if (externalUrl !== undefined) {
  t.pass('skipped: sabotage needs servers of its own')
} else {
  for (const c of CASES) {
    t.test(`with "${c.protection}" edited out of the harness, its attack gets through`, async t => {
      const target = await serverWith(t, editedHarness(t, c.edits))
      t.equal(await c.breached(target), true)
    })
  }
  // A spare that ends with its request in fd 0, unread (it never should: nothing can kill it but
  // the OOM killer or a bug). Here the odd pids from 7 on do (the probe's jail serves its canaries
  // before that, so warm stays on); the zygote must end the jail so that no other run takes that
  // request. (Without that check the server's own accounting, frames of a run it never sent end
  // the jail, and the zygote's reading of the unread frame as a stop caught it in sequential
  // runs; a request sent as the jail said ready could have got the other's result.)
  const SPARE_ENDS = { file: 'zygote.py', from: '        length = STOP\n', to: '        if os.getpid() > 6 and os.getpid() % 2:  # edited\n            select.select([IN_FD], [], [])\n            os._exit(3)\n        length = STOP\n' }
  const REQUESTS = 24
  /** Requests that return their own input: how many were answered, how many with another's, and
   *  how many were not answered (their spare ended). */
  async function answers (target: Target): Promise<{ ok: number, foreign: number, failed: number }> {
    let ok = 0
    let foreign = 0
    for (let i = 0; i < REQUESTS; i++) {
      const reply = await postBody(target, { script: 'def main(data):\n    return data\n', input: `request ${i}` })
      if (reply.status === 200) ok++
      if (reply.status === 200 && reply.body.result !== `request ${i}`) foreign++
    }
    return { ok, foreign, failed: REQUESTS - ok }
  }
  t.test('a spare that ends before it reads its request ends its jail: no other run answers that request', async t => {
    const { ok, foreign, failed } = await answers(await serverWith(t, editedHarness(t, [SPARE_ENDS])))
    t.ok(failed > 0, `spares did end (${failed} requests of ${REQUESTS} not answered)`)
    t.ok(ok > 0, `allow: the spares that live answer (${ok} of ${REQUESTS})`)
    t.equal(foreign, 0, 'deny: no request is answered with another\'s result')
  })
  t.test('an edited harness that changes nothing passes the probe and runs scripts (the set-up is sound)', async t => {
    const target = await serverWith(t, editedHarness(t, []))
    t.equal((await post(target, 'def main():\n    return 1\n')).status, 200)
  })
  t.test('the same attacks fail on the intact harness (the edit, not the check, makes the difference)', async t => {
    const target = await serverWith(t, undefined)
    for (const c of CASES) t.equal(await c.breached(target), false, c.protection)
  })
}
