// Execution slots: at most `size` sandboxes at once, at most `queueSize` requests waiting for
// one, none waiting longer than `queueTimeoutMs`. Beyond that: BUSY, never an unbounded pile-up.
// Shared between callers (tenants): each holds at most its `slots` at once, so with a share below
// the whole one caller never holds every slot while another waits, and has at most its `queue`
// waiting (beyond: CONCURRENCY_LIMITED, its own doing). The queue is used by whoever comes while it
// has room; when it is full, a newcomer takes the place of the newest waiter of the caller with
// the most waiting, if that is at least two more than its own (that waiter is refused
// CONCURRENCY_LIMITED): so callers together, not only one, cannot keep another out. A freed slot
// goes to the waiting caller that holds the fewest, among equals the one served least recently. Free slots are handed
// out least recently used first: a slot's warm sandbox cleans up after a run while the other
// slots serve. A waiter whose client leaves leaves the queue at once. With an expected-wait bound,
// a request that would wait longer (the waiters ahead of it times the recent mean run, over the
// slots) is refused at once rather than queued: a burst of short runs queues, a flood of long
// ones is shed early.
import { BusyError, ClientClosedError, ConcurrencyLimitedError, ExpectedWaitError } from './errors/errors.js'

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

interface Holding {
  running: number
  waiting: number
  /** When it was last given a slot (a count of grants); 0: not since it last held nothing. */
  servedAt: number
}

/** Why a request was refused: the queue full, the expected wait too long, its wait timed out, its
 *  caller's share taken. */
export type SlotShedReason = 'queue_full' | 'expected_wait' | 'queue_timeout' | 'caller_share'

/** The weight of the latest run in the mean run time: about the last ten runs count. */
const MEAN_WEIGHT = 0.2

export class Slots {
  private readonly free: number[]
  private readonly waiting: Waiter[] = []
  private readonly holdings = new Map<string, Holding>()
  /** Requests refused so far, by reason (read by the metrics). */
  readonly shed: Record<SlotShedReason, number> = { queue_full: 0, expected_wait: 0, queue_timeout: 0, caller_share: 0 }
  /** A moving mean of how long a slot is held (ms); undefined until a run has ended. */
  private meanRunMs: number | undefined
  /** Slots handed out so far: the clock of Holding.servedAt. */
  private grants = 0

  /** `expectedWaitMs`: refuse at once a request that would wait longer (0: never). */
  constructor (readonly size: number, readonly queueSize: number, private readonly queueTimeoutMs: number, private readonly expectedWaitMs = 0) {
    this.free = Array.from({ length: size }, (_, i) => i)
  }

  /** How long a request queued now would wait, from the recent mean run time (0 before any). */
  get expectedWait (): number {
    return this.meanRunMs === undefined ? 0 : (this.waiting.length + 1) * this.meanRunMs / this.size
  }

  get running (): number { return this.size - this.free.length }
  get queued (): number { return this.waiting.length }

  private holding (id: string): Holding {
    let holding = this.holdings.get(id)
    if (holding === undefined) this.holdings.set(id, holding = { running: 0, waiting: 0, servedAt: 0 })
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
      this.shed.caller_share++
      throw new ConcurrencyLimitedError(holding.running, holding.waiting)
    }
    const expected = this.expectedWait
    if (this.expectedWaitMs > 0 && expected > this.expectedWaitMs) {
      this.settle(share.id, holding)
      this.shed.expected_wait++
      throw Object.assign(new ExpectedWaitError((expected / 1000).toFixed(1), this.expectedWaitMs), { retryAfterS: Math.ceil(expected / 1000) })
    }
    if (this.waiting.length >= this.queueSize) {
      const displaced = this.displaceable(share.id, holding.waiting)
      if (displaced === undefined) {
        this.settle(share.id, holding)
        this.shed.queue_full++
        throw new BusyError()
      }
      const theirs = this.holdings.get(displaced.share.id) as Holding
      this.shed.caller_share++
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
      const timer = setTimeout(() => {
        this.shed.queue_timeout++
        waiter.fail(new BusyError())
      }, this.queueTimeoutMs)
      signal?.addEventListener('abort', abandon, { once: true })
      this.waiting.push(waiter)
    })
  }

  private lease (share: Share, slot: number): Lease {
    const holding = this.holding(share.id)
    holding.running++
    holding.servedAt = ++this.grants
    let released = false
    const leasedAt = performance.now()
    return {
      slot,
      release: () => {
        if (released) return // release only what was acquired, once
        released = true
        const heldMs = performance.now() - leasedAt
        this.meanRunMs = this.meanRunMs === undefined ? heldMs : this.meanRunMs + MEAN_WEIGHT * (heldMs - this.meanRunMs)
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

  /** Free slots to waiters: each to the one whose caller holds the fewest running, among equals
   *  the caller served least recently (then its longest waiting), never beyond a caller's share.
   *  (Once "then the fewest waiting": the caller whose run had just ended has one fewer waiting
   *  until its client sends again, so with three equal callers or more two of them kept every
   *  slot; found by the load command.) */
  private grantWaiting (): void {
    while (this.free.length > 0) {
      let next: Waiter | undefined
      let best: Holding | undefined
      for (const waiter of this.waiting) { // in arrival order: a caller's first waiter is its oldest
        const holding = this.holdings.get(waiter.share.id) as Holding // a waiter's caller holds it
        const better = best === undefined || holding.running < best.running || (holding.running === best.running && holding.servedAt < best.servedAt)
        if (holding.running < waiter.share.slots && better) {
          next = waiter
          best = holding
        }
      }
      if (next === undefined) return
      next.grant(this.free.shift() as number)
    }
  }

  /** Refuses everyone still waiting (server shutdown) with the error `refusal` makes. */
  drain (refusal: () => Error = () => new BusyError()): void {
    for (const waiter of this.waiting.splice(0)) waiter.fail(refusal())
  }
}
