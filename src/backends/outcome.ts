// Turns what a sandboxed process left behind (exit status, output, the result channel) into
// an outcome. The channel is written by code the user controls: it is bounded by the spawn
// wrapper and checked strictly here, in one scan whose cost is linear in its bytes whatever their
// shape; main()'s value is never parsed on the way to the reply (see succeeded()).
import { Type, type Static } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { constants } from 'node:os'
import { HARNESS_ERROR_CODES } from '../errors/codes.js'
import type { Limits, RunOutcome, RunOutput, ScriptErrorCode } from './backend.js'
import type { SpawnResult } from './spawn.js'
import { scanJsonInSlices } from '../json-scan.js'
import { clash, mediaTypeOf, pathProblem, sizeOf, type ReturnedFile } from '../files.js'

const HarnessCode = Type.Union(HARNESS_ERROR_CODES.map(c => Type.Literal(c)))

const ChannelFile = Type.Object({
  path: Type.String(),
  encoding: Type.Union([Type.Literal('utf8'), Type.Literal('base64')]),
  content: Type.String()
}, { additionalProperties: false })

const LeftOut = Type.Object({
  path: Type.String({ maxLength: 4096 }),
  reason: Type.String({ maxLength: 1024 })
}, { additionalProperties: false })

const ChannelMessage = Type.Union([
  Type.Object({
    ok: Type.Literal(true),
    result: Type.Unknown(),
    files: Type.Optional(Type.Array(ChannelFile, { minItems: 1 })),
    leftOut: Type.Optional(Type.Array(LeftOut, { minItems: 1 }))
  }, { additionalProperties: false }),
  Type.Object({
    ok: Type.Literal(false),
    code: HarnessCode,
    message: Type.String({ maxLength: 65_536 }),
    exception: Type.Optional(Type.String({ maxLength: 1024 })),
    traceback: Type.Optional(Type.String()),
    signature: Type.Optional(Type.String({ maxLength: 4096 })),
    line: Type.Optional(Type.Integer({ minimum: 0 })),
    column: Type.Optional(Type.Integer({ minimum: 0 })),
    outputFiles: Type.Optional(Type.Integer({ minimum: 0 })),
    outputBytes: Type.Optional(Type.Integer({ minimum: 0 }))
  }, { additionalProperties: false })
])
type ChannelMessage = Static<typeof ChannelMessage>

const utf8 = new TextDecoder('utf-8', { fatal: true })
const lenient = new TextDecoder('utf-8')

/** Deepest nesting of arrays and objects accepted on the channel. The harness refuses results
 *  nested deeper than its MAX_DEPTH (200) and adds one level of envelope; a script that writes
 *  on the channel itself is not held to that, and a message nested 200,000 deep parses but then
 *  overflows the stack when the reply is serialized (a 500). A little above the harness's bound. */
export const MAX_CHANNEL_DEPTH = 256

/** The most values a message of the harness holds outside main()'s value: a failure's eleven
 *  fields, or a success's envelope with four values per returned file (an object and its three
 *  strings) and three per file left out, LIMIT_FILES_OUT of them together. More is a script
 *  writing on the channel: refused before JSON.parse builds them. */
export function envelopeValues (limits: Pick<Limits, 'filesOut'>): number {
  return 16 + 4 * limits.filesOut
}

interface Channel {
  message: ChannelMessage
  /** main()'s JSON text, checked by the scan, when the message carries one. */
  result?: Buffer
  /** A value in main()'s JSON that the harness would have refused (the script wrote it). */
  unreadable?: string
}

/** The message, or 'too large' for main()'s JSON over LIMIT_RESULT_BYTES, or undefined for a
 *  malformed one. */
async function parseChannel (bytes: Buffer, limits: Limits): Promise<Channel | 'too large' | undefined> {
  // Size is bounded by the spawn wrapper (channelLimit, which leaves room for files too); the
  // grammar, the nesting, main()'s JSON's size, the envelope's and the values' rules are checked
  // here, before anything is parsed, in slices that leave the event loop free between them.
  const scan = await scanJsonInSlices(bytes, { maxDepth: MAX_CHANNEL_DEPTH, member: 'result', maxValuesOutside: envelopeValues(limits), maxMemberBytes: limits.resultBytes })
  if (scan.memberTooLarge === true) return 'too large'
  if (scan.error !== undefined || scan.unreadable?.inMember === false) return undefined
  const { member } = scan
  // The envelope alone is parsed, main()'s value standing in as null: a few fields and files.
  const envelope = member === undefined
    ? utf8.decode(bytes)
    : `${utf8.decode(bytes.subarray(0, member.start))}null${utf8.decode(bytes.subarray(member.end))}`
  const message: unknown = JSON.parse(envelope)
  if (!Value.Check(ChannelMessage, message)) return undefined
  return {
    message,
    ...(member !== undefined ? { result: bytes.subarray(member.start, member.end) } : {}),
    ...(scan.unreadable !== undefined ? { unreadable: scan.unreadable.message } : {})
  }
}

type SuccessFields = Omit<Extract<RunOutcome, { ok: true }>, 'ok' | 'result' | 'resultJson'>

/** A success carrying main()'s value as JSON text (checked by the channel's scan, or made by
 *  JSON.stringify), which the reply passes on as it is: JSON.parse of 8 MiB of `[{}]` takes
 *  0.9 s of the event loop. `result` parses it the first time it is read (the probes' canaries
 *  and the tests read it), and keeps it. */
export function succeeded (resultJson: Buffer, fields: SuccessFields): RunOutcome {
  let parsed: { value: unknown } | undefined
  return {
    ok: true,
    get result (): unknown {
      parsed ??= { value: JSON.parse(utf8.decode(resultJson)) }
      return parsed.value
    },
    resultJson,
    ...fields
  }
}

type Success = Extract<ChannelMessage, { ok: true }>

/** The returned files as the reply carries them, or undefined when the channel's list breaks the
 *  rules the harness keeps (a path that is not one, a path twice, a file where another needs a
 *  directory, bad base64, over the limits):
 *  the script wrote on the channel itself. */
function returnedFiles (message: Success, limits: Limits): ReturnedFile[] | undefined {
  const files = message.files ?? []
  if (files.length + (message.leftOut?.length ?? 0) > limits.filesOut) return undefined
  const paths = new Set<string>()
  let total = 0
  const returned: ReturnedFile[] = []
  for (const { path, encoding, content } of files) {
    const size = sizeOf(content, encoding)
    if (size === undefined || pathProblem(path) !== undefined || paths.has(path)) return undefined
    paths.add(path)
    total += size
    returned.push({ path, size, mediaType: mediaTypeOf(path), encoding, content })
  }
  return total > limits.filesOutBytes || clash([...paths]) !== undefined ? undefined : returned
}

function signalName (n: number): string {
  const entry = Object.entries(constants.signals).find(([, v]) => v === n)
  return entry?.[0] ?? `signal ${n}`
}

export interface InterpretContext {
  limits: Limits
  /** True when memory is capped by a cgroup, whose breach is a SIGKILL rather than MemoryError. */
  memoryByCgroup: boolean
}

/** A run that ended without a status to interpret (its sandbox died first), with whatever output it
 *  left: the facts of the failure. */
export function crashed (message: string, output: Partial<RunOutput> = {}): RunOutcome {
  return {
    ok: false,
    code: 'CRASHED',
    message,
    details: {},
    stdout: '',
    stderr: '',
    stdoutTruncated: false,
    stderrTruncated: false,
    durationMs: 0,
    ...output
  }
}

export function outputOf (spawned: Pick<SpawnResult, 'stdout' | 'stderr' | 'stdoutTruncated' | 'stderrTruncated' | 'durationMs'>): RunOutput {
  return {
    stdout: lenient.decode(spawned.stdout),
    stderr: lenient.decode(spawned.stderr),
    stdoutTruncated: spawned.stdoutTruncated,
    stderrTruncated: spawned.stderrTruncated,
    durationMs: spawned.durationMs
  }
}

export async function interpret (spawned: SpawnResult, context: InterpretContext): Promise<RunOutcome> {
  if (spawned.spawnError !== undefined) throw spawned.spawnError
  const output = outputOf(spawned)
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
  const channel = spawned.channel.length > 0 ? await parseChannel(spawned.channel, limits) : undefined
  // The harness refuses more itself; a script that writes on the channel is refused here.
  if (channel === 'too large') return fail('RESULT_TOO_LARGE', `main() returned more than ${limits.resultBytes} bytes of JSON`)
  if (spawned.channel.length > 0 && channel === undefined) {
    return fail('CRASHED', 'the sandbox returned a malformed result message (was the result channel written to?)')
  }
  const message = channel?.message
  if (message?.ok === true && spawned.exitCode === 0) {
    // The harness refuses these before it writes; a script that writes on the channel itself
    // meets the same rules here, in the harness's words.
    if (channel?.unreadable !== undefined) return fail('RESULT_NOT_JSON', `main() returned something that is not JSON: ${channel.unreadable}`)
    const result = channel?.result as Buffer // a success has its result: the schema requires it
    const files = returnedFiles(message, limits)
    if (files === undefined) return fail('CRASHED', 'the sandbox returned a malformed list of files (was the result channel written to?)')
    return succeeded(result, {
      ...(files.length > 0 ? { files } : {}),
      ...(message.leftOut !== undefined ? { filesLeftOut: message.leftOut } : {}),
      ...output
    })
  }
  if (message?.ok === false) {
    const { code, message: text, ok: _ok, ...details } = message
    return fail(code, text, details)
  }
  const { signal } = spawned
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
  if (signal !== null) {
    return fail('CRASHED', `the script was killed by ${signalName(signal)}`, { signal: signalName(signal) })
  }
  return fail('CRASHED', `the script exited with status ${String(spawned.exitCode)} before returning a result`,
    { exitCode: spawned.exitCode ?? -1 })
}
