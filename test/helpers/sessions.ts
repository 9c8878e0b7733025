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

export const SESSIONS: SessionOptions = { memoryMiB: 256, seats: 8, spares: 1 }

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

/** The host uid the session's 65534 maps to, as the session reads it from its uid_map. */
export async function hostUid (session: SessionSandbox): Promise<number> {
  const outcome = await call(session, 'open("/proc/self/uid_map").read().split()[1]')
  if (!outcome.ok) throw new Error(`no uid_map: ${outcome.message}`)
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
  const before = hostCpuTicks(busy.pid)
  await sleep(1000)
  const idleTicks = hostCpuTicks(busy.pid) - before
  const during = hostCpuTicks(busy.pid)
  await call(session, 'import time\ntime.sleep(1)')
  const callTicks = hostCpuTicks(busy.pid) - during
  // Idle for a second: a running busy loop gets ~100 ticks of a core; a frozen one none.
  return { breached: idleTicks > 5, idleTicks, callTicks, pid: busy.pid }
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
 *  or the CPU budget), bound over the real one. Never reachable from the service. */
export type SessionProtection = 'freeze' | 'cpu'

export function sabotagedSessionBackend (protection: SessionProtection): typeof NsjailBackend {
  const dir = mkdtempSync(join(tmpdir(), 'pysandbox-session-sabotage-'))
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }))
  cpSync(HARNESS_DIR, dir, { recursive: true })
  chmodSync(dir, 0o755) // the jail's users read it, as they read harness/
  const path = join(dir, 'session.py')
  const source = readFileSync(path, 'utf8')
  const off = protection === 'freeze'
    ? 'def freeze():\n    return True  # sabotaged\n\n\n'
    : 'def over_budget(spent_ticks, cpu_seconds):\n    return False  # sabotaged\n\n\n'
  const marker = 'if __name__ == "__main__":'
  if (!source.includes(marker)) throw new Error('session.py changed: no main guard')
  writeFileSync(path, source.replace(marker, `${off}${marker}`))
  return class extends NsjailBackend {
    override launchJail (spec: JailSpec): Launch {
      const isSession = spec.command.some(arg => arg.endsWith('/session.py'))
      if (!isSession) return super.launchJail(spec)
      return super.launchJail({ ...spec, binds: spec.binds.map(b => b.target === JAIL_HARNESS_DIR ? { ...b, source: dir } : b) })
    }
  }
}
