// Execution slots: at most `size` sandboxes at once, at most `queueSize` requests waiting for
// one, none waiting longer than `queueTimeoutMs`. Beyond that: BUSY, never an unbounded pile-up.
// Shared between callers (tenants): each holds at most its `slots` at once, so with a share below
// the whole one caller never holds every slot while another waits, and has at most its `queue`
// waiting (beyond: CONCURRENCY_LIMITED, its own doing). The queue is used by whoever comes while it
// has room; when it is full, a newcomer takes the place of the newest waiter of the caller with
// the most waiting, if that is at least two more than its own (that waiter is refused
// CONCURRENCY_LIMITED): so callers together, not only one, cannot keep another out. A freed slot
// goes to the waiting caller that holds the fewest. Free slots are handed
// out least recently used first: a slot's warm sandbox cleans up after a run while the other
// slots serve. A waiter whose client leaves leaves the queue at once.
import { BusyError, ClientClosedError, ConcurrencyLimitedError } from './errors/errors.js'

export interface Lease {
  /** 0 ≤ slot < size: backends map it to a host uid of its own. */
  readonly slot: number
  release: () => void
}

/** Who asks, and its share. */
export interface Share {
  /** Callers with the same id share one count. */
  readonly id: string
  /** Slots it may hold at once (at least 1). */
  readonly slots: number
  /** Requests it may have waiting. */
  readonly queue: number
}

/** A share as large as the whole: one caller may hold every slot and fill the queue. */
export const WHOLE: Share = { id: '', slots: Infinity, queue: Infinity }

interface Waiter {
  share: Share
  grant: (slot: number) => void
  fail: (error: Error) => void
}

interface Holding { running: number, waiting: number }

export class Slots {
  private readonly free: number[]
  private readonly waiting: Waiter[] = []
  private readonly holdings = new Map<string, Holding>()

  constructor (readonly size: number, readonly queueSize: number, private readonly queueTimeoutMs: number) {
    this.free = Array.from({ length: size }, (_, i) => i)
  }

  get running (): number { return this.size - this.free.length }
  get queued (): number { return this.waiting.length }

  private holding (id: string): Holding {
    let holding = this.holdings.get(id)
    if (holding === undefined) this.holdings.set(id, holding = { running: 0, waiting: 0 })
    return holding
  }

  /** Forget a caller that holds nothing (the map stays as small as the callers of the moment). */
  private settle (id: string, holding: Holding): void {
    if (holding.running === 0 && holding.waiting === 0) this.holdings.delete(id)
  }

  /** A slot for `share`'s caller; BUSY when the queue is full; CONCURRENCY_LIMITED when the caller
   *  already has its share waiting; ClientClosedError once `signal` aborts (the client left). */
  async acquire (share: Share = WHOLE, signal?: AbortSignal): Promise<Lease> {
    if (signal?.aborted === true) throw new ClientClosedError()
    const holding = this.holding(share.id)
    if (holding.running < share.slots) {
      const slot = this.free.shift()
      if (slot !== undefined) return this.lease(share, slot)
    }
    if (holding.waiting >= share.queue && holding.running + holding.waiting > 0) {
      throw new ConcurrencyLimitedError(holding.running, holding.waiting)
    }
    if (this.waiting.length >= this.queueSize) {
      const displaced = this.displaceable(share.id, holding.waiting)
      if (displaced === undefined) {
        this.settle(share.id, holding)
        throw new BusyError()
      }
      const theirs = this.holdings.get(displaced.share.id) as Holding
      displaced.fail(new ConcurrencyLimitedError(theirs.running, theirs.waiting))
    }
    holding.waiting++
    return await new Promise<Lease>((resolve, reject) => {
      // However a waiter leaves the queue (granted, timed out, abandoned, drained), it leaves
      // nothing behind: no timer, no listener, no place in the queue, no count.
      const leave = (): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', abandon)
        const index = this.waiting.indexOf(waiter)
        if (index >= 0) this.waiting.splice(index, 1)
        holding.waiting--
      }
      const waiter: Waiter = {
        share,
        grant: slot => { leave(); resolve(this.lease(share, slot)) },
        fail: error => { leave(); this.settle(share.id, holding); reject(error) }
      }
      const abandon = (): void => waiter.fail(new ClientClosedError())
      const timer = setTimeout(() => waiter.fail(new BusyError()), this.queueTimeoutMs)
      signal?.addEventListener('abort', abandon, { once: true })
      this.waiting.push(waiter)
    })
  }

  private lease (share: Share, slot: number): Lease {
    const holding = this.holding(share.id)
    holding.running++
    let released = false
    return {
      slot,
      release: () => {
        if (released) return // release only what was acquired, once
        released = true
        holding.running--
        this.settle(share.id, holding)
        this.free.push(slot)
        this.grantWaiting()
      }
    }
  }

  /** The newest waiter of the caller (not `id`) with the most waiting, when that is at least two
   *  more than `mine`: after the exchange neither has more than one over the other. */
  private displaceable (id: string, mine: number): Waiter | undefined {
    let chosen: Waiter | undefined
    let most = mine + 1
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      const waiter = this.waiting[i] as Waiter
      const theirs = (this.holdings.get(waiter.share.id) as Holding).waiting // a waiter's caller holds it
      if (waiter.share.id !== id && theirs > most) {
        chosen = waiter
        most = theirs
      }
    }
    return chosen
  }

  /** Free slots to waiters: each to the one whose caller holds the fewest running (then the fewest
   *  waiting), the longest waiting first among equals, never beyond a caller's share. */
  private grantWaiting (): void {
    while (this.free.length > 0) {
      let next: Waiter | undefined
      let fewest: Holding = { running: Infinity, waiting: Infinity }
      for (const waiter of this.waiting) {
        const holding = this.holdings.get(waiter.share.id) as Holding // a waiter's caller holds it
        const fewer = holding.running < fewest.running || (holding.running === fewest.running && holding.waiting < fewest.waiting)
        if (holding.running < waiter.share.slots && fewer) {
          next = waiter
          fewest = holding
        }
      }
      if (next === undefined) return
      next.grant(this.free.shift() as number)
    }
  }

  /** Refuses everyone still waiting (server shutdown). */
  drain (): void {
    for (const waiter of this.waiting.splice(0)) waiter.fail(new BusyError())
  }
}
