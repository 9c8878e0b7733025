// The request body parser: strict JSON. Invalid UTF-8 and duplicate keys are refused rather
// than repaired or silently resolved (JSON.parse keeps the last duplicate; a proxy or a log
// reader might keep the first), so what we validate is exactly what the client meant.
// The body is scanned whole (json-scan.ts) before JSON.parse builds anything: duplicates are
// found there, and so is an unknown field of the one body the service takes (POST /execute's),
// refused with the validator's own words and in its order, and named before a key twice. Here
// rather than in the route, which sees the body only once JSON.parse has built it: a 1 MiB body
// of 96,331 unknown fields cost 130-170 ms of the event loop (JSON.parse alone 43 ms, then the
// validator, which builds one error per field), and four such connections held /healthz for over
// a second; refused here, it costs 1-5 ms.
import { unknownField } from './errors/replies.js'
import { InvalidJsonError } from './errors/errors.js'
import { scanJson, type JsonPath } from './json-scan.js'
import { ExecuteRequest, FileIn, RunLimits } from './schemas.js'

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false })
const BOM = Buffer.from('\ufeff')

const fieldsOf = (schema: { properties: object }): string[] => Object.keys(schema.properties)
const BODY_FIELDS = fieldsOf(ExecuteRequest)
const LIMITS_FIELDS = fieldsOf(RunLimits)
const FILE_FIELDS = fieldsOf(FileIn)

const FNV_OFFSET = 0x811c9dc5
const FNV_PRIME = 0x01000193

/** FNV-1a over the UTF-16 code units of a key's text, read from its unescaped UTF-8 bytes
 *  (valid: the scan checked them): the same number as keyHash() of the text. */
function bytesHash (b: Uint8Array, start: number, end: number): number {
  let hash = FNV_OFFSET
  for (let i = start; i < end;) {
    let unit = b[i] as number
    if (unit < 0x80) {
      i++
    } else if (unit < 0xe0) {
      unit = ((unit & 0x1f) << 6) | ((b[i + 1] as number) & 0x3f)
      i += 2
    } else if (unit < 0xf0) {
      unit = ((unit & 0x0f) << 12) | (((b[i + 1] as number) & 0x3f) << 6) | ((b[i + 2] as number) & 0x3f)
      i += 3
    } else {
      const point = (((unit & 0x07) << 18) | (((b[i + 1] as number) & 0x3f) << 12) | (((b[i + 2] as number) & 0x3f) << 6) | ((b[i + 3] as number) & 0x3f)) - 0x10000
      hash = Math.imul(hash ^ (0xd800 + (point >> 10)), FNV_PRIME)
      unit = 0xdc00 + (point & 0x3ff)
      i += 4
    }
    hash = Math.imul(hash ^ unit, FNV_PRIME)
  }
  return hash
}

function keyHash (key: string): number {
  let hash = FNV_OFFSET
  for (let k = 0; k < key.length; k++) hash = Math.imul(hash ^ key.charCodeAt(k), FNV_PRIME)
  return hash
}

/** The keys of one object at a time, by hash, without a string per key: a Set of 96,331 keys
 *  cost 16-30 ms. Cleared for the next object at its level in time proportional to what it held. */
class KeyTable {
  private slots: Int32Array = new Int32Array(16) // 1 + the key's number; 0: empty
  private hashes: Int32Array = new Int32Array(8)
  private places: Int32Array = new Int32Array(8) // each key's slot
  private starts: Int32Array = new Int32Array(8)
  private ends: Int32Array = new Int32Array(8)
  private count = 0

  constructor (private readonly text: Buffer) {}

  clear (): void {
    for (let k = 0; k < this.count; k++) this.slots[this.places[k] as number] = 0
    this.count = 0
  }

  /** Adds the key at [start, end), whose text is `escaped` when it has escapes: whether the
   *  object already had it. */
  add (start: number, end: number, escaped: string | undefined): boolean {
    const hash = escaped === undefined ? bytesHash(this.text, start, end) : keyHash(escaped)
    if (this.count === this.hashes.length) this.grow()
    const mask = this.slots.length - 1
    let slot = hash & mask
    for (let entry = this.slots[slot] as number; entry !== 0; entry = this.slots[slot] as number) {
      if (this.hashes[entry - 1] === hash && this.textOf(entry - 1) === (escaped ?? this.text.toString('utf8', start, end))) return true
      slot = (slot + 1) & mask
    }
    const k = this.count++
    this.slots[slot] = k + 1
    this.places[k] = slot
    this.hashes[k] = hash
    this.starts[k] = start
    this.ends[k] = end
    return false
  }

  /** Key k's text: decoded only when a hash is met twice. */
  private textOf (k: number): string {
    const start = this.starts[k] as number
    const end = this.ends[k] as number
    const raw = this.text.toString('utf8', start, end)
    return raw.includes('\\') ? JSON.parse(`"${raw}"`) as string : raw
  }

  /** Twice the room, the table at most half full. */
  private grow (): void {
    const size = this.hashes.length * 2
    const grown = (old: Int32Array): Int32Array => {
      const next = new Int32Array(size)
      next.set(old)
      return next
    }
    this.hashes = grown(this.hashes)
    this.places = grown(this.places)
    this.starts = grown(this.starts)
    this.ends = grown(this.ends)
    this.slots = new Int32Array(size * 2)
    const mask = this.slots.length - 1
    for (let k = 0; k < this.count; k++) {
      let slot = (this.hashes[k] as number) & mask
      while (this.slots[slot] !== 0) slot = (slot + 1) & mask
      this.slots[slot] = k + 1
      this.places[k] = slot
    }
  }
}

/** Whether the current key of the object at the path's depth is one of `fields`. */
function knownIn (fields: string[], path: JsonPath): boolean {
  for (const field of fields) if (path.keyIs(path.depth, field)) return true
  return false
}

/** The checks of a body's keys, made as the scan meets them. An unknown field is named before
 *  a key twice: once one is found, keys are no longer kept (a body of 96,331 unknown fields then
 *  costs the scan alone). */
class KeyChecks {
  /** The first key that appears twice in one object, while no field is unknown. */
  duplicate: string | undefined
  /** The first unknown field in the order the validator reports them: the body's own first,
   *  then each of `files` in turn, then `limits` (its properties' order). */
  unknown: Array<{ name: string, instancePath: string } | undefined> = []
  /** The keys of the open object at each level, reused from one object to the next. */
  private readonly tables: KeyTable[] = []

  /** `fields`: whether the body's fields are checked too (duplicateKey() alone does not). */
  constructor (private readonly text: Buffer, private readonly fields = true) {}

  readonly see = (start: number, end: number, path: JsonPath): void => {
    const { depth } = path
    if (this.unknown[0] !== undefined) return // none can come before it
    if (this.unknown.length === 0) {
      const table = this.tables[depth] ??= new KeyTable(this.text)
      if (path.index(depth) === 0) table.clear()
      if (table.add(start, end, path.keyEscaped(depth) ? path.key(depth) : undefined)) this.duplicate ??= path.key(depth)
    }
    if (!this.fields) return
    if (depth === 1) {
      if (!knownIn(BODY_FIELDS, path)) this.unknown[0] ??= { name: path.key(depth), instancePath: '' }
    } else if (depth === 2 && path.isObject(1)) {
      if (path.keyIs(1, 'limits') && !knownIn(LIMITS_FIELDS, path)) this.unknown[2] ??= { name: path.key(depth), instancePath: '/limits' }
    } else if (depth === 3 && !path.isObject(2) && path.isObject(1) && path.keyIs(1, 'files') && !knownIn(FILE_FIELDS, path)) {
      this.unknown[1] ??= { name: path.key(depth), instancePath: `/files/${path.index(2)}` }
    }
  }
}

/** The first key that appears twice in one object, or undefined. Expects valid JSON. */
export function duplicateKey (text: string): string | undefined {
  const bytes = Buffer.from(text)
  const checks = new KeyChecks(bytes, false)
  scanJson(bytes, { onKey: checks.see })
  return checks.duplicate
}

export function parseJsonBody (body: Buffer): unknown {
  let text: string
  try {
    text = utf8.decode(body)
  } catch {
    throw new InvalidJsonError('the body is not valid UTF-8')
  }
  if (text.trim() === '') throw new InvalidJsonError('the body is empty')
  // A byte-order mark is allowed before the text (RFC 8259), as the decoder allows it.
  const json = body.subarray(body.subarray(0, BOM.length).equals(BOM) ? BOM.length : 0)
  const checks = new KeyChecks(json)
  const scan = scanJson(json, { onKey: checks.see })
  try {
    // Not JSON: JSON.parse says why, in the words clients have had until now.
    if (scan.error !== undefined) JSON.parse(text)
  } catch (error) {
    throw new InvalidJsonError((error as Error).message)
  }
  const unknown = checks.unknown.find(entry => entry !== undefined)
  if (unknown !== undefined) throw unknownField(unknown.name, unknown.instancePath)
  if (checks.duplicate !== undefined) throw new InvalidJsonError(`the key "${checks.duplicate}" appears twice in one object`)
  return JSON.parse(text)
}
