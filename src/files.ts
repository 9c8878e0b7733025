// Files in and out of a run: the rules for their paths (the same both ways, and harness/run.py's
// for what it returns), the caller's files decoded and checked against the limits, and the
// encoding and media type of a returned file. The server never touches the sandbox's file
// system: files travel in the harness request and on the result channel.
import { extname } from 'node:path'
import { InvalidRequestError } from './errors/errors.js'

export const MAX_PATH_BYTES = 1024
export const MAX_NAME_BYTES = 255
export const MAX_PATH_DEPTH = 32
/** Where the script leaves the files it returns, in its working directory; no input goes there. */
export const OUTPUT_DIR = 'output'
/** tmpfs gives every file whole pages: what a file costs of the run's /tmp. */
const PAGE_BYTES = 4096

// C0 and C1 controls and DEL (NUL among them), and the bidirectional controls that make a name
// display as another (harness/workdir.py refuses the same).
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/u
const LONE_SURROGATE = /\p{Cs}/u

/** Why `path` is not a file's place in the working directory, or undefined when it is one:
 *  relative, normalised (no empty, "." or ".." part), well-formed Unicode without control
 *  characters, at most MAX_PATH_BYTES, parts of at most MAX_NAME_BYTES, MAX_PATH_DEPTH deep. */
export function pathProblem (path: string): string | undefined {
  if (path === '') return 'is empty'
  if (LONE_SURROGATE.test(path)) return 'is not valid Unicode (a lone surrogate)'
  if (CONTROL.test(path)) return 'holds a control character (NUL, newline, a bidirectional control, ...)'
  if (path.startsWith('/')) return 'is absolute; paths are relative to the working directory'
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) return `is longer than ${MAX_PATH_BYTES} bytes`
  const parts = path.split('/')
  if (parts.length > MAX_PATH_DEPTH) return `is more than ${MAX_PATH_DEPTH} levels deep`
  for (const part of parts) {
    if (part === '' || part === '.' || part === '..') return 'is not normalised (an empty, "." or ".." part)'
    if (Buffer.byteLength(part) > MAX_NAME_BYTES) return `has a part longer than ${MAX_NAME_BYTES} bytes`
  }
  return undefined
}

export type Encoding = 'utf8' | 'base64'

export interface FileIn { path: string, content: string, encoding?: Encoding }

/** A file for the run: its path and bytes. */
export interface InputFile { path: string, content: Buffer }

export interface FilesInLimits {
  count: number
  fileBytes: number
  totalBytes: number
  /** The run's /tmp: its bytes and inodes, which the files and their directories must fit. */
  tmpBytes: number
  tmpFiles: number
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

/** Strict base64 (RFC 4648's alphabet, padded, no line breaks): the bytes it holds, or undefined. */
export function base64Bytes (text: string): number | undefined {
  if (text.length % 4 !== 0 || !BASE64.test(text)) return undefined
  const padding = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0
  return text.length / 4 * 3 - padding
}

function decode (file: FileIn, where: string): Buffer {
  if (file.encoding !== 'base64') {
    // JSON can carry a lone surrogate, which UTF-8 cannot: never a silent U+FFFD.
    if (LONE_SURROGATE.test(file.content)) throw new InvalidRequestError(`${where}.content is not valid Unicode (a lone surrogate); send bytes as base64`)
    return Buffer.from(file.content, 'utf8')
  }
  if (base64Bytes(file.content) === undefined) throw new InvalidRequestError(`${where}.content is not base64 (RFC 4648, padded, no line breaks)`)
  return Buffer.from(file.content, 'base64')
}

/** The caller's files, decoded and checked: each path valid and outside output/, no path twice or
 *  both a file and a directory, within the count and size limits and the run's /tmp.
 *  Throws InvalidRequestError naming the offending path. */
export function inputFiles (files: readonly FileIn[], limits: FilesInLimits): InputFile[] {
  if (files.length > limits.count) throw new InvalidRequestError(`body.files has ${files.length} files; the limit is ${limits.count} (LIMIT_FILES_IN)`)
  const decoded: InputFile[] = []
  const filePaths = new Set<string>()
  const directories = new Set<string>()
  let total = 0
  let pages = 0
  files.forEach((file, index) => {
    const where = `body.files[${index}]`
    const problem = pathProblem(file.path)
    const shown = JSON.stringify(file.path)
    if (problem !== undefined) throw new InvalidRequestError(`${where}.path ${shown} ${problem}`)
    const parts = file.path.split('/')
    if (parts[0] === OUTPUT_DIR) throw new InvalidRequestError(`${where}.path ${shown} is under ${OUTPUT_DIR}/, where the script leaves the files it returns`)
    if (filePaths.has(file.path) || directories.has(file.path)) throw new InvalidRequestError(`${where}.path ${shown} is given twice (or is also a directory of another file)`)
    for (let depth = 1; depth < parts.length; depth++) {
      const directory = parts.slice(0, depth).join('/')
      if (filePaths.has(directory)) throw new InvalidRequestError(`${where}.path ${shown} is under ${JSON.stringify(directory)}, which is a file`)
      directories.add(directory)
    }
    filePaths.add(file.path)
    const content = decode(file, where)
    if (content.length > limits.fileBytes) throw new InvalidRequestError(`${where} (${shown}) is ${content.length} bytes; the limit is ${limits.fileBytes} (LIMIT_FILE_IN_BYTES)`)
    total += content.length
    if (total > limits.totalBytes) throw new InvalidRequestError(`body.files hold more than ${limits.totalBytes} bytes (LIMIT_FILES_IN_BYTES); ${where} (${shown}) goes over`)
    pages += Math.ceil(content.length / PAGE_BYTES)
    decoded.push({ path: file.path, content })
  })
  if (pages * PAGE_BYTES > limits.tmpBytes) {
    throw new InvalidRequestError(`body.files take ${pages * PAGE_BYTES} bytes of the run's /tmp in whole pages; it holds ${limits.tmpBytes} (LIMIT_TMP_MB)`)
  }
  if (filePaths.size + directories.size > limits.tmpFiles / 2) {
    throw new InvalidRequestError(`body.files need ${filePaths.size} files and ${directories.size} directories; at most ${Math.floor(limits.tmpFiles / 2)} together (half of LIMIT_TMP_FILES) leaves the script room`)
  }
  return decoded
}

const MEDIA_TYPES: Readonly<Record<string, string>> = {
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.svg': 'image/svg+xml',
  '.pdf': 'application/pdf',
  '.csv': 'text/csv',
  '.tsv': 'text/tab-separated-values',
  '.txt': 'text/plain',
  '.md': 'text/markdown',
  '.html': 'text/html',
  '.json': 'application/json',
  '.parquet': 'application/vnd.apache.parquet',
  '.xlsx': 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet',
  '.zip': 'application/zip'
}

/** A path that clashes with another of the list (one is a directory of the other), or undefined. */
export function clash (paths: readonly string[]): string | undefined {
  const files = new Set(paths)
  for (const path of paths) {
    const parts = path.split('/')
    for (let depth = 1; depth < parts.length; depth++) {
      const directory = parts.slice(0, depth).join('/')
      if (files.has(directory)) return directory
    }
  }
  return undefined
}

/** Bytes of a file's content as it travels. */
export function sizeOf (content: string, encoding: Encoding): number | undefined {
  return encoding === 'utf8' ? Buffer.byteLength(content) : base64Bytes(content)
}

/** A returned file's media type, from its name's extension alone (never from its content). */
export function mediaTypeOf (path: string): string {
  return MEDIA_TYPES[extname(path).toLowerCase()] ?? 'application/octet-stream'
}

/** A file the script returned, as the reply carries it. */
export interface ReturnedFile {
  path: string
  size: number
  mediaType: string
  encoding: Encoding
  content: string
}

/** A path under output/ that did not come back, and why. */
export interface LeftOutFile { path: string, reason: string }
