// Execution slots: at most `size` sandboxes at once, at most `queueSize` requests waiting for
// one, none waiting longer than `queueTimeoutMs`. Beyond that: BUSY, never an unbounded pile-up.
// Free slots are handed out least recently used first: a slot's warm sandbox cleans up after a
// run while the other slots serve. A waiter whose client leaves leaves the queue at once.
import { BusyError, ClientClosedError } from './errors/errors.js'

export interface Lease {
  /** 0 ≤ slot < size: backends map it to a host uid of its own. */
  readonly slot: number
  release: () => void
}

interface Waiter {
  grant: (slot: number) => void
  fail: (error: Error) => void
}

export class Slots {
  private readonly free: number[]
  private readonly waiting: Waiter[] = []

  constructor (readonly size: number, readonly queueSize: number, private readonly queueTimeoutMs: number) {
    this.free = Array.from({ length: size }, (_, i) => i)
  }

  get running (): number { return this.size - this.free.length }
  get queued (): number { return this.waiting.length }

  /** A slot, or BUSY; ClientClosedError once `signal` aborts (the client left), then no slot. */
  async acquire (signal?: AbortSignal): Promise<Lease> {
    if (signal?.aborted === true) throw new ClientClosedError()
    const slot = this.free.shift()
    if (slot !== undefined) return this.lease(slot)
    if (this.waiting.length >= this.queueSize) throw new BusyError()
    return await new Promise<Lease>((resolve, reject) => {
      // However a waiter leaves the queue (granted, timed out, abandoned, drained), it leaves
      // nothing behind: no timer, no listener, no place in the queue.
      const leave = (): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', abandon)
        const index = this.waiting.indexOf(waiter)
        if (index >= 0) this.waiting.splice(index, 1)
      }
      const waiter: Waiter = {
        grant: slot => { leave(); resolve(this.lease(slot)) },
        fail: error => { leave(); reject(error) }
      }
      const abandon = (): void => waiter.fail(new ClientClosedError())
      const timer = setTimeout(() => waiter.fail(new BusyError()), this.queueTimeoutMs)
      signal?.addEventListener('abort', abandon, { once: true })
      this.waiting.push(waiter)
    })
  }

  private lease (slot: number): Lease {
    let released = false
    return {
      slot,
      release: () => {
        if (released) return // release only what was acquired, once
        released = true
        const next = this.waiting.shift()
        if (next !== undefined) next.grant(slot)
        else this.free.push(slot)
      }
    }
  }

  /** Refuses everyone still waiting (server shutdown). */
  drain (): void {
    for (const waiter of this.waiting.splice(0)) waiter.fail(new BusyError())
  }
}
