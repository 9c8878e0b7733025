// Turns what a sandboxed process left behind (exit status, output, the result channel) into
// an outcome. The channel is written by code the user controls: it is bounded by the spawn
// wrapper and parsed strictly here.
import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { constants } from 'node:os'
import type { Limits, RunOutcome, RunOutput, ScriptErrorCode } from './backend.js'
import type { SpawnResult } from './spawn.js'

const HarnessCode = Type.Union(([
  'SYNTAX_ERROR', 'MISSING_MAIN', 'MAIN_NOT_CALLABLE', 'MAIN_RAISED',
  'RESULT_NOT_JSON', 'RESULT_TOO_LARGE', 'MEMORY_LIMIT_EXCEEDED', 'TIME_LIMIT_EXCEEDED'
] as const).map(c => Type.Literal(c)))

const ChannelMessage = Type.Union([
  Type.Object({ ok: Type.Literal(true), result: Type.Unknown() }, { additionalProperties: false }),
  Type.Object({
    ok: Type.Literal(false),
    code: HarnessCode,
    message: Type.String({ maxLength: 65_536 }),
    exception: Type.Optional(Type.String({ maxLength: 1024 })),
    traceback: Type.Optional(Type.String()),
    line: Type.Optional(Type.Integer({ minimum: 0 })),
    column: Type.Optional(Type.Integer({ minimum: 0 }))
  }, { additionalProperties: false })
])
type ChannelMessage = Static<typeof ChannelMessage>

const utf8 = new TextDecoder('utf-8', { fatal: true })
const lenient = new TextDecoder('utf-8')

/** The sandbox launcher (nsjail, unshare) reports a child killed by signal N as 128 + N. */
const SIGNAL_EXIT_BASE = 128

function parseChannel (bytes: Buffer): ChannelMessage | undefined {
  try {
    const message: unknown = JSON.parse(utf8.decode(bytes))
    return Value.Check(ChannelMessage, message) ? message : undefined
  } catch {
    return undefined
  }
}

function signalName (n: number): string {
  const entry = Object.entries(constants.signals).find(([, v]) => v === n)
  return entry?.[0] ?? `signal ${n}`
}

/** The signal that ended the run: from the launcher's 128+N, or from the process itself. */
function deathSignal (spawned: SpawnResult): number | undefined {
  if (spawned.signal !== null) return constants.signals[spawned.signal]
  const code = spawned.exitCode
  if (code !== null && code > SIGNAL_EXIT_BASE && code < SIGNAL_EXIT_BASE + 65) return code - SIGNAL_EXIT_BASE
  return undefined
}

export interface InterpretContext {
  limits: Limits
  /** True when memory is capped by a cgroup, whose breach is a SIGKILL rather than MemoryError. */
  memoryByCgroup: boolean
}

export function interpret (spawned: SpawnResult, context: InterpretContext): RunOutcome {
  if (spawned.spawnError !== undefined) throw spawned.spawnError
  const output: RunOutput = {
    stdout: lenient.decode(spawned.stdout),
    stderr: lenient.decode(spawned.stderr),
    stdoutTruncated: spawned.stdoutTruncated,
    stderrTruncated: spawned.stderrTruncated,
    durationMs: spawned.durationMs
  }
  const fail = (code: ScriptErrorCode, message: string, details: Record<string, string | number> = {}): RunOutcome =>
    ({ ok: false, code, message, details, ...output })
  const { limits } = context

  if (spawned.channelOverflow) {
    return fail('RESULT_TOO_LARGE', `main() returned more than ${limits.resultBytes} bytes of JSON`)
  }
  if (spawned.timedOut || spawned.aborted) {
    return fail('TIME_LIMIT_EXCEEDED', spawned.aborted
      ? 'the run was stopped because the server is shutting down'
      : `the script ran longer than the wall-time limit of ${limits.wallTimeMs} ms`)
  }
  const message = spawned.channel.length > 0 ? parseChannel(spawned.channel) : undefined
  if (spawned.channel.length > 0 && message === undefined) {
    return fail('CRASHED', 'the sandbox returned a malformed result message (was the result channel written to?)')
  }
  if (message?.ok === true && spawned.exitCode === 0) return { ok: true, result: message.result, ...output }
  if (message?.ok === false) {
    const { code, message: text, ok: _ok, ...details } = message
    return fail(code, text, details)
  }
  const signal = deathSignal(spawned)
  if (signal === constants.signals.SIGXCPU) {
    return fail('TIME_LIMIT_EXCEEDED', `the script used more than ${limits.cpuSeconds} s of CPU time`)
  }
  if (signal === constants.signals.SIGKILL) {
    // Nothing of ours sent it: a memory cgroup's OOM kill, or the hard CPU limit of a script
    // that blocked SIGXCPU. A cgroup kill comes before the CPU budget can be spent.
    const cpuSpent = spawned.durationMs >= limits.cpuSeconds * 1000
    return context.memoryByCgroup && !cpuSpent
      ? fail('MEMORY_LIMIT_EXCEEDED', `the script used more than ${limits.memoryMiB} MiB of memory`)
      : fail('TIME_LIMIT_EXCEEDED', `the script used more than ${limits.cpuSeconds} s of CPU time`)
  }
  if (signal !== undefined) {
    return fail('CRASHED', `the script was killed by ${signalName(signal)}`, { signal: signalName(signal) })
  }
  return fail('CRASHED', `the script exited with status ${String(spawned.exitCode)} before returning a result`,
    { exitCode: spawned.exitCode ?? -1 })
}
