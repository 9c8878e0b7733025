// Strict JSON, checked in one pass over the bytes before anything parses them: the grammar
// (RFC 8259, exactly what JSON.parse accepts), the nesting depth, and the values that JSON
// carries but its readers cannot hold (the harness's rules). No recursion and no allocation per
// value: JSON.parse of 8 MiB of `[{}]` builds 2.8 million objects in about 0.9 s of the event
// loop; this scan reads any 8 MiB in 20-55 ms whatever its shape (measured on a busy 2-core VM),
// and can do it in slices of 64 KiB with the event loop free between them. Used on the result
// channel (backends/outcome.ts, in slices), on request bodies (json-body.ts) and on `input`.
import { isUtf8 } from 'node:buffer'
import { setImmediate } from 'node:timers/promises'

const QUOTE = 0x22
const BACKSLASH = 0x5c
const COMMA = 0x2c
const COLON = 0x3a
const LBRACE = 0x7b
const RBRACE = 0x7d
const LBRACKET = 0x5b
const RBRACKET = 0x5d
const MINUS = 0x2d
const PLUS = 0x2b
const DOT = 0x2e
const ZERO = 0x30
const NINE = 0x39
const LOWER_E = 0x65
const UPPER_E = 0x45
const LOWER_U = 0x75

/** What each byte can start: a container, a string, a number, a literal (true, false, null). */
const OPENER = 1
const STRING = 2
const NUMBER = 3
const LITERAL = 4
const STARTS = new Uint8Array(256)
STARTS[LBRACE] = STARTS[LBRACKET] = OPENER
STARTS[QUOTE] = STRING
STARTS[MINUS] = NUMBER
for (let digit = ZERO; digit <= NINE; digit++) STARTS[digit] = NUMBER
for (const c of 'tfn') STARTS[c.charCodeAt(0)] = LITERAL
const LITERALS = { t: Buffer.from('true'), f: Buffer.from('false'), n: Buffer.from('null') }

/** After `"\`, the characters that stand for themselves or a control character (u aside). */
const SIMPLE_ESCAPES = new Uint8Array(256)
for (const c of '"\\/bfnrt') SIMPLE_ESCAPES[c.charCodeAt(0)] = 1
/** Each byte's value as a hexadecimal digit, or -1. */
const HEX = new Int8Array(256).fill(-1)
for (let d = 0; d < 16; d++) {
  HEX[d.toString(16).charCodeAt(0)] = d
  HEX[d.toString(16).toUpperCase().charCodeAt(0)] = d
}

/** 2**53 - 1: an integer beyond it loses digits in JSON readers (JavaScript's among them). */
const MAX_SAFE_DIGITS = Buffer.from(String(Number.MAX_SAFE_INTEGER))
/** A float of 10**309 or more overflows a double: Python's json and JSON.parse make it infinite. */
const LARGEST_FINITE_EXPONENT = 308
/** The magnitude of a number whose digits are all zeros. */
const NO_DIGIT = -(2 ** 30)
/** What Python's str.isprintable() refuses. */
const UNPRINTABLE = /^[\p{C}\p{Z}]$/u
const BIG_INT = 1
const INFINITE = 2

export interface ScanOptions {
  /** Deepest nesting of arrays and objects accepted; default: any. */
  maxDepth?: number
  /** The member of the top-level object whose value's byte span the scan reports (its first
   *  occurrence: a second is an error), and from which `unreadable` paths are told. */
  member?: string
  /** At most this many values outside that member's value (the envelope around it). */
  maxValuesOutside?: number
  /** At most this many bytes in the member's value: the scan stops soon after it has seen more
   *  (at the next comma, or the value's end), with `memberTooLarge`. */
  maxMemberBytes?: number
  /** Called for each key, with its byte span (quotes excluded) and where it sits: the path is
   *  read during the call only. */
  onKey?: (start: number, end: number, path: JsonPath) => void
}

/** Where the scan is: the containers open around the current key. Level 1 is the top-level
 *  value; `depth` is the object the key belongs to. */
export interface JsonPath {
  readonly depth: number
  isObject: (level: number) => boolean
  /** The position of the current element of the array, or key of the object, at `level`. */
  index: (level: number) => number
  /** The current key of the object at `level`. */
  key: (level: number) => string
  /** Whether that key is `name`, without decoding it when it has no escape. */
  keyIs: (level: number, name: string) => boolean
  /** Whether that key has an escape (its bytes are not its text's). */
  keyEscaped: (level: number) => boolean
}

export interface JsonScan {
  /** Why the bytes are not one JSON text within the options' bounds, and where; undefined when
   *  they are. */
  error?: string
  /** The first value that JSON carries but its readers cannot hold as written (a lone surrogate,
   *  an integer beyond ±(2**53 - 1), a number too large for a float) and where it sits, in the
   *  harness's words (result[0]['a'] is ...); `inMember`: inside the member's value. */
  unreadable?: { message: string, inMember: boolean }
  /** The byte span of the member's value, when the top-level object has the member. */
  member?: { start: number, end: number }
  /** Set with `error` when the member's value is longer than maxMemberBytes. */
  memberTooLarge?: true
}

/** Whether the bytes are JSON nested no deeper than `max`. */
export function nestsWithin (bytes: Uint8Array, max: number): boolean {
  return scanJson(bytes, { maxDepth: max }).error === undefined
}

/** A string as Python's repr() shows it (the harness's paths: result['a'][0]), cut when long:
 *  the characters str.isprintable() refuses (Unicode's "other" and separators but the space)
 *  escaped as \\xNN, \\uNNNN or \\UNNNNNNNN. */
export function pythonRepr (text: string): string {
  const shown = text.length > 64 ? `${text.slice(0, 60)}...` : text
  const quote = shown.includes('\'') && !shown.includes('"') ? '"' : '\''
  let repr = quote
  for (const char of shown) {
    const code = char.codePointAt(0) as number
    if (char === quote || char === '\\') repr += `\\${char}`
    else if (char === '\n') repr += '\\n'
    else if (char === '\r') repr += '\\r'
    else if (char === '\t') repr += '\\t'
    else if (char === ' ' || !UNPRINTABLE.test(char)) repr += char
    else if (code < 0x100) repr += `\\x${code.toString(16).padStart(2, '0')}`
    else if (code < 0x10000) repr += `\\u${code.toString(16).padStart(4, '0')}`
    else repr += `\\U${code.toString(16).padStart(8, '0')}`
  }
  return repr + quote
}

// What stringEnd() and numberEnd() saw besides the end, kept here rather than in an object made
// per string: a scan reads them right after the call (and pauses only between values, when it
// has), so scans in slices do not mix them up. `escapes` only grows; `lone` and `numberProblem`
// are reset by the scan when it reads them set.
let escapes = 0
let lone = false
let numberProblem = 0

/** The stacks of open containers, one entry per level (0 unused), grown as the text nests. */
class Path implements JsonPath {
  depth = 0
  objects = new Uint8Array(64)
  indexes = new Int32Array(64)
  keyStarts = new Int32Array(64)
  keyEnds = new Int32Array(64)
  keysEscaped = new Uint8Array(64)
  readonly text: Buffer

  constructor (bytes: Uint8Array) {
    this.text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }

  isObject (level: number): boolean { return this.objects[level] === 1 }
  keyEscaped (level: number): boolean { return this.keysEscaped[level] === 1 }
  index (level: number): number { return this.indexes[level] as number }

  key (level: number): string {
    const start = this.keyStarts[level] as number
    const end = this.keyEnds[level] as number
    return this.keysEscaped[level] === 1
      ? JSON.parse(this.text.toString('utf8', start - 1, end + 1)) as string
      : this.text.toString('utf8', start, end)
  }

  keyIs (level: number, name: string): boolean {
    if (this.keysEscaped[level] === 1) return this.key(level) === name
    // Unescaped bytes equal to an ASCII name are that name; a name with other characters is
    // compared as text. UTF-8 takes at least one byte per UTF-16 unit.
    const start = this.keyStarts[level] as number
    const length = (this.keyEnds[level] as number) - start
    if (length < name.length) return false
    for (let k = 0; k < name.length; k++) {
      const unit = name.charCodeAt(k)
      if (unit > 0x7f) return this.key(level) === name
      if (this.text[start + k] !== unit) return false
    }
    return length === name.length
  }

  grow (): void {
    const grown = <T extends Uint8Array | Int32Array>(old: T, make: (size: number) => T): T => {
      const next = make(old.length * 2)
      next.set(old)
      return next
    }
    this.objects = grown(this.objects, size => new Uint8Array(size))
    this.keysEscaped = grown(this.keysEscaped, size => new Uint8Array(size))
    this.indexes = grown(this.indexes, size => new Int32Array(size))
    this.keyStarts = grown(this.keyStarts, size => new Int32Array(size))
    this.keyEnds = grown(this.keyEnds, size => new Int32Array(size))
  }

  /** What sits at the path down to `level` (told from the member's value when in it): `what`. */
  unreadable (level: number, member: string | undefined, inMember: boolean, what: string): JsonScan['unreadable'] {
    let where = inMember ? String(member) : 'value'
    for (let l = inMember ? 2 : 1; l <= level; l++) {
      where += this.isObject(l) ? `[${pythonRepr(this.key(l))}]` : `[${this.index(l)}]`
    }
    return { message: `${where} ${what}`, inMember }
  }
}

function fault (bytes: Uint8Array, at: number): JsonScan {
  const byte = bytes[at]
  return { error: byte === undefined ? 'unexpected end of the text' : `unexpected byte 0x${byte.toString(16).padStart(2, '0')} at byte ${at}` }
}

function whitespace (b: Uint8Array, i: number, n: number): number {
  while (i < n) {
    const c = b[i] as number
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return i
    i++
  }
  return i
}

/** Four hexadecimal digits at i as a number, or -1 - the index of a fault. */
function hex4 (b: Uint8Array, i: number, n: number): number {
  let unit = 0
  for (let k = i; k < i + 4; k++) {
    if (k >= n) return -1 - n
    const digit = HEX[b[k] as number] as number
    if (digit < 0) return -1 - k
    unit = unit * 16 + digit
  }
  return unit
}

/** The string whose quote is at i: the index after its closing quote, or -1 - the index of a
 *  fault; counts its escapes and notes a lone surrogate. Its bytes are valid UTF-8 (checked
 *  whole beforehand). */
function stringEnd (b: Uint8Array, i: number, n: number): number {
  i++
  while (i < n) {
    const c = b[i] as number
    if (c === QUOTE) return i + 1
    if (c === BACKSLASH) {
      i = escapeEnd(b, i, n)
      if (i < 0) return i
    } else if (c < 0x20) {
      return -1 - i
    } else {
      i++
    }
  }
  return -1 - n
}

/** The escape at i: the index after it, or -1 - the index of a fault. */
function escapeEnd (b: Uint8Array, i: number, n: number): number {
  escapes++
  if (i + 1 >= n) return -1 - n
  const e = b[i + 1] as number
  if (SIMPLE_ESCAPES[e] === 1) return i + 2
  if (e !== LOWER_U) return -2 - i
  const unit = hex4(b, i + 2, n)
  if (unit < 0) return unit
  i += 6
  if (unit < 0xd800 || unit > 0xdfff) return i
  // A high surrogate needs a low one right after it; a low one alone is lone too.
  if (unit < 0xdc00 && i + 1 < n && b[i] === BACKSLASH && b[i + 1] === LOWER_U) {
    const low = hex4(b, i + 2, n)
    if (low >= 0xdc00 && low <= 0xdfff) return i + 6
  }
  lone = true
  return i
}

/** The number that starts at i (a minus or a digit): the index after it, or -1 - the index of a
 *  fault; sets `numberProblem`. An integer (no fraction, no exponent) is Python's int, anything
 *  else its float: the harness's reading. */
function numberEnd (b: Uint8Array, i: number, n: number): number {
  const start = i
  if (b[i] === MINUS) i++
  const digits = i
  let c = i < n ? b[i] as number : -1
  if (c === ZERO) {
    i++
  } else if (c > ZERO && c <= NINE) {
    do i++; while (i < n && (c = b[i] as number) >= ZERO && c <= NINE)
  } else {
    return -1 - i
  }
  c = i < n ? b[i] as number : -1
  if (c === DOT || c === LOWER_E || c === UPPER_E) return floatEnd(b, start, digits, i, n)
  if (i - digits >= MAX_SAFE_DIGITS.length && unsafeInteger(b, digits, i)) numberProblem = BIG_INT
  return i
}

function unsafeInteger (b: Uint8Array, digits: number, end: number): boolean {
  return end - digits > MAX_SAFE_DIGITS.length || Buffer.compare(b.subarray(digits, end), MAX_SAFE_DIGITS) > 0
}

/** The rest of a float whose integer part is [digits, i): as numberEnd(). */
function floatEnd (b: Uint8Array, start: number, digits: number, i: number, n: number): number {
  // The power of ten of the first significant digit: the number is below 10 ** (magnitude + 1).
  let magnitude = b[digits] === ZERO ? NO_DIGIT : i - digits - 1
  let c = b[i] as number
  if (c === DOT) {
    const fraction = ++i
    while (i < n && (c = b[i] as number) >= ZERO && c <= NINE) {
      if (c !== ZERO && magnitude === NO_DIGIT) magnitude = fraction - i - 1
      i++
    }
    if (i === fraction) return -1 - i
    c = i < n ? b[i] as number : -1
  }
  if (c === LOWER_E || c === UPPER_E) {
    i++
    const negative = b[i] === MINUS
    if (negative || b[i] === PLUS) i++
    const exponentDigits = i
    let exponent = 0
    while (i < n && (c = b[i] as number) >= ZERO && c <= NINE) {
      if (exponent < 1e8) exponent = exponent * 10 + c - ZERO // beyond, any text overflows or vanishes alike
      i++
    }
    if (i === exponentDigits) return -1 - i
    if (magnitude !== NO_DIGIT) magnitude += negative ? -exponent : exponent
  }
  if (magnitude >= LARGEST_FINITE_EXPONENT && infinite(b, start, i, magnitude)) numberProblem = INFINITE
  return i
}

function infinite (b: Uint8Array, start: number, end: number, magnitude: number): boolean {
  return magnitude > LARGEST_FINITE_EXPONENT || !Number.isFinite(Number(Buffer.from(b.buffer, b.byteOffset + start, end - start).toString('latin1')))
}

/** How a number the harness would not send reads, in its words. */
function numberText (b: Uint8Array, start: number, end: number): string {
  if (numberProblem === BIG_INT) return 'is an int beyond ±(2**53 - 1), which JSON readers cannot hold exactly; return it as a str'
  const text = Buffer.from(b.buffer, b.byteOffset + start, Math.min(end - start, 40)).toString('latin1')
  return `is ${text}${end - start > 40 ? '...' : ''}, ${b[start] === MINUS ? '-inf' : 'inf'} as a float, which is not JSON (NaN and Infinity are not numbers in JSON)`
}

/** The scan of one text, which can pause at a value's start and resume (scanJsonInSlices). */
class Scanner {
  private readonly path: Path
  private readonly n: number
  private readonly maxDepth: number
  private readonly maxValuesOutside: number
  private readonly maxMemberBytes: number
  // Where the scan is, kept while it pauses.
  private i: number
  private depth = 0
  private outside = 0
  private inMember = false
  private memberStart = -1
  private memberEnd = -1
  private expectKey = false
  private unreadable: JsonScan['unreadable']
  private done: JsonScan | undefined

  constructor (private readonly b: Uint8Array, private readonly options: ScanOptions) {
    this.path = new Path(b)
    this.n = b.length
    this.maxDepth = options.maxDepth ?? Infinity
    this.maxValuesOutside = options.maxValuesOutside ?? Infinity
    this.maxMemberBytes = options.maxMemberBytes ?? Infinity
    if (!isUtf8(b)) this.done = { error: 'not valid UTF-8' }
    this.i = whitespace(b, 0, this.n)
  }

  private tooLarge (): JsonScan {
    return { error: `"${String(this.options.member)}" is longer than ${this.maxMemberBytes} bytes`, memberTooLarge: true }
  }

  /** Scans up to the first value that starts at or past byte `until`: the verdict, or undefined
   *  when it paused there. */
  step (until: number): JsonScan | undefined {
    if (this.done !== undefined) return this.done
    const { b, n, path, maxDepth, maxValuesOutside, maxMemberBytes } = this
    const { member, onKey } = this.options
    let { objects, indexes } = path
    let { i, depth, outside, inMember, memberStart, memberEnd, expectKey, unreadable } = this
    for (;;) {
      if (i >= until) {
        Object.assign(this, { i, depth, outside, inMember, memberStart, memberEnd, expectKey, unreadable })
        return undefined
      }
      if (expectKey) {
        // A key of the object at `depth`, its colon, and the whitespace up to its value.
        if (b[i] !== QUOTE) return fault(b, i)
        const before = escapes
        const end = stringEnd(b, i, n)
        if (end < 0) return fault(b, -end - 1)
        path.keyStarts[depth] = i + 1
        path.keyEnds[depth] = end - 1
        path.keysEscaped[depth] = escapes === before ? 0 : 1
        if (lone) {
          lone = false
          unreadable ??= path.unreadable(depth - 1, member, inMember, `has a key ${pythonRepr(path.key(depth))} with a lone surrogate, which is not valid Unicode`)
        }
        if (onKey !== undefined) {
          path.depth = depth
          onKey(i + 1, end - 1, path)
        }
        i = end < n && (b[end] as number) <= 0x20 ? whitespace(b, end, n) : end
        if (b[i] !== COLON) return fault(b, i)
        i = ++i < n && (b[i] as number) <= 0x20 ? whitespace(b, i, n) : i
        if (depth === 1 && member !== undefined && path.keyIs(1, member)) {
          if (memberStart >= 0) return { error: `"${member}" appears twice` }
          memberStart = i
          inMember = true
        }
        expectKey = false
      }
      // A value at i.
      if (!inMember && ++outside > maxValuesOutside) return { error: `more than ${maxValuesOutside} values outside "${String(member)}"` }
      if (i >= n) return fault(b, i)
      const c = b[i] as number
      const starts = STARTS[c]
      if (starts === OPENER) {
        if (depth === maxDepth) return { error: `nested deeper than ${maxDepth} levels at byte ${i}` }
        if (++depth === objects.length) {
          path.grow()
          objects = path.objects
          indexes = path.indexes
        }
        i = ++i < n && (b[i] as number) <= 0x20 ? whitespace(b, i, n) : i
        indexes[depth] = 0
        if (c === LBRACE) {
          objects[depth] = 1
          if (b[i] !== RBRACE) {
            expectKey = true
            continue
          }
        } else {
          objects[depth] = 0
          if (b[i] !== RBRACKET) continue
        }
        i++
        depth--
      } else if (starts === STRING) {
        const end = stringEnd(b, i, n)
        if (end < 0) return fault(b, -end - 1)
        if (lone) {
          lone = false
          unreadable ??= path.unreadable(depth, member, inMember, 'is a str with a lone surrogate, which is not valid Unicode')
        }
        i = end
      } else if (starts === NUMBER) {
        // Most numbers are short integers: read here, without the call.
        let j = c === MINUS ? i + 1 : i
        let d = j < n ? b[j] as number : -1
        if (d > ZERO && d <= NINE) {
          while (++j < n && (d = b[j] as number) >= ZERO && d <= NINE);
        } else if (d === ZERO) {
          d = ++j < n ? b[j] as number : -1
        }
        if (j - i < MAX_SAFE_DIGITS.length && d !== DOT && d !== LOWER_E && d !== UPPER_E && b[j - 1] !== MINUS) {
          i = j
        } else {
          const end = numberEnd(b, i, n)
          if (end < 0) return fault(b, -end - 1)
          if (numberProblem !== 0) {
            unreadable ??= path.unreadable(depth, member, inMember, numberText(b, i, end))
            numberProblem = 0
          }
          i = end
        }
      } else if (starts === LITERAL) {
        const literal = c === 0x74 ? LITERALS.t : c === 0x66 ? LITERALS.f : LITERALS.n
        for (let k = 1; k < literal.length; k++) if (b[i + k] !== literal[k]) return fault(b, i + k)
        i += literal.length
      } else {
        return fault(b, i)
      }
      // A value ended at i: close what it ends, up to a comma or the end of the text.
      for (;;) {
        if (depth === 1 && inMember) {
          memberEnd = i
          inMember = false
          if (memberEnd - memberStart > maxMemberBytes) return this.tooLarge()
        }
        if (i < n && (b[i] as number) <= 0x20) i = whitespace(b, i, n)
        if (depth === 0) {
          if (i !== n) return fault(b, i)
          return {
            ...(unreadable !== undefined ? { unreadable } : {}),
            ...(memberStart >= 0 ? { member: { start: memberStart, end: memberEnd } } : {})
          }
        }
        const next = b[i]
        if (next === COMMA) {
          if (inMember && i - memberStart > maxMemberBytes) return this.tooLarge()
          i = ++i < n && (b[i] as number) <= 0x20 ? whitespace(b, i, n) : i
          indexes[depth] = (indexes[depth] as number) + 1
          if (objects[depth] === 1) {
            expectKey = true
            break
          }
          // The densest elements of a long array (the most values per byte: the costliest texts to
          // scan), read here without a turn of the outer loop: a one-digit integer, an empty array or
          // object. Halves the scan of 8 MiB of `0,` (53 to 27 ms) or of `{},` (33 to 20 ms).
          if ((inMember || outside < maxValuesOutside) && i < until) {
            const d = b[i] as number
            const after = b[i + 1]
            if (d >= ZERO && d <= NINE && (after === COMMA || after === RBRACKET)) {
              if (!inMember) outside++
              i++
              continue
            }
            if ((d === LBRACE && after === RBRACE) || (d === LBRACKET && after === RBRACKET)) {
              if (depth === maxDepth) return { error: `nested deeper than ${maxDepth} levels at byte ${i}` }
              if (!inMember) outside++
              i += 2
              continue
            }
          }
          break
        }
        if (next !== (objects[depth] === 1 ? RBRACE : RBRACKET)) return fault(b, i)
        i++
        depth--
      }
    }
  }
}

/** How long a slice of scanJsonInSlices() is, in bytes: about a millisecond of the event loop
 *  (8 MiB of the densest text, `0,0,...`, is scanned in 27 ms), 15 before V8 has optimised the
 *  scan (measured, with 128 slices per 8 MiB: at 256 KiB, 30-44 ms). */
export const SLICE_BYTES = 64 * 1024

export function scanJson (b: Uint8Array, options: ScanOptions = {}): JsonScan {
  lone = false // a previous scan may have ended at a fault
  numberProblem = 0
  return new Scanner(b, options).step(Infinity) as JsonScan
}

/** scanJson() in slices of about `sliceBytes`, the event loop free between them: a reply of 8 MiB
 *  never holds up a health check for the whole of its scan. The bytes must not change meanwhile. */
export async function scanJsonInSlices (b: Uint8Array, options: ScanOptions = {}, sliceBytes = SLICE_BYTES): Promise<JsonScan> {
  lone = false
  numberProblem = 0
  const scanner = new Scanner(b, options)
  let until = sliceBytes
  let verdict = scanner.step(until)
  while (verdict === undefined) {
    await setImmediate()
    until += sliceBytes
    verdict = scanner.step(until)
  }
  return verdict
}
