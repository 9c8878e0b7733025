// The HTTP contract as TypeBox schemas: they validate requests, shape replies (nothing
// internal leaks past them) and generate the OpenAPI document. Each object the API speaks of is
// one named schema (its $id is its name in the document's components, and in a generated client),
// registered once (SCHEMAS) and referenced everywhere else with ref().
import { Type, type SchemaOptions, type Static, type TSchema, type TUnsafe } from '@sinclair/typebox'
import { BACKEND_NAMES } from './config.js'
import { ERRORS, ERROR_CODES } from './errors/codes.js'
import { MAX_PATH_BYTES, MAX_PATH_DEPTH, OUTPUT_DIR } from './files.js'

/** Deepest nesting of arrays and objects accepted in `input`: as in main()'s result. */
export const MAX_INPUT_DEPTH = 200

/** A reference to a named schema of SCHEMAS, typed as that schema (one without a name would
 *  refer to "undefined#": the app would not start). */
export function ref<T extends TSchema> (schema: T, options: SchemaOptions = {}): TUnsafe<Static<T>> {
  return Type.Unsafe<Static<T>>({ $ref: `${String(schema.$id)}#`, ...options })
}

/** A string that is one of `values`, as one `enum`: a union of literals would be one schema per
 *  value in the OpenAPI document, and one class per value in a generated client. */
function stringEnum<const T extends readonly string[]> (values: T, options: SchemaOptions = {}): TUnsafe<T[number]> {
  return Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...options })
}

/** How a file's content travels, both ways. */
const Encoding = stringEnum(['utf8', 'base64'], {
  $id: 'Encoding',
  description: 'utf8: the content is the file\'s text; base64: its bytes in base64 (RFC 4648, padded, no line breaks). A returned file is utf8 when its bytes are valid UTF-8 without control characters other than tab, newline and carriage return, else base64'
})

const PATH_RULES = `relative to the working directory, normalised (no empty, "." or ".." part), no control characters, at most ${MAX_PATH_BYTES} bytes and ${MAX_PATH_DEPTH} levels`

export const FileIn = Type.Object({
  path: Type.String({ minLength: 1, description: `Where the file appears: ${PATH_RULES}, not under ${OUTPUT_DIR}/` }),
  content: Type.String({ description: 'The file\'s content, as `encoding` says' }),
  encoding: Type.Optional(ref(Encoding))
}, { additionalProperties: false, $id: 'FileIn', description: 'A file for the script\'s working directory; its `encoding` is utf8 when absent' })

/** Per-request limits: the minimums keep a run able to start; the maximums are the server's (a 400 names them). */
export const RunLimits = Type.Object({
  wallMs: Type.Optional(Type.Integer({ minimum: 100, description: 'Wall-clock time (ms); default LIMIT_WALL_MS, at most LIMIT_WALL_MS_MAX' })),
  cpuSeconds: Type.Optional(Type.Integer({ minimum: 1, description: 'CPU time (s); default LIMIT_CPU_S, at most LIMIT_CPU_S_MAX' })),
  memoryMb: Type.Optional(Type.Integer({ minimum: 64, description: 'Memory (MiB); default LIMIT_MEMORY_MB, at most LIMIT_MEMORY_MB_MAX. Other than the default, the run is cold (a fresh sandbox imports numpy and pandas)' })),
  processes: Type.Optional(Type.Integer({ minimum: 4, description: 'Processes and threads; default LIMIT_PROCESSES, at most LIMIT_PROCESSES_MAX. Other than the default, the run is cold' })),
  outputBytes: Type.Optional(Type.Integer({ minimum: 1024, description: 'Bytes kept of stdout and of stderr each; default LIMIT_OUTPUT_BYTES, at most LIMIT_OUTPUT_BYTES_MAX' }))
}, { additionalProperties: false, $id: 'RunLimits', description: 'Limits for this run, each at most the server\'s ceiling and the API key\'s; absent: the server\'s defaults' })

export const ExecuteRequest = Type.Object({
  script: Type.String({ minLength: 1, description: 'Python 3 source that defines a function main()' }),
  input: Type.Optional(Type.Unknown({ description: `Any JSON value (nested at most ${MAX_INPUT_DEPTH} deep). Present, even null: main(input) is called; absent: main()` })),
  stdin: Type.Optional(Type.String({ description: 'The script\'s standard input (input(), sys.stdin). Absent: empty, and input() raises EOFError' })),
  files: Type.Optional(Type.Array(ref(FileIn), {
    maxItems: 10_000,
    description: 'Files placed in the working directory before the script runs (at most LIMIT_FILES_IN, each at most LIMIT_FILE_IN_BYTES, together at most LIMIT_FILES_IN_BYTES)'
  })),
  limits: Type.Optional(ref(RunLimits))
}, { additionalProperties: false, $id: 'ExecuteRequest', description: 'A script to run, and what it gets' })
export type ExecuteRequest = Static<typeof ExecuteRequest>

const Backend = stringEnum(BACKEND_NAMES, { $id: 'Backend', description: 'A sandbox backend: nsjail (namespaces, seccomp, cgroups), unshare (namespaces only) or direct (no isolation; only when the operator permits it)' })
const ranBy = ref(Backend)

const Output = {
  stdout: Type.String({ description: 'Everything the script printed to stdout (capped)' }),
  stderr: Type.String({ description: 'Everything the script printed to stderr (capped)' }),
  stdoutTruncated: Type.Optional(Type.Boolean({ description: 'true when stdout went over LIMIT_OUTPUT_BYTES and was cut; absent otherwise' })),
  stderrTruncated: Type.Optional(Type.Boolean({ description: 'true when stderr went over LIMIT_OUTPUT_BYTES and was cut; absent otherwise' }))
}

export const ReturnedFile = Type.Object({
  path: Type.String({ description: `Its path under ${OUTPUT_DIR}/ (open figures: figures/<number>.png)` }),
  size: Type.Integer({ description: 'Its size in bytes' }),
  mediaType: Type.String({ description: 'From its extension (image/png, text/csv, ...; else application/octet-stream), never from its content' }),
  encoding: ref(Encoding),
  content: Type.String({ description: 'Its content, as `encoding` says' })
}, { $id: 'ReturnedFile', description: 'A file the script returned' })

export const FileLeftOut = Type.Object({
  path: Type.String({ description: `Its path under ${OUTPUT_DIR}/ (bytes that are not UTF-8 shown as \\xNN)` }),
  reason: Type.String({ description: 'Why it did not come back: a symbolic link (not followed), a FIFO, a socket, a device, a hard link, not readable, a name that cannot travel' })
}, { $id: 'FileLeftOut', description: 'A file under output/ that was not returned' })

// Timings travel in the Server-Timing header (queue;dur=…, sandbox;dur=…), not in the body.
export const ExecuteResult = Type.Object({
  result: Type.Unknown({ description: 'main()\'s return value, as JSON' }),
  files: Type.Optional(Type.Array(ref(ReturnedFile), { description: `The regular files the script left under ${OUTPUT_DIR}/ (OUTPUT_DIR in its environment) and its open figures that it never saved, as PNG; absent when none` })),
  filesLeftOut: Type.Optional(Type.Array(ref(FileLeftOut), { description: `What under ${OUTPUT_DIR}/ was not returned, and why; absent when nothing` })),
  ...Output,
  backend: ranBy
}, { $id: 'ExecuteResult', description: 'main() returned JSON: its value, what the script printed and returned, and the backend that ran it' })
export type ExecuteResult = Static<typeof ExecuteResult>

const ErrorCode = stringEnum(ERROR_CODES, {
  $id: 'ErrorCode',
  description: `What went wrong, for a program to act on:\n${ERROR_CODES.map(c => `- ${c} (${ERRORS[c].status}): ${ERRORS[c].meaning}`).join('\n')}`
})

export const ErrorReply = Type.Object({
  statusCode: Type.Integer({ description: 'The HTTP status, again' }),
  error: Type.String({ description: 'The status\'s name (Bad Request, Unprocessable Entity, ...)' }),
  code: ref(ErrorCode),
  message: Type.String({ description: 'What went wrong, for a person: it names the field, the limit or the exception' }),
  requestId: Type.String({ description: 'The request id, as in the X-Request-Id header: quote it when reporting a problem' }),
  // Present whenever the script ran:
  stdout: Type.Optional(Output.stdout),
  stderr: Type.Optional(Output.stderr),
  stdoutTruncated: Output.stdoutTruncated,
  stderrTruncated: Output.stderrTruncated,
  backend: Type.Optional(ranBy),
  // What helps debug, by error:
  exception: Type.Optional(Type.String({ description: 'MAIN_RAISED: the exception type' })),
  traceback: Type.Optional(Type.String({ description: 'MAIN_RAISED: the user\'s frames only' })),
  signature: Type.Optional(Type.String({ description: 'MAIN_SIGNATURE: main\'s signature, e.g. main(a, b)' })),
  line: Type.Optional(Type.Integer({ description: 'SYNTAX_ERROR: line (1-based)' })),
  column: Type.Optional(Type.Integer({ description: 'SYNTAX_ERROR: column (1-based)' })),
  outputFiles: Type.Optional(Type.Integer({ description: 'OUTPUT_TOO_LARGE: the files the script left under output/, figures included (counted up to one past the limit)' })),
  outputBytes: Type.Optional(Type.Integer({ description: 'OUTPUT_TOO_LARGE: their bytes' })),
  signal: Type.Optional(Type.String({ description: 'CRASHED: the signal that ended the run' })),
  exitCode: Type.Optional(Type.Integer({ description: 'CRASHED: the exit status without a result' })),
  sessionEnded: Type.Optional(Type.Boolean({ description: 'A session\'s call only: true when this call ended its session (a limit, or its process died): its state is gone, and later calls get 410 SESSION_ENDED' })),
  endedBy: Type.Optional(Type.String({ description: 'SESSION_ENDED: what ended it (CLOSED: deleted, idle or past its lifetime; else the code of the call that ended it)' }))
}, { $id: 'ErrorReply', description: 'Every error reply, whatever its status: `code` says what went wrong; when the script ran, its output and the backend come too' })
export type ErrorReply = Static<typeof ErrorReply>

const Probe = Type.Object({
  backend: ref(Backend),
  ok: Type.Boolean({ description: 'The probe passed: the canaries proved every promise of the backend' }),
  reason: Type.Optional(Type.String({ description: 'Why it failed, or why the latest re-probe was inconclusive' })),
  inconclusive: Type.Optional(Type.Boolean({ description: 'Present when the latest probe proved nothing either way (a canary ran out of time: a busy host). ok and features stay those of the last conclusive probe, and so does readiness; the re-probe is retried within 10 s. At start, an inconclusive probe is not ready (fail closed)' })),
  features: Type.Record(Type.String(), Type.Union([Type.String(), Type.Number(), Type.Boolean()]), { description: 'The isolation features in force (of the last conclusive probe)' })
}, { $id: 'Probe', description: 'A backend\'s latest probe' })

export const Readiness = Type.Object({
  status: stringEnum(['ready', 'unavailable', 'shutting-down'], { description: 'shutting-down: SIGTERM was received; runs in flight finish, new ones are refused 503 SHUTTING_DOWN' }),
  backend: Type.Union([ref(Backend), Type.Null()], { description: 'The backend that runs scripts; null: none passes its probe' }),
  auth: stringEnum(['api-keys', 'open'], { description: 'api-keys: /execute needs `Authorization: Bearer <key>` (API_KEYS_FILE); open: anyone who reaches the port runs code' }),
  warning: Type.Optional(Type.String({ description: 'Present when the backend runs scripts without isolation (direct)' })),
  probes: Type.Array(ref(Probe), { description: 'Every permitted backend\'s probe, strongest first' })
}, { $id: 'Readiness', description: 'Whether scripts can run, with which backend, and why not' })
export type Readiness = Static<typeof Readiness>

const SESSION_ID = 'Its id, `<instance>.<32 random characters>`: unguessable; the only way to reach it, and only with the API key (or from the address) that opened it'

export const SessionInfo = Type.Object({
  id: Type.String({ description: SESSION_ID }),
  instance: Type.String({ description: 'The instance that holds it (INSTANCE_ID): every call must reach this instance' }),
  backend: ref(Backend),
  createdAt: Type.String({ format: 'date-time', description: 'When it was opened' }),
  lastCallAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'When its last call ended; null before its first' }),
  expiresAt: Type.String({ format: 'date-time', description: 'When it ends unless called again: its idle timeout from its last call, at most its lifetime' }),
  idleTimeoutMs: Type.Integer({ description: 'SESSION_IDLE_MS: it ends after this long without a call' }),
  lifetimeMs: Type.Integer({ description: 'SESSION_LIFETIME_MS: it ends this long after it was opened' }),
  calls: Type.Integer({ description: 'Calls it has run' }),
  running: Type.Boolean({ description: 'A call is running now (a session runs one at a time)' }),
  memoryMiB: Type.Integer({ description: 'Anonymous memory of its processes after its last call (MiB): what its state holds' }),
  memoryLimitMiB: Type.Integer({ description: 'SESSION_MEMORY_MB: its ceiling for its whole life' })
}, { $id: 'SessionInfo', description: 'A session: a Python that keeps its globals, imports and files between calls, in a sandbox of its own' })
export type SessionInfo = Static<typeof SessionInfo>

export const Health = Type.Object({ status: stringEnum(['ok']) }, { $id: 'Health', description: 'The process answers' })

/** Every named schema, registered once with the app (app.ts): the document's components. */
export const SCHEMAS = [Encoding, Backend, FileIn, RunLimits, ExecuteRequest, ReturnedFile, FileLeftOut, ExecuteResult, ErrorCode, ErrorReply, Probe, Readiness, Health, SessionInfo]
