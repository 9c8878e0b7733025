// nsjail's warm pool: per execution slot one long-lived jail whose pid 1 is harness/zygote.py
// (zygote.ts talks to it), started ahead of need and replaced whenever it ends (docs/warm.md).
import type { Limits, RunOutcome, WarmStats } from '../backend.js'
import type { Launch } from '../launch.js'
import { Zygote, type WarmRun, type ZygoteState } from './zygote.js'

/** After a zygote failed to start, requests in its slot run cold for this long. */
const RESTART_BACKOFF_MS = 5_000

export interface WarmPoolOptions {
  /** The jail for a slot: the cold run's arguments with the zygote as the command. Successive
   *  zygotes of a slot (generation 1, 2, ...) overlap during a hand-over. */
  launch: (slot: number, generation: number) => Launch
  limits: Limits
  channelLimit: number
  recycleRuns: number
  memoryByCgroup: boolean
  log?: (message: string) => void
}

/** One serving zygote per slot, started ahead of need and replaced whenever it ends. A slot's
 *  successor starts importing once its zygote has served half of its runs, so recycling costs
 *  requests nothing; at most two zygotes per slot exist at once. */
export class WarmPool {
  private readonly serving = new Map<number, Zygote>()
  private readonly successors = new Map<number, Zygote>()
  private readonly generations = new Map<number, number>()
  private readonly failedAt = new Map<number, number>()
  private closed = false
  /** Why the last zygote ended, for the probe's report. */
  lastFailure = ''
  private readonly runs = { ready: 0, waited: 0, cold: 0 }

  constructor (private readonly options: WarmPoolOptions) {}

  get stats (): WarmStats {
    const zygotes: Record<ZygoteState, number> = { starting: 0, ready: 0, running: 0, cleaning: 0, dead: 0 }
    for (const z of [...this.serving.values(), ...this.successors.values()]) zygotes[z.state]++
    return { runs: { ...this.runs }, zygotes }
  }

  private create (slot: number): Zygote {
    const generation = (this.generations.get(slot) ?? 0) + 1
    this.generations.set(slot, generation)
    return new Zygote(this.options.launch(slot, generation), this.options.limits, this.options.channelLimit, dead => this.ended(slot, dead))
  }

  private ended (slot: number, dead: Zygote): void {
    this.options.log?.(`warm sandbox of slot ${slot} ended after ${dead.runs} runs: ${dead.reason}`)
    if (this.successors.get(slot) === dead) {
      this.successors.delete(slot)
      return
    }
    if (this.serving.get(slot) !== dead) return
    this.serving.delete(slot)
    this.lastFailure = dead.reason
    if (!dead.started) this.failedAt.set(slot, Date.now())
    if (this.closed || !dead.started) return // one that could not start waits for a request after the back-off
    const successor = this.successors.get(slot)
    this.successors.delete(slot)
    this.serving.set(slot, successor ?? this.create(slot))
  }

  private start (slot: number): Zygote {
    const zygote = this.create(slot)
    this.serving.set(slot, zygote)
    return zygote
  }

  /** Start a zygote for every slot that has none. */
  prewarm (slots: number): void {
    for (let slot = 0; slot < slots && !this.closed; slot++) if (!this.serving.has(slot)) this.start(slot)
  }

  /** A ready zygote for the slot, waiting for one that is starting; undefined: run cold. */
  async acquire (slot: number): Promise<Zygote | undefined> {
    if (this.closed) return undefined
    let zygote = this.serving.get(slot)
    if (zygote === undefined) {
      if (Date.now() - (this.failedAt.get(slot) ?? 0) < RESTART_BACKOFF_MS) return undefined
      zygote = this.start(slot)
    }
    // Ready, and still ready: the frame that ends a zygote may come in the chunk that said ready.
    return await zygote.whenReady() && zygote.state === 'ready' ? zygote : undefined
  }

  /** After a run: recycle a zygote that served its quota (its successor takes over), or start
   *  the successor once half the quota is served. */
  release (slot: number, zygote: Zygote): void {
    const { recycleRuns } = this.options
    const due = (): boolean => zygote.runs >= recycleRuns / 2 && this.serving.get(slot) === zygote && !this.successors.has(slot) && !this.closed
    if (zygote.runs >= recycleRuns) {
      zygote.kill(`recycled after ${zygote.runs} runs`)
    } else if (due()) {
      // On a later turn of the event loop: starting nsjail forks the server (8-18 ms measured),
      // which held up the reply of the run that made it due.
      setImmediate(() => { if (due()) this.successors.set(slot, this.create(slot)) })
    }
  }

  async run (slot: number, request: WarmRun): Promise<RunOutcome | undefined> {
    const before = this.serving.get(slot)
    const waited = before === undefined || before.state === 'starting'
    const zygote = await this.acquire(slot)
    if (zygote === undefined) {
      this.runs.cold++
      return undefined
    }
    try {
      const outcome = await zygote.run(request, this.options.memoryByCgroup)
      this.runs[waited ? 'waited' : 'ready']++
      return outcome
    } finally { // acquire() hands out a ready zygote, and nothing ends it before run() (no await between)
      this.release(slot, zygote)
    }
  }

  /** Kill every zygote; resolves once their jails have exited (at most a few seconds). */
  async close (): Promise<void> {
    this.closed = true
    const zygotes = [...this.serving.values(), ...this.successors.values()]
    this.serving.clear()
    this.successors.clear()
    for (const zygote of zygotes) zygote.kill('pool closed')
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.all(zygotes.map(async z => await z.exited)),
      new Promise(resolve => { timer = setTimeout(resolve, 3000) })
    ])
    clearTimeout(timer)
  }
}
