// Sessions' jails (docs/sessions.md) driven through a real NsjailBackend, and the attacks their
// deny tests make: each attack says whether the protection was breached, so the sabotage tests
// (test/integration/sabotage-session.test.ts) can run the very same attack with the protection off.
import { chmodSync, cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { limitsFrom, type Limits, type SessionSandbox } from '../../src/backends/backend.js'
import { nsjailOptions } from '../../src/backends/index.js'
import { HARNESS_DIR, JAIL_HARNESS_DIR, type Launch } from '../../src/backends/launch.js'
import { NsjailBackend, type SessionOptions } from '../../src/backends/nsjail/backend.js'
import type { JailSpec } from '../../src/backends/nsjail/jail-args.js'
import { loadConfig } from '../../src/config.js'
import { TEST_LIMITS } from './server.js'

export const SESSION_UID_BASE = Number(process.env.SANDBOX_UID_BASE ?? 1_830_000_000)
export const ROOT = { skip: process.getuid?.() !== 0 ? 'builds jails: needs root' : false }

export function sessionConfig (): ReturnType<typeof loadConfig> {
  return loadConfig({ ...TEST_LIMITS, WARM_SANDBOXES: 'false', SANDBOX_UID_BASE: String(SESSION_UID_BASE) })
}

export function testLimits (overrides: Partial<Limits> = {}): Limits {
  return { ...limitsFrom(sessionConfig()), ...overrides }
}

/** The server's sessions as the configuration makes them (warm sandboxes off: the ceilings are the sessions' own). */
const CONFIGURED = nsjailOptions(sessionConfig(), limitsFrom(sessionConfig())).sessions as SessionOptions
export const SESSIONS: SessionOptions = { memoryMiB: 256, seats: 8, spares: 1, spareIntervalMs: 0, ceilings: CONFIGURED.ceilings }

/** A probed backend with sessions on; `Backend` lets the sabotage tests pass a subclass. */
export async function sessionBackend (sessions: SessionOptions = SESSIONS, Backend: typeof NsjailBackend = NsjailBackend): Promise<NsjailBackend> {
  const config = sessionConfig()
  const backend = new Backend({ ...nsjailOptions(config, limitsFrom(config)), sessions })
  const report = await backend.probe()
  if (!report.ok) throw new Error(`probe failed: ${report.reason}`)
  return backend
}

/** Waits until the backend holds a ready spare (or gives up after 30 s). */
export async function spareReady (backend: NsjailBackend): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const spares = (backend as unknown as { spares: Array<{ state: string }> }).spares
    if (spares.some(jail => jail.state === 'ready')) return
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

export async function call (session: SessionSandbox, script: string, extra: Record<string, unknown> = {}, limits: Partial<Limits> = {}): ReturnType<SessionSandbox['call']> {
  return await session.call({ script, limits: testLimits(limits), ...extra })
}

/** The host uid the session's 65534 (the user's code) maps to, as the session reads it from its
 *  uid_map (whose other line, if any, maps the parent's 0). */
export async function hostUid (session: SessionSandbox, inside = 65534): Promise<number> {
  const outcome = await call(session, `[int(f[1]) for f in map(str.split, open("/proc/self/uid_map")) if f[0] == "${inside}"][0]`)
  if (!outcome.ok) throw new Error(`no uid_map line for ${inside}: ${outcome.message}`)
  return Number(outcome.result)
}

/** Host pids of a host uid's processes, with their command lines. */
export function hostProcesses (uid: number): Array<{ pid: number, cmdline: string }> {
  const found: Array<{ pid: number, cmdline: string }> = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const status = readFileSync(`/proc/${name}/status`, 'latin1')
      if (Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]) !== uid) continue
      found.push({ pid: Number(name), cmdline: readFileSync(`/proc/${name}/cmdline`, 'latin1').replaceAll('\0', ' ') })
    } catch {
      // Ended while listed.
    }
  }
  return found
}

/** utime + stime of a host process (clock ticks). */
export function hostCpuTicks (pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'latin1').split(')').at(-1)?.trim().split(/\s+/) ?? []
  return Number(fields[11]) + Number(fields[12])
}

const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

/** Attack: a call leaves a busy process behind; it must not run while the session is idle. */
export async function idleBusyProcess (session: SessionSandbox): Promise<{ breached: boolean, idleTicks: number, callTicks: number, pid: number }> {
  const uid = await hostUid(session)
  const started = await call(session, 'import subprocess, sys\nbusy = subprocess.Popen([sys.executable, "-c", "while True: pass", "busy-marker"])\nbusy.pid')
  if (!started.ok) throw new Error(`no busy process: ${started.message}`)
  const busy = hostProcesses(uid).find(p => p.cmdline.includes('busy-marker'))
  if (busy === undefined) throw new Error('busy process not found on the host')
  // Read with the last reading kept: the process ends with its session (the idle watch ends one
  // whose process ran while idle, as it does with the freeze sabotaged).
  let last = 0
  const ticks = (): number => {
    try {
      last = hostCpuTicks(busy.pid)
    } catch {
      // Ended: its last reading stands.
    }
    return last
  }
  const before = ticks()
  await sleep(1000)
  const idleTicks = ticks() - before
  const during = ticks()
  await call(session, 'import time\ntime.sleep(1)')
  const callTicks = ticks() - during
  // Idle for a second: a running busy loop gets ~100 ticks of a core; a frozen one none.
  return { breached: idleTicks > 5, idleTicks, callTicks, pid: busy.pid }
}

/** CPU ticks of a host uid's processes now, each pid's last reading kept in `seen` (so a process
 *  that ended still counts what it had). */
function uidTicks (uid: number, seen: Map<number, number>): number {
  for (const { pid } of hostProcesses(uid)) {
    try {
      seen.set(pid, hostCpuTicks(pid))
    } catch {
      // Ended meanwhile: its last reading stays.
    }
  }
  return [...seen.values()].reduce((sum, ticks) => sum + ticks, 0)
}

/** Attack (an outside review's thaw3.py, compacted): a call forks spinners that each arm a
 *  100 ms repeating timer whose signal is SIGCONT, so the kernel thaws them after the freeze.
 *  The idle watch must end the session within about a second, and their CPU stop growing. */
export async function idleThaw (session: SessionSandbox, spinners = 2): Promise<{ breached: boolean, endedAfterMs: number | undefined, idleTicks: number, ended: string }> {
  const uid = await hostUid(session)
  const script = 'import ctypes, os, signal\n' +
    'def spin(armed):\n' +
    '    signal.signal(signal.SIGCONT, lambda *a: None)\n' +
    '    libc = ctypes.CDLL(None, use_errno=True)\n' +
    '    event = ctypes.create_string_buffer(64)\n' +
    '    ctypes.memmove(ctypes.addressof(event) + 8, ctypes.byref(ctypes.c_int(signal.SIGCONT)), 4)  # sigev_signo\n' +
    '    timer = ctypes.c_void_p()\n' +
    '    assert libc.timer_create(1, event, ctypes.byref(timer)) == 0\n' +
    '    assert libc.timer_settime(timer, 0, (ctypes.c_long * 4)(0, 100_000_000, 0, 100_000_000), None) == 0\n' +
    '    os.write(armed, b"A")\n' +
    '    while True:\n' +
    '        pass\n' +
    'ready, armed = os.pipe()\n' +
    `for _ in range(${spinners}):\n` +
    '    if os.fork() == 0:\n' +
    '        spin(armed)\n' +
    'os.close(armed)\n' +
    `sum(len(os.read(ready, 1)) for _ in range(${spinners}))`
  // The call answers once every spinner's timer is armed: a spinner frozen before it armed its
  // timer never runs again, and the attack would test nothing (seen in CI under load).
  const armed = await call(session, script)
  if (!armed.ok || armed.result !== spinners) throw new Error(`spinners not armed: ${armed.ok ? JSON.stringify(armed.result) : armed.message}`)
  const seen = new Map<number, number>()
  const before = uidTicks(uid, seen)
  const t0 = performance.now()
  let endedAfterMs: number | undefined
  let ended = ''
  session.ended.then(end => { endedAfterMs = performance.now() - t0; ended = `${end.code}: ${end.message}` }, () => {})
  while (performance.now() - t0 < 3000) {
    await sleep(50)
    uidTicks(uid, seen)
    if (endedAfterMs !== undefined && hostProcesses(uid).length === 0) break
  }
  const idleTicks = uidTicks(uid, seen) - before
  // Idle for up to 3 s: two spinners thawed every 100 ms take ~600 ticks; the watch leaves a few dozen.
  return { breached: endedAfterMs === undefined || endedAfterMs > 1500 || idleTicks > 80, endedAfterMs, idleTicks, ended }
}

/** Attack: a call's child makes itself non-dumpable (invisible in /proc to another process of its
 *  uid) and spins for 2.5 s while the call waits for it; with a 1 s CPU budget the call must end
 *  TIME_LIMIT_EXCEEDED. `spin: false` is the allow twin: the child sleeps half a second. */
export async function nonDumpableChild (session: SessionSandbox, spin = true): Promise<{ breached: boolean, code: string | undefined, message: string, ms: number }> {
  const work = spin ? 'started = time.monotonic()\n    while time.monotonic() - started < 2.5:\n        pass' : 'time.sleep(0.5)'
  const script = 'import ctypes, os, time\n' +
    'pid = os.fork()\n' +
    'if pid == 0:\n' +
    '    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0\n' +
    `    ${work}\n` +
    '    os._exit(0)\n' +
    'os.waitpid(pid, 0)[1]'
  const t0 = performance.now()
  const outcome = await call(session, script, {}, { cpuSeconds: 1, wallTimeMs: 10_000 })
  const ms = performance.now() - t0
  const code = outcome.ok ? undefined : outcome.code
  const message = outcome.ok ? '' : outcome.message
  return { breached: !(code === 'TIME_LIMIT_EXCEEDED' && /CPU time/.test(message)), code, message, ms }
}

/** Attack: a busy loop with 1 s of CPU and 10 s of wall time; the CPU budget must end it. */
export async function cpuOverBudget (session: SessionSandbox): Promise<{ breached: boolean, code: string | undefined, message: string, ms: number }> {
  const t0 = performance.now()
  const outcome = await call(session, 'while True:\n    pass', {}, { cpuSeconds: 1, wallTimeMs: 10_000 })
  const ms = performance.now() - t0
  const code = outcome.ok ? undefined : outcome.code
  const message = outcome.ok ? '' : outcome.message
  return { breached: !(code === 'TIME_LIMIT_EXCEEDED' && /CPU time/.test(message) && ms < 5000), code, message, ms }
}

/** Test-only: session jails run a harness copy whose `protection` is switched off (the freeze,
 *  with the idle watch that checks it; the CPU budget; the idle watch alone; or the parent's
 *  identity: no zygote mapping, so the parent is 65534 as its kernel, and no drop), bound over
 *  the real one. Never reachable from the service. */
export type SessionProtection = 'freeze' | 'cpu' | 'idle-watch' | 'identity'

const SABOTAGE: Record<SessionProtection, string> = {
  // Without a freeze the idle watch has nothing stopped to check: it goes too.
  freeze: 'def freeze():\n    return {}  # sabotaged\n\n\ndef ran_while_idle(frozen):\n    return False  # sabotaged\n\n\n',
  cpu: 'def over_budget(spent_ticks, cpu_seconds):\n    return False  # sabotaged\n\n\n',
  'idle-watch': 'def ran_while_idle(frozen):\n    return False  # sabotaged\n\n\n',
  identity: 'def identity_ok():\n    return True  # sabotaged\n\n\ndef drop_privileges():\n    pass  # sabotaged\n\n\n'
}

export function sabotagedSessionBackend (protection: SessionProtection): typeof NsjailBackend {
  const dir = mkdtempSync(join(tmpdir(), 'pysandbox-session-sabotage-'))
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }))
  cpSync(HARNESS_DIR, dir, { recursive: true })
  chmodSync(dir, 0o755) // the jail's users read it, as they read harness/
  const path = join(dir, 'session.py')
  const source = readFileSync(path, 'utf8')
  const off = SABOTAGE[protection]
  const marker = 'if __name__ == "__main__":'
  if (!source.includes(marker)) throw new Error('session.py changed: no main guard')
  writeFileSync(path, source.replace(marker, `${off}${marker}`))
  return class extends NsjailBackend {
    override launchJail (spec: JailSpec): Launch {
      const isSession = spec.command.some(arg => arg.endsWith('/session.py'))
      if (!isSession) return super.launchJail(spec)
      const sabotaged: JailSpec = { ...spec, binds: spec.binds.map(b => b.target === JAIL_HARNESS_DIR ? { ...b, source: dir } : b) }
      if (protection === 'identity') delete sabotaged.zygote
      return super.launchJail(sabotaged)
    }
  }
}
