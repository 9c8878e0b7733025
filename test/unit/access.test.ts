// The parts of access control that need no server: keys (made, hashed, parsed, found), bearer
// tokens, a request's limits within the ceilings, and the slots' per-caller shares.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MAX_KEYS_FILE_BYTES, bearerToken, findKey, hashKey, newKey, parseKeys, readKeysFile, tokenMatches, urlHoldsKey } from '../../src/access/keys.js'
import { callerAddress } from '../../src/plugins/access.js'
import { KEYGEN_USAGE, keygen } from '../../src/access/keygen.js'
import { resolveLimits } from '../../src/access/limits.js'
import { limitsFrom } from '../../src/backends/backend.js'
import { ceilingsOf, loadConfig, trustProxyOf } from '../../src/config.js'
import { Slots } from '../../src/slots.js'

const config = loadConfig({ LIMIT_WALL_MS_MAX: '60000' })
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
  for (const bad of ['1.2.3.4/99', ':::', '999.1.1.1', '10.0.0.0/8/8', '::1/129', '1.2.3.4/x', '0.0.0.0/1', '128.0.0.0/1', '0.0.0.0/0', '::/0']) t.match(trustProxyOf(bad), { problem: /must be false/ }, bad)
  t.same(trustProxyOf('fd00::/8,192.168.0.0/16'), ['fd00::/8', '192.168.0.0/16'])
  t.throws(() => loadConfig({ TRUST_PROXY: 'true' }), { name: 'ConfigError', message: /^TRUST_PROXY="true" would believe every X-Forwarded-For entry/ })
  t.throws(() => loadConfig({ LIMIT_WALL_MS_MAX: '1000' }), { message: /LIMIT_WALL_MS_MAX="1000" must be at least LIMIT_WALL_MS \(10000\)/ })
  t.same(ceilingsOf(loadConfig({ LIMIT_WALL_MS: '5000' })), { ...server, wallMs: 5000 }, 'a ceiling defaults to its limit: raising is the operator\'s choice')
})

t.test('slots: a caller holds at most its share, waits at most its queue, and a freed slot goes to whoever holds fewest', async t => {
  const slots = new Slots(2, 3, 10_000)
  const flood = { id: 'flood', slots: 1, queue: 10 }
  const other = { id: 'other', slots: 1, queue: 10 }
  const running = await slots.acquire(flood)
  const waiting = [slots.acquire(flood), slots.acquire(flood)]
  const newest = slots.acquire(flood)
  t.equal(slots.queued, 3, 'allow: alone, a caller may fill the queue')
  await t.rejects(slots.acquire(flood), { code: 'BUSY' }, 'the queue is full: BUSY')
  t.equal(slots.running, 1, 'the second slot stays free for someone else')
  const served = await slots.acquire(other)
  t.equal(served.slot, 1, 'allow: another caller gets it at once')
  const otherWaits = slots.acquire(other)
  await t.rejects(newest, { code: 'CONCURRENCY_LIMITED', message: /its share: 1 running and 3 waiting/ }, 'deny: in a full queue the other caller takes the place of the flood\'s newest waiter')
  await t.rejects(slots.acquire(other), { code: 'BUSY' }, 'but only while the flood has two more waiting than it')
  served.release()
  // Both callers wait; flood holds 1, other holds 0: the freed slot goes to other, though flood waited longer.
  const next = await otherWaits
  t.equal(slots.queued, 2, 'flood still waits')
  next.release()
  running.release()
  for (const waiter of waiting) (await waiter).release() // one at a time: its share is one slot
  t.equal(slots.running, 0)
  t.equal(slots.queued, 0)

  // Two callers together: each at one slot and two waiting fill everything; a third still gets in.
  const shared = new Slots(2, 4, 10_000)
  const a = { id: 'a', slots: 1, queue: 10 }
  const c = { id: 'c', slots: 1, queue: 10 }
  const b = { id: 'b', slots: 1, queue: 10 }
  const held = [await shared.acquire(a), await shared.acquire(c)]
  const queued = [shared.acquire(a), shared.acquire(c), shared.acquire(a), shared.acquire(c)]
  const third = shared.acquire(b)
  await t.rejects(queued[3] as Promise<unknown>, { code: 'CONCURRENCY_LIMITED' }, 'deny: the newest waiter of the colluders makes room')
  held[0]?.release()
  const granted = await third
  t.pass('allow: the third caller gets the next slot')
  granted.release()
  held[1]?.release()
  for (const waiter of queued.slice(0, 3)) (await waiter).release()

  // Its own cap on waiting; a caller with nothing whom a full queue cannot take: BUSY (the server's load).
  const capped = new Slots(1, 10, 10_000)
  const first = await capped.acquire({ id: 'a', slots: 1, queue: 1 })
  const second = capped.acquire({ id: 'a', slots: 1, queue: 1 })
  await t.rejects(capped.acquire({ id: 'a', slots: 1, queue: 1 }), { code: 'CONCURRENCY_LIMITED', statusCode: 429, message: /its share: 1 running and 1 waiting/ })
  first.release()
  ;(await second).release()
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

t.test('readKeysFile: a regular file (through links) of at most 1 MiB; never a FIFO, a device or more', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'pysandbox-keysfile-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'keys')
  writeFileSync(file, 'a:0\n')
  symlinkSync(file, join(dir, 'link'))
  t.equal(readKeysFile(join(dir, 'link')), 'a:0\n', 'allow: through a symbolic link (a Kubernetes Secret)')
  execFileSync('mkfifo', [join(dir, 'fifo')])
  t.throws(() => readKeysFile(join(dir, 'fifo')), /not a regular file/, 'deny: a FIFO is refused at once, not waited on')
  symlinkSync('/dev/zero', join(dir, 'zero'))
  t.throws(() => readKeysFile(join(dir, 'zero')), /not a regular file/, 'deny: a device')
  writeFileSync(join(dir, 'big'), Buffer.alloc(MAX_KEYS_FILE_BYTES + 1, 0x61))
  t.throws(() => readKeysFile(join(dir, 'big')), /larger than 1048576 bytes/, 'deny: over 1 MiB')
  writeFileSync(join(dir, 'full'), Buffer.alloc(MAX_KEYS_FILE_BYTES, 0x61))
  t.equal(readKeysFile(join(dir, 'full')).length, MAX_KEYS_FILE_BYTES, 'allow: exactly 1 MiB')
  t.throws(() => readKeysFile(join(dir, 'absent')), { code: 'ENOENT' })
})

t.test('a key pasted where an option goes is never echoed; a key anywhere in a URL is found', async t => {
  const a = newKey('a')
  t.throws(() => parseKeys(`${a.line} ${newKey('b').key}`, server), { message: /line 1 \(a\): unknown option; the options are/ })
  t.throws(() => parseKeys(`${a.line} colour=red`, server), { message: /unknown option "colour"/ })
  for (const url of ['/psk_x', '/execute?x=psk_1', '/execute?x=%70sk_1', '/%2570sk_'.replace('%25', '%'), '/execute?q=a,psk_1']) t.ok(urlHoldsKey(url), url)
  for (const url of ['/execute', '/execute?verbose=1', '/execute?x=%E0%A4%A', '/pskx']) t.notOk(urlHoldsKey(url), url)
})

t.test('callerAddress: one form per address, IPv6 by its /64, the connection\'s own when the forwarded one is no address', async t => {
  t.equal(callerAddress('203.0.113.7', '10.0.0.1'), '203.0.113.7')
  t.equal(callerAddress('::ffff:203.0.113.7', '10.0.0.1'), '203.0.113.7')
  t.equal(callerAddress('2001:db8:1:2:3:4:5:6', undefined), '2001:db8:1:2::/64')
  t.equal(callerAddress('2001:db8:1:2::99', undefined), '2001:db8:1:2::/64', 'any host of the /64 is one caller')
  t.equal(callerAddress('2001:db8::', undefined), '2001:db8:0:0::/64')
  t.equal(callerAddress('::1', undefined), '0:0:0:0::/64')
  t.equal(callerAddress('foo', '10.0.0.1'), '10.0.0.1', 'a forwarded entry that is no address: the connection')
  t.equal(callerAddress('x'.repeat(8000), undefined), 'unknown')
})
