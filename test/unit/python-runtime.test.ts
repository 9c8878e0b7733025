// discoverPython on interpreter layouts this host does not have: fake interpreters (shell
// scripts printing what QUERY would) stand in for non-Debian builds, and a mocked file system
// for a host with neither known dynamic loader.
import * as fs from 'node:fs'
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { discoverPython } from '../../src/backends/python-runtime.js'

const LOADERS = new Set(['/lib64/ld-linux-x86-64.so.2', '/lib/ld-linux-aarch64.so.1'])

/** A directory for this test, removed afterwards. */
function scratch (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'pysandbox-runtime-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** An executable at `path` that ignores its arguments and runs the shell `body`. */
function fakeInterpreter (path: string, body: string): string {
  writeFileSync(path, `#!/bin/sh\n${body}\n`)
  chmodSync(path, 0o755)
  return path
}

/** A fake interpreter answering QUERY with `answer`. */
function answering (path: string, answer: Record<string, string>): string {
  return fakeInterpreter(path, `cat <<'JSON'\n${JSON.stringify(answer)}\nJSON`)
}

t.test('a build whose libdir holds the stdlib (python.org, pyenv): the libdir stays out, its site-packages is hidden', async t => {
  const prefix = scratch(t)
  const stdlib = join(prefix, 'lib/python3.12')
  const purelib = join(stdlib, 'site-packages')
  mkdirSync(join(prefix, 'bin'))
  mkdirSync(purelib, { recursive: true })
  const executable = answering(join(prefix, 'bin/python3.12'), {
    executable: join(prefix, 'bin/python3.12'), stdlib, purelib, libdir: join(prefix, 'lib'), multiarch: '', version: '3.12.7'
  })
  const runtime = await discoverPython(executable)
  t.equal(runtime.executable, executable)
  t.equal(runtime.stdlib, stdlib)
  t.same(runtime.readOnlyPaths, [executable, stdlib], 'no multiarch directory, and not the libdir that holds the host\'s packages')
  t.equal(runtime.hostSitePackages, purelib)
  t.equal(runtime.version, '3.12.7')
})

t.test('a Debian-like build: the libdir is kept, paths that do not exist are dropped, packages outside the stdlib need no hiding', async t => {
  const prefix = scratch(t)
  const stdlib = join(prefix, 'lib/python3.11')
  const libdir = join(prefix, 'lib/x86_64-linux-gnu')
  mkdirSync(stdlib, { recursive: true })
  mkdirSync(libdir)
  const executable = answering(join(prefix, 'python3.11'), {
    executable: join(prefix, 'python3.11'),
    stdlib,
    purelib: join(prefix, 'local/lib/python3.11/dist-packages'),
    libdir,
    multiarch: 'pysandbox-no-such-triplet',
    version: '3.11.2'
  })
  const runtime = await discoverPython(executable)
  t.same(runtime.readOnlyPaths, [executable, stdlib, libdir], '/usr/lib/<multiarch> does not exist: not bound')
  t.equal(runtime.hostSitePackages, undefined)
})

t.test('a site-packages inside the stdlib that does not exist is not hidden', async t => {
  const prefix = scratch(t)
  const stdlib = join(prefix, 'lib/python3.13')
  mkdirSync(stdlib, { recursive: true })
  const executable = answering(join(prefix, 'python3'), {
    executable: join(prefix, 'python3'), stdlib, purelib: join(stdlib, 'site-packages'), libdir: '', multiarch: '', version: '3.13.0'
  })
  t.equal((await discoverPython(executable)).hostSitePackages, undefined)
})

t.test('the dynamic loader is bound at its usual name when the host has a known one', async t => {
  const prefix = scratch(t)
  const executable = answering(join(prefix, 'python3'), {
    executable: join(prefix, 'python3'), stdlib: prefix, purelib: '', libdir: '', multiarch: '', version: '3'
  })
  const { loader } = await discoverPython(executable)
  if (loader === undefined) {
    t.notOk([...LOADERS].some(p => fs.existsSync(p)), 'no known loader on this host')
  } else {
    t.ok(LOADERS.has(loader.target), loader.target)
    t.equal(loader.source, fs.realpathSync(loader.target))
  }
})

t.test('a host with neither known loader (another architecture, musl): no loader is bound', async t => {
  const { discoverPython } = await t.mockImport<typeof import('../../src/backends/python-runtime.js')>('../../src/backends/python-runtime.js', {
    'node:fs': t.createMock(fs, { existsSync: (p: fs.PathLike) => !LOADERS.has(String(p)) && fs.existsSync(p) })
  })
  const prefix = scratch(t)
  const executable = answering(join(prefix, 'python3'), {
    executable: join(prefix, 'python3'), stdlib: prefix, purelib: '', libdir: '', multiarch: '', version: '3'
  })
  t.equal((await discoverPython(executable)).loader, undefined)
})

t.test('an interpreter that cannot run is refused with why', async t => {
  await t.rejects(discoverPython('/nonexistent/pysandbox/python3'), /cannot run the sandbox interpreter \/nonexistent\/pysandbox\/python3: .*ENOENT/)
  const broken = fakeInterpreter(join(scratch(t), 'python3'), 'echo "error while loading shared libraries: libpython3.so" >&2\nexit 127')
  await t.rejects(discoverPython(broken), /cannot run the sandbox interpreter .*: error while loading shared libraries: libpython3\.so$/)
})
