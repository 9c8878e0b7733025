// The parts of access control that need no server: keys (made, hashed, parsed, found), bearer
// tokens, a request's limits within the ceilings, and the slots' per-caller shares.
import t from 'tap'
import { bearerToken, findKey, hashKey, newKey, parseKeys, tokenMatches } from '../../src/access/keys.js'
import { KEYGEN_USAGE, keygen } from '../../src/access/keygen.js'
import { resolveLimits } from '../../src/access/limits.js'
import { limitsFrom } from '../../src/backends/backend.js'
import { ceilingsOf, loadConfig, trustProxyOf } from '../../src/config.js'
import { Slots } from '../../src/slots.js'

const config = loadConfig({})
const server = ceilingsOf(config)

t.test('a new key: psk_ and 256 random bits; its line holds only the SHA-256', async t => {
  const { key, line } = newKey('ci-bot')
  t.match(key, /^psk_[A-Za-z0-9_-]{43}$/)
  t.equal(line, `ci-bot:${hashKey(key)}`)
  t.notMatch(line, key.slice(4))
  t.not(newKey('a').key, newKey('a').key)
  t.throws(() => newKey('bad name'), /a key's name/)
  t.throws(() => newKey('x'.repeat(65)), /a key's name/)
})

t.test('the keys file: lines, comments, options; every bad line named, never a key echoed', async t => {
  const a = newKey('a')
  const b = newKey('b')
  const keys = parseKeys(`# comment\n\n${a.line}   # trailing\n  ${b.line} rate=10 slots=1 queue=0 wallMs=2000 memoryMb=${server.memoryMb}\n`, server)
  t.same(keys.map(k => k.name), ['a', 'b'])
  t.same(keys[1]?.shares, { rate: 10, slots: 1, queue: 0 })
  t.same(keys[1]?.ceilings, { wallMs: 2000, memoryMb: server.memoryMb })
  const bad = [
    ['nocolon', /line 1: expected name:sha256-hex/],
    [`a:${a.key}`, /line 1 \(a\): the hash must be 64 lowercase hex digits/],
    [`${a.line}\n${a.line.replace('a:', 'c:')}`, /line 2 \(c\): the same key is listed twice/],
    [`${a.line}\n${b.line.replace('b:', 'a:')}`, /line 2: the name a is used twice/],
    [`${a.line} rate=0`, /rate must be a whole number of 1 or more/],
    [`${a.line} slots=x`, /slots must be a whole number of 1 or more/],
    [`${a.line} queue=-1`, /queue must be a whole number of 0 or more/],
    [`${a.line} memoryMb`, /memoryMb must be a whole number of 1 or more/],
    [`${a.line} wallMs=${server.wallMs + 1}`, new RegExp(`wallMs=${server.wallMs + 1} is above the server's ceiling of ${server.wallMs}`)],
    [`${a.line} colour=red`, /unknown option "colour"/]
  ] as const
  for (const [text, message] of bad) {
    t.throws(() => parseKeys(text, server), { message }, text.slice(0, 30))
    try { parseKeys(text, server) } catch (error) { t.notMatch((error as Error).message, /psk_/, 'no key in the message') }
  }
  t.throws(() => parseKeys('x\ny\n', server), { message: /line 1[^]*\nline 2/ }, 'every bad line at once')
})

t.test('findKey: the key whose hash matches, compared with all; tokenMatches; bearerToken', async t => {
  const a = newKey('a')
  const b = newKey('b')
  const keys = parseKeys(`${a.line}\n${b.line}\n`, server)
  t.equal(findKey(keys, b.key)?.name, 'b')
  t.equal(findKey(keys, a.key)?.name, 'a')
  t.equal(findKey(keys, a.line.split(':')[1] ?? ''), undefined, 'the hash is no key')
  t.equal(findKey(keys, `${a.key}x`), undefined)
  t.equal(findKey([], a.key), undefined)
  t.ok(tokenMatches(a.key, hashKey(a.key)))
  t.notOk(tokenMatches(b.key, hashKey(a.key)))
  t.equal(bearerToken(`Bearer ${a.key}`), a.key)
  t.equal(bearerToken(`bearer   ${a.key} `), a.key)
  for (const header of [undefined, '', 'Bearer', `Basic ${a.key}`, `Bearer ${a.key} x`, a.key, 'Bearer é']) t.equal(bearerToken(header), undefined, String(header))
})

t.test('resolveLimits: defaults, raised and lowered within ceilings; over one is a 400 naming whose', async t => {
  const defaults = limitsFrom(config)
  t.same(resolveLimits(undefined, defaults, { server, caller: server }), defaults, 'nothing asked: the defaults')
  const asked = resolveLimits({ wallMs: 30_000, memoryMb: 128, outputBytes: 2048 }, defaults, { server, caller: server })
  t.match(asked, { wallTimeMs: 30_000, memoryMiB: 128, outputBytes: 2048, cpuSeconds: defaults.cpuSeconds, processes: defaults.processes })
  t.throws(() => resolveLimits({ wallMs: server.wallMs + 1 }, defaults, { server, caller: server }),
    { code: 'INVALID_REQUEST', message: `body.limits.wallMs is ${server.wallMs + 1}, above this server's ceiling (LIMIT_WALL_MS_MAX) of ${server.wallMs}` })
  const caller = { ...server, wallMs: 2000 }
  t.throws(() => resolveLimits({ wallMs: 3000 }, defaults, { server, caller }), { message: 'body.limits.wallMs is 3000, above your API key\'s ceiling of 2000' })
  t.equal(resolveLimits(undefined, defaults, { server, caller }).wallTimeMs, 2000, 'a key\'s lower ceiling lowers its default')
})

t.test('TRUST_PROXY: false, hops, addresses; never true', async t => {
  t.equal(trustProxyOf('false'), false)
  t.equal(trustProxyOf('1'), 1)
  t.same(trustProxyOf('10.0.0.0/8, 127.0.0.1,::1'), ['10.0.0.0/8', '127.0.0.1', '::1'])
  t.match(trustProxyOf('true'), { problem: /a client writes the first one/ })
  t.match(trustProxyOf('0'), { problem: /must be false/ })
  t.match(trustProxyOf('loopback; rm'), { problem: /must be false/ })
  for (const bad of ['1.2.3.4/99', ':::', '999.1.1.1', '10.0.0.0/8/8', '::1/129', '1.2.3.4/x']) t.match(trustProxyOf(bad), { problem: /must be false/ }, bad)
  t.same(trustProxyOf('fd00::/8,192.168.0.0/16'), ['fd00::/8', '192.168.0.0/16'])
  t.throws(() => loadConfig({ TRUST_PROXY: 'true' }), { name: 'ConfigError', message: /^TRUST_PROXY="true" would believe every X-Forwarded-For entry/ })
  t.throws(() => loadConfig({ LIMIT_WALL_MS_MAX: '1000' }), { message: /LIMIT_WALL_MS_MAX="1000" must be at least LIMIT_WALL_MS \(10000\)/ })
})

t.test('slots: a caller holds at most its share, waits at most its queue, and a freed slot goes to whoever holds fewest', async t => {
  const slots = new Slots(2, 3, 10_000)
  const flood = { id: 'flood', slots: 1, queue: 1 }
  const other = { id: 'other', slots: 1, queue: 1 }
  const running = await slots.acquire(flood)
  const waiting = [slots.acquire(flood), slots.acquire(flood)]
  const beyond = slots.acquire(flood)
  t.equal(slots.queued, 3, 'allow: alone, a caller may fill the queue')
  await t.rejects(slots.acquire(flood), { code: 'CONCURRENCY_LIMITED', statusCode: 429, message: /its share: 1 running and 3 waiting/ }, 'deny: a full queue refuses a caller beyond its share for that')
  t.equal(slots.running, 1, 'the second slot stays free for someone else')
  const served = await slots.acquire(other)
  t.equal(served.slot, 1, 'allow: another caller gets it at once')
  const otherWaits = slots.acquire(other)
  await t.rejects(beyond, { code: 'CONCURRENCY_LIMITED' }, 'deny: in a full queue the other caller takes the place of the flood\'s newest waiter')
  served.release()
  // Both callers wait; flood holds 1, other holds 0: the freed slot goes to other, though flood waited longer.
  const next = await otherWaits
  t.equal(slots.queued, 2, 'flood still waits')
  next.release()
  running.release()
  for (const waiter of waiting) (await waiter).release() // one at a time: its share is one slot
  t.equal(slots.running, 0)
  t.equal(slots.queued, 0)
  // A caller with nothing running or waiting whom the queue cannot take: BUSY (the server's doing), not its share.
  const full = new Slots(1, 0, 10_000)
  const lease = await full.acquire({ id: 'a', slots: 1, queue: 0 })
  await t.rejects(full.acquire({ id: 'b', slots: 1, queue: 0 }), { code: 'BUSY' })
  await t.rejects(full.acquire({ id: 'a', slots: 1, queue: 0 }), { code: 'CONCURRENCY_LIMITED' })
  lease.release()
  // Sabotage: a share as large as the whole lets one caller take every slot.
  const whole = new Slots(2, 10, 10_000)
  const greedy = { id: 'greedy', slots: 2, queue: 10 }
  await whole.acquire(greedy)
  await whole.acquire(greedy)
  t.equal(whole.running, 2, 'sabotage: without a share one caller holds both slots')
})

t.test('keygen: the key alone on stdout, the line on stderr; usage errors exit 2', async t => {
  const run = (args: string[]): { code: number, stdout: string, stderr: string } => {
    let stdout = ''
    let stderr = ''
    const code = keygen(args, { stdout: { write: text => { stdout += text } }, stderr: { write: text => { stderr += text } } })
    return { code, stdout, stderr }
  }
  const made = run(['ci-bot'])
  t.equal(made.code, 0)
  t.match(made.stdout, /^psk_[A-Za-z0-9_-]{43}\n$/)
  const key = made.stdout.trim()
  t.match(made.stderr, `\nci-bot:${hashKey(key)}\n`)
  t.notMatch(made.stderr, key, 'the key only on stdout')
  for (const args of [[], ['a', 'b'], ['-h'], ['--help']]) t.same(run(args), { code: 2, stdout: '', stderr: KEYGEN_USAGE }, JSON.stringify(args))
  t.match(run(['bad name']), { code: 2, stdout: '', stderr: /a key's name/ })
})
