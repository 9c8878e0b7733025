// Execution slots: at most `size` sandboxes at once, at most `queueSize` requests waiting for
// one, none waiting longer than `queueTimeoutMs`. Beyond that: BUSY, never an unbounded pile-up.
// Free slots are handed out least recently used first: a slot's warm sandbox cleans up after a
// run while the other slots serve.
import { BusyError } from './errors.js'

export interface Lease {
  /** 0 ≤ slot < size: backends map it to a host uid of its own. */
  readonly slot: number
  release: () => void
}

interface Waiter {
  grant: (slot: number) => void
  reject: (error: Error) => void
  timer: NodeJS.Timeout
}

export class Slots {
  private readonly free: number[]
  private readonly waiting: Waiter[] = []

  constructor (readonly size: number, readonly queueSize: number, private readonly queueTimeoutMs: number) {
    this.free = Array.from({ length: size }, (_, i) => i)
  }

  get running (): number { return this.size - this.free.length }
  get queued (): number { return this.waiting.length }

  async acquire (): Promise<Lease> {
    const slot = this.free.shift()
    if (slot !== undefined) return this.lease(slot)
    if (this.waiting.length >= this.queueSize) throw new BusyError()
    return await new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        grant: slot => { clearTimeout(waiter.timer); resolve(this.lease(slot)) },
        reject,
        timer: setTimeout(() => {
          this.waiting.splice(this.waiting.indexOf(waiter), 1)
          reject(new BusyError())
        }, this.queueTimeoutMs)
      }
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
    for (const waiter of this.waiting.splice(0)) {
      clearTimeout(waiter.timer)
      waiter.reject(new BusyError())
    }
  }
}
