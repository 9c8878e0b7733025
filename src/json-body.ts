// The request body parser: strict JSON. Invalid UTF-8 and duplicate keys are refused rather
// than repaired or silently resolved (JSON.parse keeps the last duplicate; a proxy or a log
// reader might keep the first), so what we validate is exactly what the client meant.
import { InvalidJsonError } from './errors/errors.js'

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false })

/** The first key that appears twice in one object, or undefined. Expects valid JSON. */
export function duplicateKey (text: string): string | undefined {
  const objects: Array<Set<string> | undefined> = [] // one entry per open bracket; undefined for arrays
  let i = 0
  while (i < text.length) {
    const c = text[i]
    if (c === '"') {
      let end = i + 1
      while (text[end] !== '"') end += text[end] === '\\' ? 2 : 1
      const keys = objects.at(-1)
      let next = end + 1
      while (/\s/.test(text[next] ?? '')) next++
      if (keys !== undefined && text[next] === ':') {
        const key = JSON.parse(text.slice(i, end + 1)) as string
        if (keys.has(key)) return key
        keys.add(key)
      }
      i = end + 1
      continue
    }
    if (c === '{') objects.push(new Set())
    else if (c === '[') objects.push(undefined)
    else if (c === '}' || c === ']') objects.pop()
    i++
  }
  return undefined
}

export function parseJsonBody (body: Buffer): unknown {
  let text: string
  try {
    text = utf8.decode(body)
  } catch {
    throw new InvalidJsonError('the body is not valid UTF-8')
  }
  if (text.trim() === '') throw new InvalidJsonError('the body is empty')
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    throw new InvalidJsonError((error as Error).message)
  }
  const duplicate = duplicateKey(text)
  if (duplicate !== undefined) throw new InvalidJsonError(`the key "${duplicate}" appears twice in one object`)
  return value
}
