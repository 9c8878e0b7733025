// The frame protocol between the server and a warm jail's zygote (harness/zygote.py speaks the
// other side; docs/warm.md). Big-endian.
//   server → jail: run id u32, length u32, script bytes; or run id u32, STOP: end that run.
//   jail → server: run id u32, stream u8, length u32, bytes.
// The jail's side is written by a process that user code shared a machine with: every frame is
// checked, and anything unexpected ends the jail (zygote.ts).

export const STDOUT = 1
export const STDERR = 2
export const RESULT = 3
export const STATUS = 4
export const READY = 5
/** A session's jail (harness/session.py): the anonymous memory of its processes, after each call. */
export const MEMORY = 6
export const HEADER_BYTES = 9
/** A request frame with this length stops the run it names. */
export const STOP = 0xFFFFFFFF
/** The zygote relays through a 64 KiB buffer and its status and ready lines are short: a longer
 *  frame is malformed (and would make us buffer without bound). */
export const MAX_PAYLOAD_BYTES = (1 << 20) + 16

export interface Frame {
  runId: number
  stream: number
  payload: Buffer
}

/** The request that starts a run: its id and its script. */
export function scriptFrame (runId: number, script: Buffer): Buffer {
  const header = Buffer.alloc(8)
  header.writeUInt32BE(runId, 0)
  header.writeUInt32BE(script.length, 4)
  return Buffer.concat([header, script])
}

/** The request that ends a run (wall time, client gone). */
export function stopFrame (runId: number): Buffer {
  const frame = Buffer.alloc(8)
  frame.writeUInt32BE(runId, 0)
  frame.writeUInt32BE(STOP, 4)
  return frame
}

/** Cuts the jail's output into frames. Chunks are joined only once a whole frame has arrived: a
 *  frame dribbled in byte by byte costs linear time, not the square of its length. */
export class FrameReader {
  private chunks: Buffer[] = []
  private size = 0

  push (chunk: Buffer): void {
    if (chunk.length === 0) return
    this.chunks.push(chunk)
    this.size += chunk.length
  }

  /** The chunks as one buffer (a copy only when there are several). */
  private joined (): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks, this.size)]
    return this.chunks[0] as Buffer
  }

  /** The next whole frame, or undefined until one has arrived; `malformed` (why) for a length no
   *  zygote sends: the stream cannot be trusted after it. */
  next (): Frame | { malformed: string } | undefined {
    if (this.size < HEADER_BYTES) return undefined
    const head = (this.chunks[0] as Buffer).length >= HEADER_BYTES ? this.chunks[0] as Buffer : this.joined()
    const length = head.readUInt32BE(5)
    if (length > MAX_PAYLOAD_BYTES) return { malformed: `malformed frame (length ${length})` }
    if (this.size < HEADER_BYTES + length) return undefined
    const buffer = this.joined()
    const frame = { runId: buffer.readUInt32BE(0), stream: buffer.readUInt8(4), payload: buffer.subarray(HEADER_BYTES, HEADER_BYTES + length) }
    const rest = buffer.subarray(HEADER_BYTES + length)
    this.chunks = rest.length > 0 ? [rest] : []
    this.size = rest.length
    return frame
  }
}

/** A READY frame's payload: the zygote's resident set and its anonymous part (KiB). */
export function parseReady (payload: Buffer): { rssKiB: number, anonKiB: number } | undefined {
  const match = /^rss (\d+) anon (\d+)$/.exec(payload.toString('latin1'))
  return match === null ? undefined : { rssKiB: Number(match[1]), anonKiB: Number(match[2]) }
}

/** A STATUS frame's payload: how the run's process ended (an exit status or a signal number). */
export function parseStatus (payload: Buffer): { exitCode: number | null, signal: number | null } | undefined {
  const match = /^(exit|signal) (-?\d+)$/.exec(payload.toString('latin1'))
  if (match === null) return undefined
  const n = Number(match[2])
  return match[1] === 'exit' ? { exitCode: n, signal: null } : { exitCode: null, signal: n }
}

/** A MEMORY frame's payload: the session's anonymous memory (KiB). */
export function parseMemory (payload: Buffer): number | undefined {
  const match = /^anon (\d+)$/.exec(payload.toString('latin1'))
  return match === null ? undefined : Number(match[1])
}
