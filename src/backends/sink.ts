/** Collects a stream's bytes up to `limit`; the rest is dropped and flagged. `onOverflow` hears the
 *  first byte over (the result channel's cap ends the run). */
export class CappedSink {
  private readonly chunks: Buffer[] = []
  private size = 0
  truncated = false

  constructor (private readonly limit: number, private readonly onOverflow?: () => void) {}

  push (chunk: Buffer): void {
    // An empty chunk holds nothing, but kept it would hold its buffer: a jail sending empty frames
    // without end would grow the list without bound (found by a review).
    if (chunk.length === 0) return
    const room = this.limit - this.size
    if (chunk.length > room) {
      if (room > 0) this.chunks.push(chunk.subarray(0, room))
      this.size = this.limit
      if (!this.truncated) {
        this.truncated = true
        this.onOverflow?.()
      }
      return
    }
    this.chunks.push(chunk)
    this.size += chunk.length
  }

  bytes (): Buffer {
    return Buffer.concat(this.chunks)
  }
}
