// The zygote's frame protocol, the server's side (src/backends/nsjail/frames.ts).
import t from 'tap'
import { CappedSink } from '../../src/backends/sink.js'
import { FrameReader, HEADER_BYTES, MAX_PAYLOAD_BYTES, STOP, type Frame, parseReady, parseStatus, scriptFrame, stopFrame } from '../../src/backends/nsjail/frames.js'

function frame (runId: number, stream: number, payload: Buffer | string): Buffer {
  const body = Buffer.from(payload)
  const header = Buffer.alloc(HEADER_BYTES)
  header.writeUInt32BE(runId, 0)
  header.writeUInt8(stream, 4)
  header.writeUInt32BE(body.length, 5)
  return Buffer.concat([header, body])
}

t.test('requests: a script frame and a stop frame', async t => {
  t.same(scriptFrame(7, Buffer.from('hi')), Buffer.from([0, 0, 0, 7, 0, 0, 0, 2, 0x68, 0x69]))
  t.same(stopFrame(7), Buffer.from([0, 0, 0, 7, 0xFF, 0xFF, 0xFF, 0xFF]))
  t.equal(STOP, 0xFFFFFFFF)
})

t.test('the reader cuts frames however the bytes arrive', async t => {
  const bytes = Buffer.concat([frame(1, 1, 'hello'), frame(1, 4, 'exit 0'), frame(2, 5, '')])
  for (const size of [1, 2, 5, 9, 100]) {
    const reader = new FrameReader()
    const got: Array<[number, number, string]> = []
    for (let i = 0; i < bytes.length; i += size) {
      reader.push(bytes.subarray(i, i + size))
      for (let f = reader.next() as Frame | undefined; f !== undefined; f = reader.next() as Frame | undefined) got.push([f.runId, f.stream, f.payload.toString()])
    }
    t.same(got, [[1, 1, 'hello'], [1, 4, 'exit 0'], [2, 5, '']], `in pieces of ${size}`)
  }
})

t.test('a length no zygote sends is malformed, before its payload is waited for', async t => {
  const reader = new FrameReader()
  const header = frame(1, 1, '').subarray(0, HEADER_BYTES)
  header.writeUInt32BE(MAX_PAYLOAD_BYTES + 1, 5)
  reader.push(header)
  t.same(reader.next(), { malformed: `malformed frame (length ${MAX_PAYLOAD_BYTES + 1})` })
  const fine = new FrameReader()
  const ok = Buffer.from(header)
  ok.writeUInt32BE(MAX_PAYLOAD_BYTES, 5)
  fine.push(ok)
  t.equal(fine.next(), undefined, 'the longest allowed: waiting for its payload')
})

t.test('status and ready payloads parse strictly', async t => {
  t.same(parseStatus(Buffer.from('exit 0')), { exitCode: 0, signal: null })
  t.same(parseStatus(Buffer.from('exit -1')), { exitCode: -1, signal: null })
  t.same(parseStatus(Buffer.from('signal 9')), { exitCode: null, signal: 9 })
  for (const bad of ['exit', 'exit 0 ', 'signal x', 'fine, thanks', 'exit 0\n']) t.equal(parseStatus(Buffer.from(bad)), undefined, bad)
  t.same(parseReady(Buffer.from('rss 2048 anon 1024')), { rssKiB: 2048, anonKiB: 1024 })
  for (const bad of ['rss 1', 'rss x anon 1', '']) t.equal(parseReady(Buffer.from(bad)), undefined, bad)
})

t.test('a frame dribbled a byte at a time is joined once, in linear time; empty chunks hold nothing', async t => {
  const payload = Buffer.alloc(MAX_PAYLOAD_BYTES - 16, 120)
  const bytes = frame(3, 3, payload)
  const reader = new FrameReader()
  const started = performance.now()
  let early = 0
  for (let i = 0; i < bytes.length; i++) {
    reader.push(bytes.subarray(i, i + 1))
    reader.push(Buffer.alloc(0))
    if (i < bytes.length - 1 && reader.next() !== undefined) early++
  }
  t.equal(early, 0, 'nothing before the whole frame')
  const got = reader.next() as Frame
  t.equal(got.payload.length, payload.length)
  t.equal(reader.next(), undefined)
  t.ok(performance.now() - started < 5000, `1 MiB in 1-byte chunks: ${Math.round(performance.now() - started)} ms (it was quadratic: minutes)`)
  const sink = new CappedSink(4)
  sink.push(Buffer.from('abcd'))
  for (let i = 0; i < 1000; i++) sink.push(Buffer.alloc(0))
  t.equal(sink.truncated, false, 'empty chunks are no overflow')
  t.equal((sink as unknown as { chunks: Buffer[] }).chunks.length, 1, 'and are not kept')
})
