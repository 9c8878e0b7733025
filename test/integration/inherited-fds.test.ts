// A descriptor the server was started with (without close-on-exec, above a gap in the numbering)
// must not reach any script: nsjail passes only what it is told to, and the harness closes
// everything else it inherited (the unshare jail closes nothing itself). Issue 10, finding 6.
import t from 'tap'
import { spawn } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { PROJECT_ROOT } from '../../src/config.js'
import { TEST_LIMITS, externalUrl, freePort, post, script, type Target } from '../helpers/server.js'

/** Where the server finds it (launchers may move it: and the server itself takes the low numbers). */
const LEAKED_FD = 40

async function serverWithInheritedFile (env: Record<string, string>, file: string): Promise<Target & { stop: () => void }> {
  const port = await freePort()
  const fd = openSync(file, 'r+')
  const stdio: Array<'ignore' | 'inherit' | number> = ['ignore', 'ignore', 'inherit']
  for (let i = 3; i < LEAKED_FD; i++) stdio.push('ignore')
  stdio.push(fd)
  const server = spawn(process.execPath, [resolve(PROJECT_ROOT, 'dist/server.js')], {
    env: { ...process.env, ...TEST_LIMITS, ...env, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'error', PROBE_INTERVAL_MS: '0' },
    stdio
  })
  closeSync(fd)
  const url = `http://127.0.0.1:${port}`
  for (let tries = 0; tries < 600; tries++) {
    try {
      if ((await fetch(`${url}/readyz`)).status === 200) break
    } catch {}
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  return { url, port, serverRoot: PROJECT_ROOT, close: async () => {}, stop: () => server.kill('SIGTERM') }
}

if (externalUrl !== undefined) {
  t.pass('skipped: starts server processes of its own')
} else {
  const dir = mkdtempSync(join(tmpdir(), 'pysandbox-fds-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const [name, env] of [['nsjail (warm)', { SANDBOX_BACKEND: 'nsjail' }], ['nsjail (cold)', { SANDBOX_BACKEND: 'nsjail', WARM_SANDBOXES: 'false' }], ['unshare', { SANDBOX_BACKEND: 'unshare' }]] as const) {
    t.test(`${name}: a descriptor the server inherited is closed before the script runs`, async t => {
      const file = join(dir, `${name.replace(/\W/g, '')}.txt`)
      writeFileSync(file, 'server-only\n')
      const target = await serverWithInheritedFile(env, file)
      t.teardown(target.stop)
      // Wherever the launchers moved it to: any regular file open in the script is the leak.
      const deny = await post(target, script(`
leaked = []
for fd in sorted(int(fd) for fd in os.listdir("/proc/self/fd")):
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.write(fd, b"written by a script")
            leaked.append(fd)
    except OSError:
        pass
return leaked`, 'import os, stat'))
      t.equal(deny.status, 200, JSON.stringify(deny.body).slice(0, 300))
      t.same(deny.body.result, [], 'deny: no file descriptor of the server is open in the script')
      t.equal(readFileSync(file, 'utf8'), 'server-only\n', 'the host file is untouched')
      const allow = await post(target, script('os.write(1, b"out\\n")\nos.write(2, b"err\\n")\nreturn sys.stdin.read()', 'import os, sys'))
      t.same([allow.body.stdout, allow.body.stderr, allow.body.result], ['out\n', 'err\n', ''], 'allow: the standard streams work')
    })
  }
}
