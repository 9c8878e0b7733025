import t from 'tap'
import { Slots } from '../../src/slots.js'

t.test('grants distinct slots up to the size', async t => {
  const slots = new Slots(2, 0, 1000)
  const a = await slots.acquire()
  const b = await slots.acquire()
  t.not(a.slot, b.slot)
  t.equal(slots.running, 2)
})
