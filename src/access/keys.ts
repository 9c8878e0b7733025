// API keys. A key is `psk_` and 32 random bytes in base64url, shown once by `npm run keygen`; the
// server keeps only its SHA-256 (API_KEYS_FILE), so a leaked file runs nothing. A key of 256
// random bits needs no slow hash: nothing can be guessed from its SHA-256.
//
// The file: one key per line, `name:sha256-hex [option=value ...]`; `#` starts a comment.
//   ci-bot:5e8d...b1 rate=600 slots=1 queue=2 wallMs=30000 memoryMb=1024
// Options: rate (requests per RATE_LIMIT_WINDOW_MS), slots and queue (its share of the execution
// slots and of the queue), sessions (how many it may have open), and the ceilings of its requests' limits (wallMs, cpuSeconds, memoryMb,
// processes, outputBytes), each at most the server's own.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs'
import type { Ceilings } from '../config.js'

export const KEY_PREFIX = 'psk_'
const KEY_BYTES = 32
/** A name is a metrics label and a log field: short, plain, bounded by the file. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
const HASH = /^[0-9a-f]{64}$/

export const CEILING_OPTIONS = ['wallMs', 'cpuSeconds', 'memoryMb', 'processes', 'outputBytes'] as const
const SHARE_OPTIONS = ['rate', 'slots', 'queue', 'sessions'] as const
type ShareOption = typeof SHARE_OPTIONS[number]

export interface ApiKey {
  readonly name: string
  readonly hash: Buffer
  /** Its own rate, slots, queue and sessions, where the line gives them. */
  readonly shares: Partial<Record<ShareOption, number>>
  /** Its own ceilings, where the line gives them (each at most the server's). */
  readonly ceilings: Partial<Ceilings>
}

const isShare = (option: string): option is ShareOption => (SHARE_OPTIONS as readonly string[]).includes(option)
const isCeiling = (option: string): option is keyof Ceilings => (CEILING_OPTIONS as readonly string[]).includes(option)

/** A new key, and the line of the keys file that admits it. */
export function newKey (name: string): { key: string, line: string } {
  if (!NAME.test(name)) throw new Error(`a key's name is 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit: ${JSON.stringify(name)}`)
  const key = KEY_PREFIX + randomBytes(KEY_BYTES).toString('base64url')
  return { key, line: `${name}:${hashKey(key)}` }
}

export function hashKey (key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex')
}

/** The most a keys file may hold: a line is under 200 bytes, so thousands of keys. */
export const MAX_KEYS_FILE_BYTES = 1024 * 1024

/** The keys file's text: a regular file (through symbolic links: a Kubernetes Secret is mounted
 *  through them) of at most MAX_KEYS_FILE_BYTES. Opened without blocking, so a FIFO put in its
 *  place is refused rather than waited on; never read past the limit (a device is no file). */
export function readKeysFile (path: string): string {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK)
  try {
    const stat = fstatSync(fd)
    if (!stat.isFile()) throw new Error('not a regular file')
    if (stat.size > MAX_KEYS_FILE_BYTES) throw new Error(`larger than ${MAX_KEYS_FILE_BYTES} bytes`)
    const buffer = Buffer.alloc(MAX_KEYS_FILE_BYTES + 1)
    const length = readSync(fd, buffer, 0, buffer.length, 0)
    /* c8 ignore next -- a race: the file grew after fstat */
    if (length > MAX_KEYS_FILE_BYTES) throw new Error(`larger than ${MAX_KEYS_FILE_BYTES} bytes`)
    return buffer.toString('utf8', 0, length)
  } finally {
    closeSync(fd)
  }
}

/** The keys of a file's text; throws an Error naming every bad line (nothing is half-read). */
export function parseKeys (text: string, server: Ceilings): ApiKey[] {
  const keys: ApiKey[] = []
  const problems: string[] = []
  const names = new Set<string>()
  const hashes = new Set<string>()
  text.split('\n').forEach((raw, index) => {
    const line = raw.replace(/#.*/, '').trim()
    if (line === '') return
    const where = `line ${index + 1}`
    const [head = '', ...options] = line.split(/\s+/)
    const colon = head.lastIndexOf(':')
    const name = head.slice(0, colon)
    const hash = head.slice(colon + 1)
    if (colon < 0 || !NAME.test(name)) return problems.push(`${where}: expected name:sha256-hex, the name 1 to 64 letters, digits, ".", "_" or "-"`)
    // Never echo what looks like a key pasted in place of its hash.
    if (!HASH.test(hash)) return problems.push(`${where} (${name}): the hash must be 64 lowercase hex digits (the SHA-256 of the key, as npm run keygen prints it), never the key itself`)
    if (names.has(name)) return problems.push(`${where}: the name ${name} is used twice`)
    if (hashes.has(hash)) return problems.push(`${where} (${name}): the same key is listed twice`)
    const shares: ApiKey['shares'] = {}
    const ceilings: Partial<Ceilings> = {}
    for (const option of options) {
      const equals = option.indexOf('=')
      const key = equals < 0 ? option : option.slice(0, equals)
      const value = equals < 0 ? '' : option.slice(equals + 1)
      const number = /^\d{1,10}$/.test(value) ? Number(value) : NaN
      if (isShare(key)) {
        const least = key === 'queue' || key === 'sessions' ? 0 : 1
        if (!(number >= least)) problems.push(`${where} (${name}): ${key} must be a whole number of ${least} or more`)
        else shares[key] = number
      } else if (isCeiling(key)) {
        if (!(number >= 1)) problems.push(`${where} (${name}): ${key} must be a whole number of 1 or more`)
        else if (number > server[key]) problems.push(`${where} (${name}): ${key}=${number} is above the server's ceiling of ${server[key]}`)
        else ceilings[key] = number
      } else {
        // Named only when it is a plain word: never echo what may be a key pasted in the wrong place.
        const shown = /^[A-Za-z]{1,32}$/.test(key) ? ` ${JSON.stringify(key)}` : ''
        problems.push(`${where} (${name}): unknown option${shown}; the options are ${[...SHARE_OPTIONS, ...CEILING_OPTIONS].join(', ')}`)
      }
    }
    names.add(name)
    hashes.add(hash)
    keys.push({ name, hash: Buffer.from(hash, 'hex'), shares, ceilings })
  })
  if (problems.length > 0) throw new Error(problems.join('\n'))
  return keys
}

/** The key whose hash is the token's, compared with every key in constant time: how long this
 *  takes says nothing about which bytes of which hash matched. */
export function findKey (keys: readonly ApiKey[], token: string): ApiKey | undefined {
  const hash = createHash('sha256').update(token, 'utf8').digest()
  let found: ApiKey | undefined
  for (const key of keys) {
    if (timingSafeEqual(key.hash, hash)) found = key
  }
  return found
}

/** Whether a URL holds something shaped like a key, raw or percent-decoded (as far as it decodes). */
export function urlHoldsKey (url: string): boolean {
  if (url.includes(KEY_PREFIX)) return true
  try {
    return decodeURIComponent(url).includes(KEY_PREFIX)
  } catch {
    return false // a malformed escape: the raw text was checked
  }
}

/** The token of an `Authorization: Bearer <token>` header; undefined for none or another scheme. */
export function bearerToken (header: string | undefined): string | undefined {
  return header === undefined ? undefined : /^Bearer +([\x21-\x7e]+) *$/i.exec(header)?.[1]
}

/** A bearer token against one configured hash (the metrics token), in constant time. */
export function tokenMatches (token: string, hashHex: string): boolean {
  return timingSafeEqual(createHash('sha256').update(token, 'utf8').digest(), Buffer.from(hashHex, 'hex'))
}
