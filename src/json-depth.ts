// How deep a JSON text nests, measured before anything parses it: a text nested 200,000 deep
// parses, but then overflows the stack wherever it is walked recursively (a serializer, Python's
// json scanner). Used on the result channel and on a request's `input`.

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPENERS = new Set([0x5b, 0x7b]) // [ {
const CLOSERS = new Set([0x5d, 0x7d]) // ] }

/** Whether the JSON text nests no deeper than `max`, in one pass without recursion. Brackets
 *  inside strings do not count; UTF-8 continuation bytes never equal an ASCII byte. Whether the
 *  text is valid JSON is JSON.parse's to say. */
export function nestsWithin (bytes: Uint8Array, max: number): boolean {
  let depth = 0
  let inString = false
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i] as number
    if (inString) {
      if (byte === BACKSLASH) i++ // the escaped character cannot end the string
      else if (byte === QUOTE) inString = false
    } else if (byte === QUOTE) {
      inString = true
    } else if (OPENERS.has(byte)) {
      if (++depth > max) return false
    } else if (CLOSERS.has(byte)) {
      depth--
    }
  }
  return true
}
