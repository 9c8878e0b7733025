import t from 'tap'
import { getEventListeners } from 'node:events'
import { Slots, type Lease } from '../../src/slots.js'

const LONG_MS = 10_000

/** Resolves to 'pending' if `promise` has not settled after the microtask queue drains. */
async function state<T> (promise: Promise<T>): Promise<'pending' | 'fulfilled' | 'rejected'> {
  const pending = Symbol('pending')
  const settled = await Promise.race([
    promise.then(() => 'fulfilled' as const, () => 'rejected' as const),
    new Promise<typeof pending>(resolve => setImmediate(() => resolve(pending)))
  ])
  return settled === pending ? 'pending' : settled
}

t.test('grants distinct slots 0..size-1 up to the size without queueing', async t => {
  for (const size of [1, 2, 5]) {
    const slots = new Slots(size, 0, LONG_MS)
    const leases: Lease[] = []
    for (let i = 0; i < size; i++) leases.push(await slots.acquire())
    t.same(leases.map(l => l.slot).sort((a, b) => a - b), Array.from({ length: size }, (_, i) => i), `size ${size}`)
    t.equal(slots.running, size, `size ${size}: all running`)
    t.equal(slots.queued, 0, `size ${size}: none queued`)
  }
})

t.test('hands out the least recently used free slot (a warm sandbox cleans up while others serve)', async t => {
  const slots = new Slots(3, 0, LONG_MS)
  const order: number[] = []
  for (let i = 0; i < 6; i++) {
    const lease = await slots.acquire()
    order.push(lease.slot)
    lease.release()
  }
  t.same(order, [0, 1, 2, 0, 1, 2], 'one client in turn: every slot in turn, not the same slot again')
  const a = await slots.acquire()
  const b = await slots.acquire()
  b.release()
  a.release()
  t.equal((await slots.acquire()).slot, 2, 'the slot free the longest comes first')
})

t.test('queues up to queueSize once every slot is taken', async t => {
  const slots = new Slots(1, 2, LONG_MS)
  const held = await slots.acquire()
  const waiters = [slots.acquire(), slots.acquire()]
  t.equal(slots.queued, 2)
  for (const w of waiters) t.equal(await state(w), 'pending')
  held.release()
  const first = await waiters[0]
  first!.release()
  const second = await waiters[1]
  second!.release()
  t.equal(slots.running, 0)
})

t.test('BUSY when every slot is taken and the queue is full', async t => {
  const table = [
    { size: 1, queueSize: 0 },
    { size: 2, queueSize: 1 },
    { size: 1, queueSize: 3 }
  ]
  for (const { size, queueSize } of table) {
    const slots = new Slots(size, queueSize, LONG_MS)
    for (let i = 0; i < size; i++) await slots.acquire()
    const waiting = Array.from({ length: queueSize }, () => slots.acquire())
    await t.rejects(slots.acquire(), { code: 'BUSY', statusCode: 503 }, `size ${size}, queue ${queueSize}`)
    t.equal(slots.queued, queueSize, 'the refused request did not join the queue')
    slots.drain()
    for (const w of waiting) await t.rejects(w, { code: 'BUSY' })
  }
})

t.test('BUSY after waiting longer than queueTimeoutMs, and the waiter leaves the queue', async t => {
  const slots = new Slots(1, 2, 30)
  const held = await slots.acquire()
  const started = performance.now()
  const late = slots.acquire()
  const second = slots.acquire()
  await t.rejects(late, { code: 'BUSY' })
  t.ok(performance.now() - started >= 25, 'not before the timeout')
  await t.rejects(second, { code: 'BUSY' })
  t.equal(slots.queued, 0)
  held.release()
  t.equal(slots.running, 0, 'the slot went back to the free list, not to a timed-out waiter')
  const again = await slots.acquire()
  t.equal(again.slot, held.slot)
})

t.test('a waiter that times out leaves the queue without taking the place of another', async t => {
  const slots = new Slots(1, 2, 40)
  const held = await slots.acquire()
  const first = slots.acquire()
  await new Promise(resolve => setTimeout(resolve, 20))
  const second = slots.acquire()
  await t.rejects(first, { code: 'BUSY' })
  t.equal(slots.queued, 1, 'only the timed-out waiter left')
  held.release()
  const granted = await second
  t.equal(granted.slot, held.slot, 'the remaining waiter got the slot')
  granted.release()
})

t.test('release hands the slot to the next waiter in arrival order', async t => {
  const slots = new Slots(1, 3, LONG_MS)
  const held = await slots.acquire()
  const order: number[] = []
  const waiters = [0, 1, 2].map(i => slots.acquire().then(lease => { order.push(i); return lease }))
  held.release()
  const first = await waiters[0]!
  t.equal(first.slot, held.slot, 'the released slot, not a new one')
  t.equal(slots.running, 1, 'the slot never became free in between')
  t.equal(slots.queued, 2)
  t.equal(await state(waiters[1]!), 'pending', 'only one waiter is granted per release')
  first.release()
  const second = await waiters[1]!
  second.release()
  const third = await waiters[2]!
  third.release()
  t.same(order, [0, 1, 2])
  t.equal(slots.running, 0)
})

t.test('double release is harmless: a slot released twice is not granted twice', async t => {
  t.test('with waiters', async t => {
    const slots = new Slots(1, 2, LONG_MS)
    const held = await slots.acquire()
    const a = slots.acquire()
    const b = slots.acquire()
    held.release()
    held.release()
    const leaseA = await a
    t.equal(await state(b), 'pending', 'the second release granted nothing')
    t.equal(slots.running, 1)
    leaseA.release()
    const leaseB = await b
    t.equal(leaseB.slot, leaseA.slot)
    leaseB.release()
  })
  t.test('without waiters', async t => {
    const slots = new Slots(2, 0, LONG_MS)
    const a = await slots.acquire()
    const b = await slots.acquire()
    a.release()
    a.release()
    t.equal(slots.running, 1, 'the slot was freed once')
    const c = await slots.acquire()
    t.equal(c.slot, a.slot)
    await t.rejects(slots.acquire(), { code: 'BUSY' }, 'the doubly released slot is not free a second time')
    b.release()
    c.release()
  })
})

t.test('drain() rejects every waiter with BUSY and leaves running leases alone', async t => {
  const slots = new Slots(1, 3, LONG_MS)
  const held = await slots.acquire()
  const waiters = [slots.acquire(), slots.acquire(), slots.acquire()]
  slots.drain()
  for (const w of waiters) await t.rejects(w, { code: 'BUSY' })
  t.equal(slots.queued, 0)
  t.equal(slots.running, 1)
  held.release()
  t.equal(slots.running, 0, 'the slot is free again after drain')
})

t.test('drain() with nobody waiting does nothing', async t => {
  const slots = new Slots(1, 1, LONG_MS)
  slots.drain()
  const lease = await slots.acquire()
  t.equal(lease.slot, 0)
})

/** Timers pending in this process (a waiter's queue timeout is one). */
const timers = (): number => process.getActiveResourcesInfo().filter(r => r === 'Timeout').length

t.test('a waiter whose client leaves leaves the queue at once, its timer cleared, and never gets a slot', async t => {
  const slots = new Slots(1, 2, LONG_MS)
  const held = await slots.acquire()
  const client = new AbortController()
  const before = timers()
  const leaving = slots.acquire(undefined, client.signal)
  const staying = slots.acquire()
  t.equal(slots.queued, 2)
  t.equal(timers(), before + 2, 'each waiter has a queue timer')
  client.abort()
  t.equal(slots.queued, 1, 'the queue shrank on the abort itself, not at the next grant or timeout')
  t.equal(timers(), before + 1, 'its timer was cleared')
  await t.rejects(leaving, { code: 'CLIENT_CLOSED', statusCode: 499 })
  held.release()
  const granted = await staying
  t.equal(granted.slot, held.slot, 'the slot went to the waiter still there')
  t.equal(slots.running, 1)
  granted.release()
  t.equal(slots.running, 0, 'no slot was kept for the client that left')
})

t.test('a client already gone gets no slot, even a free one', async t => {
  const slots = new Slots(1, 1, LONG_MS)
  await t.rejects(slots.acquire(undefined, AbortSignal.abort()), { code: 'CLIENT_CLOSED' })
  t.equal(slots.running, 0)
  t.equal(slots.queued, 0)
  const lease = await slots.acquire()
  t.equal(lease.slot, 0)
})

t.test('however a waiter leaves the queue, it leaves no abort listener behind', async t => {
  const cases: Array<{ name: string, end: (slots: Slots, held: Lease, waiter: Promise<Lease>) => Promise<unknown> }> = [
    { name: 'granted', end: async (_slots, held, waiter) => { held.release(); (await waiter).release() } },
    { name: 'drained', end: async (slots, _held, waiter) => { slots.drain(); await t.rejects(waiter, { code: 'BUSY' }) } },
    { name: 'timed out', end: async (_slots, _held, waiter) => await t.rejects(waiter, { code: 'BUSY' }) }
  ]
  for (const { name, end } of cases) {
    const slots = new Slots(1, 1, name === 'timed out' ? 10 : LONG_MS)
    const held = await slots.acquire()
    const client = new AbortController()
    const waiter = slots.acquire(undefined, client.signal)
    t.equal(getEventListeners(client.signal, 'abort').length, 1, `${name}: listening while queued`)
    await end(slots, held, waiter)
    t.equal(getEventListeners(client.signal, 'abort').length, 0, `${name}: no listener left`)
    client.abort() // a client leaving afterwards changes nothing
    t.equal(slots.queued, 0, name)
    held.release()
  }
})

t.test('drain(refusal) rejects the waiters with the error it makes', async t => {
  const slots = new Slots(1, 2, LONG_MS)
  const held = await slots.acquire()
  const waiter = slots.acquire()
  slots.drain(() => Object.assign(new Error('shutting down'), { code: 'SHUTTING_DOWN' }))
  await t.rejects(waiter, { code: 'SHUTTING_DOWN' })
  held.release()
})

t.test('the expected wait: refused at once, with the wait as Retry-After, when the queue ahead would take longer than the bound', async t => {
  const slots = new Slots(2, 100, LONG_MS, 1000)
  t.equal(slots.expectedWait, 0, 'no estimate before a run has ended')
  // Runs of about 400 ms: the mean the estimate uses.
  const first = await slots.acquire()
  await new Promise(resolve => setTimeout(resolve, 400))
  first.release()
  const mean = slots.expectedWait * 2 // one queued ahead of nobody: (0 + 1) × mean / 2 slots
  t.ok(mean >= 390 && mean < 1000, `the mean run time is measured (${mean.toFixed(0)} ms)`)
  const running = [await slots.acquire(), await slots.acquire()]
  // Each waiter adds mean / 2 to the next one's wait: waiters are let in while it stays ≤ 1000 ms.
  const admitted: Array<Promise<Lease>> = []
  let refused: (Error & { code?: string, retryAfterS?: number }) | undefined
  while (refused === undefined && admitted.length < 10) {
    const expected = slots.expectedWait
    try {
      if (expected > 1000) await slots.acquire()
      else admitted.push(slots.acquire())
    } catch (error) {
      refused = error as typeof refused
    }
  }
  t.equal(admitted.length, Math.floor(1000 / (mean / 2)), 'waiters queue while their expected wait is within the bound')
  t.match(refused, { code: 'BUSY', message: /the wait for one would be about \d+\.\d s, over the 1000 ms this server lets a request wait \(QUEUE_EXPECTED_WAIT_MS\)/ })
  t.ok((refused?.retryAfterS ?? 0) >= 1, 'Retry-After: the expected wait, in whole seconds')
  t.equal(slots.shed.expected_wait, 1)
  t.equal(slots.queued, admitted.length, 'the refused request took no place')
  for (const lease of running) lease.release()
  for (const waiter of admitted) (await waiter).release()
})

t.test('without a bound on the expected wait (0), only the queue size refuses', async t => {
  const slots = new Slots(1, 3, LONG_MS, 0)
  const held = await slots.acquire()
  await new Promise(resolve => setTimeout(resolve, 50))
  held.release()
  const again = await slots.acquire()
  const waiters = [slots.acquire(), slots.acquire(), slots.acquire()]
  await t.rejects(slots.acquire(), { code: 'BUSY', message: /the wait queue is full/ })
  t.same(slots.shed, { queue_full: 1, expected_wait: 0, queue_timeout: 0, caller_share: 0 })
  again.release()
  for (const waiter of waiters) (await waiter).release()
})

t.test('refusals are counted by reason: a full queue, a wait timed out, a caller over its share', async t => {
  const slots = new Slots(1, 1, 30)
  const held = await slots.acquire({ id: 'a', slots: 1, queue: 1 })
  await t.rejects(slots.acquire({ id: 'b', slots: 1, queue: 1 }), { code: 'BUSY' }, 'timed out in the queue')
  const waiting = slots.acquire({ id: 'a', slots: 1, queue: 1 })
  await t.rejects(slots.acquire({ id: 'a', slots: 1, queue: 1 }), { code: 'CONCURRENCY_LIMITED' })
  await t.rejects(slots.acquire({ id: 'c', slots: 1, queue: 1 }), { code: 'BUSY' }, 'the queue is full')
  await t.rejects(waiting, { code: 'BUSY' })
  t.same(slots.shed, { queue_full: 1, expected_wait: 0, queue_timeout: 2, caller_share: 1 })
  held.release()
})

t.test('equal callers in closed loops share the slots evenly (once two of four took every slot: the freed slot went to the caller with the fewest waiting, always the one whose run had just ended)', async t => {
  const slots = new Slots(2, 64, LONG_MS)
  const runs: Record<string, number> = { a: 0, b: 0, c: 0, d: 0 }
  const until = performance.now() + 200
  const loop = async (id: string): Promise<void> => {
    while (performance.now() < until) {
      const lease = await slots.acquire({ id, slots: 1, queue: 64 })
      runs[id] = (runs[id] ?? 0) + 1
      await new Promise(resolve => setImmediate(resolve))
      lease.release()
      await new Promise(resolve => setImmediate(resolve)) // the client's turn-around before it sends again
    }
  }
  const loops = Object.keys(runs).flatMap(id => Array.from({ length: 4 }, async () => await loop(id)))
  await Promise.all(loops)
  const counts = Object.values(runs)
  t.ok(Math.min(...counts) >= Math.max(...counts) / 2, `every caller ran about as often: ${JSON.stringify(runs)}`)
})
