// Finds what the sandbox must mount for the configured interpreter to run: its binary, its
// standard library, the shared libraries it links and the dynamic loader, all read-only.
import { existsSync, realpathSync } from 'node:fs'
import { join } from 'node:path'
import { HARNESS_DIR, pythonArgs } from './launch.js'
import { spawnCapped } from './spawn.js'

export interface PythonRuntime {
  /** The interpreter's real path; the sandbox runs it at the same path. */
  executable: string
  /** The standard library directory (lib-dynload inside). */
  stdlib: string
  /** Host paths bound read-only at the same path inside the sandbox. */
  readOnlyPaths: string[]
  /** Host file bound at a different path: the dynamic loader's real file at its usual name. */
  loader: { source: string, target: string } | undefined
  /** A directory inside the stdlib holding the host's installed packages, to hide. */
  hostSitePackages: string | undefined
  version: string
}

/** Prints what the server must know of the interpreter, as JSON; a plain Python file (it takes no
 *  parameters), run by the interpreter itself in isolated mode. */
const QUERY = join(HARNESS_DIR, 'interpreter_query.py')

/** What QUERY prints: every key, always a string. */
interface QueryAnswer { executable: string, stdlib: string, purelib: string, libdir: string, multiarch: string, version: string }

const LOADERS = ['/lib64/ld-linux-x86-64.so.2', '/lib/ld-linux-aarch64.so.1']

export async function discoverPython (python: string): Promise<PythonRuntime> {
  const spawned = await spawnCapped({
    file: python,
    args: pythonArgs(QUERY, []),
    env: { PATH: '/usr/bin:/bin' },
    input: '',
    outputLimit: 65_536,
    channelLimit: 1,
    wallTimeMs: 10_000,
    killGraceMs: 100
  })
  if (spawned.spawnError !== undefined || spawned.exitCode !== 0) {
    throw new Error(`cannot run the sandbox interpreter ${python}: ${spawned.spawnError?.message ?? spawned.stderr.toString().trim()}`)
  }
  const { executable, stdlib, purelib, libdir, multiarch, version } = JSON.parse(spawned.stdout.toString()) as QueryAnswer
  const multiarchLib = multiarch !== '' ? `/usr/lib/${multiarch}` : ''
  const readOnlyPaths = [...new Set([executable, stdlib, multiarchLib, libdir])]
    .filter(p => p !== '' && existsSync(p))
    // A libdir that holds the stdlib (non-Debian builds) would also expose the host's packages:
    // its libpython is enough.
    .filter(p => p === stdlib || !stdlib.startsWith(p + '/'))
  const loaderPath = LOADERS.find(p => existsSync(p))
  return {
    executable,
    stdlib,
    readOnlyPaths,
    loader: loaderPath === undefined ? undefined : { source: realpathSync(loaderPath), target: loaderPath },
    hostSitePackages: purelib.startsWith(stdlib + '/') && existsSync(purelib) ? purelib : undefined,
    version
  }
}
