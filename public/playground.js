// The playground: an editor with line numbers, Ctrl+Enter (or ⌘+Enter) runs the script through
// POST /execute, and the reply is shown pane by pane. Optional input (JSON, for main(input)),
// stdin and files (picked or dropped on the page) go with the script; the files a run returns are
// shown: PNG, JPEG, GIF and WebP as images (data: URLs), and every file, those included, as a
// download of opaque bytes. Nothing returned is ever rendered as a document or navigated to in
// this origin: no SVG or HTML is put in an <img>, <object> or <iframe>, and downloads are Blobs
// of type application/octet-stream. No framework, no inline script (CSP).
// An API key, for a server that needs one, is sent as `Authorization: Bearer KEY` and kept in
// sessionStorage (this tab only: never localStorage, never the URL); the time and memory limits,
// when filled in, go as the body's `limits`.
/* global document, fetch, performance, sessionStorage, Option, Blob, URL, TextDecoder, TextEncoder, btoa, atob */
'use strict'

/** A CSV for the chart example: half a year of made-up sales (the same every time). */
function salesCsv () {
  const rows = ['month,region,product,units,amount']
  const regions = { North: 1.3, South: 0.8, East: 1.1, West: 0.6 }
  const products = { tea: 3.5, coffee: 4.25 }
  for (let month = 1; month <= 6; month++) {
    for (const [region, weight] of Object.entries(regions)) {
      for (const [product, price] of Object.entries(products)) {
        const units = Math.round((40 + 7 * month + (product.length * 11) % 17) * weight)
        rows.push(`2024-${String(month).padStart(2, '0')},${region},${product},${units},${(units * price).toFixed(2)}`)
      }
    }
  }
  return rows.join('\n') + '\n'
}

/** Each example is a script, or a script with the input, stdin and files it comes with. */
const EXAMPLES = {
  hello: 'def main():\n    print("Hello from main!")\n    return {"msg": "success", "value": 42}\n',
  numpy: 'import numpy as np\n\n\ndef main():\n    a = np.arange(12).reshape(3, 4)\n    print(a)\n    # numpy scalars are not JSON: convert them\n    return {"sum": int(a.sum()), "column_means": a.mean(axis=0).tolist()}\n',
  pandas: 'import pandas as pd\n\n\ndef main():\n    df = pd.DataFrame({"city": ["Oslo", "Lima", "Oslo"], "temp": [3, 19, 5]})\n    print(df)\n    return df.groupby("city")["temp"].mean().to_dict()\n',
  'a CSV in, a chart out (pandas, matplotlib)': {
    script: 'import matplotlib.pyplot as plt\nimport pandas as pd\n\n\ndef main():\n    # sales.csv came with this example: see Files, below\n    df = pd.read_csv("sales.csv")\n    print(df.describe().round(1))\n    by_region = (df.groupby("region")["amount"].sum()\n                 .sort_values(ascending=False))\n    ax = by_region.plot.bar(title="Sales by region", rot=0)\n    ax.set_ylabel("amount")\n    plt.tight_layout()\n    # a figure left open comes back as figures/1.png,\n    # and the files left under output/ come back too\n    by_region.to_csv("output/by_region.csv")\n    total = round(float(df["amount"].sum()), 2)\n    return {"rows": len(df), "total": total,\n            "by_region": by_region.round(2).to_dict()}\n',
    files: [{ name: 'sales.csv', text: salesCsv() }]
  },
  'input and stdin': {
    script: 'import sys\n\n\ndef main(data):\n    # data is the Input box\'s JSON; stdin is the stdin box\n    lines = sys.stdin.read().splitlines()\n    return {"hello": data["name"], "times": data["n"], "lines": lines}\n',
    input: '{"name": "Ada", "n": 3}',
    stdin: 'first line\nsecond line\n'
  },
  'an error': 'def average(values):\n    return sum(values) / len(values)\n\n\ndef main():\n    return average([])\n',
  'not JSON': 'import numpy as np\n\n\ndef main():\n    return {"total": np.int64(3)}\n',
  'a time limit (infinite loop)': 'def main():\n    while True:\n        pass\n',
  'a memory limit': 'def main():\n    blob = bytearray(4 * 1024 ** 3)\n    return len(blob)\n'
}

/** The only media types shown inline; everything else (SVG and HTML included) is a download. */
const IMAGE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp'])

const $ = id => document.getElementById(id)
const editor = $('script')
const gutter = $('gutter')
const runButton = $('run')
const output = $('output')
const inputBox = $('input')
const stdinBox = $('stdin')
const drop = $('drop')
const picker = $('file-picker')
const keyBox = $('key')
const wallBox = $('wall')
const memoryBox = $('memory')

// The key lives as long as the tab: sessionStorage, never localStorage (which outlives it) or
// the URL (which ends up in history, logs and Referer headers). Storage may be refused (a
// browser setting): the key then lasts as long as the page.
const KEY_ITEM = 'pysandbox.key'
function restoreKey () {
  try {
    keyBox.value = sessionStorage.getItem(KEY_ITEM) ?? ''
  } catch {}
}
function keepKey () {
  try {
    if (keyBox.value === '') sessionStorage.removeItem(KEY_ITEM)
    else sessionStorage.setItem(KEY_ITEM, keyBox.value)
  } catch {}
}

let numbered = 0
function renderGutter () {
  const lines = editor.value.split('\n').length
  if (lines !== numbered) {
    numbered = lines
    gutter.textContent = Array.from({ length: lines }, (_, i) => i + 1).join('\n')
  }
  gutter.scrollTop = editor.scrollTop
}

/** 1536 → "1.5 KiB" */
function formatSize (bytes) {
  if (bytes < 1024) return `${bytes} B`
  if (bytes < 1024 ** 2) return `${(bytes / 1024).toFixed(1)} KiB`
  return `${(bytes / 1024 ** 2).toFixed(1)} MiB`
}

function toBase64 (bytes) {
  let binary = ''
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000))
  return btoa(binary)
}

function fromBase64 (text) {
  const binary = atob(text)
  const bytes = new Uint8Array(binary.length)
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
  return bytes
}

// Files to send, by name (a file of the same name replaces the one before).
const uploads = new Map()
let reading = Promise.resolve()

/** A file's bytes as they travel: its text when they are UTF-8 (a BOM kept), else base64. */
function encode (name, bytes) {
  try {
    return { name, size: bytes.length, encoding: 'utf8', content: new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes) }
  } catch {
    return { name, size: bytes.length, encoding: 'base64', content: toBase64(bytes) }
  }
}

function renderUploads () {
  const list = $('uploads')
  list.replaceChildren(...[...uploads.values()].map(file => {
    const item = document.createElement('li')
    const name = document.createElement('span')
    name.className = 'name'
    name.textContent = file.name
    const size = document.createElement('span')
    size.className = 'size'
    size.textContent = formatSize(file.size)
    const remove = document.createElement('button')
    remove.type = 'button'
    remove.className = 'remove'
    remove.textContent = 'Remove'
    remove.setAttribute('aria-label', `Remove ${file.name}`)
    remove.addEventListener('click', () => {
      uploads.delete(file.name)
      renderUploads()
    })
    item.append(name, size, remove)
    return item
  }))
}

function note (text) {
  $('upload-note').textContent = text
  $('upload-note').hidden = !text
}

/** Read the picked or dropped files (a run waits for them). */
function addFiles (fileList) {
  const files = [...fileList]
  reading = reading.then(async () => {
    const problems = []
    for (const file of files) {
      try {
        uploads.set(file.name, encode(file.name, new Uint8Array(await file.arrayBuffer())))
      } catch (error) {
        problems.push(`${file.name}: not read (a folder?) ${error.message}`)
      }
    }
    note(problems.join('\n'))
    renderUploads()
  })
  return reading
}

function load (name) {
  const example = typeof EXAMPLES[name] === 'string' ? { script: EXAMPLES[name] } : EXAMPLES[name]
  editor.value = example.script
  inputBox.value = example.input ?? ''
  inputBox.removeAttribute('aria-invalid')
  stdinBox.value = example.stdin ?? ''
  for (const file of example.files ?? []) uploads.set(file.name, encode(file.name, new TextEncoder().encode(file.text)))
  renderUploads()
  renderGutter()
  editor.focus()
}

/** "queue;dur=0, sandbox;dur=107" → "queue 0 ms · sandbox 107 ms" */
function timings (header) {
  if (!header) return ''
  return header.split(',').map(part => {
    const [name, ...params] = part.trim().split(';')
    const dur = params.map(p => p.trim()).find(p => p.startsWith('dur='))
    return dur ? `${name} ${dur.slice(4)} ms` : name
  }).join(' · ')
}

// The blob: URLs of the last reply's downloads, let go at the next.
let objectUrls = []

/** A returned file: its image when it is PNG, JPEG, GIF or WebP, and a download of its bytes. */
function returnedFile (file) {
  const figure = document.createElement('figure')
  const bytes = file.encoding === 'base64' ? fromBase64(file.content) : new TextEncoder().encode(file.content)
  if (IMAGE_TYPES.has(file.mediaType)) {
    const image = document.createElement('img')
    image.src = `data:${file.mediaType};base64,${file.encoding === 'base64' ? file.content : toBase64(bytes)}`
    image.alt = file.path
    figure.append(image)
  }
  // application/octet-stream whatever the file is, and a download: never opened in this origin.
  const url = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }))
  objectUrls.push(url)
  const link = document.createElement('a')
  link.href = url
  link.download = file.path.replaceAll('/', '_')
  link.textContent = file.path
  const about = document.createElement('span')
  about.className = 'size'
  about.textContent = `${file.mediaType} · ${formatSize(file.size)}`
  const caption = document.createElement('figcaption')
  caption.append(link, ' ', about)
  figure.append(caption)
  return figure
}

function renderReturned (files = [], leftOut = []) {
  for (const url of objectUrls) URL.revokeObjectURL(url)
  objectUrls = []
  $('files').replaceChildren(...files.map(returnedFile))
  $('left-out').replaceChildren(...leftOut.map(({ path, reason }) => {
    const item = document.createElement('li')
    const name = document.createElement('span')
    name.className = 'name'
    name.textContent = path
    item.append(name, ` left out: ${reason}`)
    return item
  }))
  $('left-out').hidden = leftOut.length === 0
  $('returned').hidden = files.length === 0 && leftOut.length === 0
}

function show (state, fields) {
  output.dataset.state = state
  for (const id of ['status', 'result', 'error', 'stdout', 'stderr', 'timing']) $(id).textContent = fields[id] ?? ''
  $('backend').hidden = !fields.backend
  $('backend').textContent = fields.backend ?? ''
  $('stdout-flag').hidden = !fields.stdoutTruncated
  $('stderr-flag').hidden = !fields.stderrTruncated
  renderReturned(fields.files, fields.filesLeftOut)
}

function describeError (body, retryAfter) {
  const lines = [`${body.code ?? 'ERROR'}: ${body.message ?? ''}`]
  if (body.traceback) lines.push('', body.traceback.trimEnd())
  for (const key of ['exception', 'line', 'column', 'signal', 'exitCode', 'outputFiles', 'outputBytes', 'requestId']) {
    if (body[key] !== undefined && !(key === 'exception' && body.traceback)) lines.push(`${key}: ${body[key]}`)
  }
  if (retryAfter) lines.push(`retry after: ${retryAfter} s`)
  return lines.join('\n')
}

/** What a 401 means here: where the key goes, and whether the one sent was refused. */
function keyAdvice (sent) {
  return sent
    ? 'The server refused this API key: check the "API key" field (under the script), then run again.'
    : 'This server needs an API key: enter it in the "API key" field (under the script), then run again.'
}

// A key as a Bearer token carries it: printable ASCII, no space (fetch refuses the rest).
const KEY_CHARACTERS = /^[\x21-\x7e]+$/

/** The key to send ('' for none), or the reason it cannot be sent. */
function apiKey () {
  const key = keyBox.value.trim()
  if (key !== '' && !KEY_CHARACTERS.test(key)) {
    keyBox.setAttribute('aria-invalid', 'true')
    return { problem: 'The API key holds a space or a character a key never has (it is printable ASCII): paste it again.' }
  }
  return { key }
}

/** The limits filled in (blank: the server's default), or the reason one cannot be sent. */
function limits () {
  const chosen = {}
  const problems = []
  const wall = wallBox.value === '' ? undefined : Math.round(Number(wallBox.value) * 1000)
  if (wallBox.validity.badInput || (wall !== undefined && !(Number.isSafeInteger(wall) && wall >= 1))) {
    wallBox.setAttribute('aria-invalid', 'true')
    problems.push('The time limit is in seconds, a number above 0 such as 2 or 0.5 (at least 0.001), or blank for the server\'s default.')
  } else if (wall !== undefined) {
    chosen.wallMs = wall
  }
  const memory = memoryBox.value === '' ? undefined : Number(memoryBox.value)
  if (memoryBox.validity.badInput || (memory !== undefined && !(Number.isSafeInteger(memory) && memory >= 1))) {
    memoryBox.setAttribute('aria-invalid', 'true')
    problems.push('The memory limit is in MB, a whole number above 0, or blank for the server\'s default.')
  } else if (memory !== undefined) {
    chosen.memoryMb = memory
  }
  return problems.length > 0 ? { problem: problems.join('\n') } : { limits: chosen }
}

/** The request's body, or the reason there is none (the input box is not JSON, a limit is not a number). */
function requestBody () {
  const body = { script: editor.value }
  if (inputBox.value.trim() !== '') {
    try {
      body.input = JSON.parse(inputBox.value)
    } catch (error) {
      inputBox.setAttribute('aria-invalid', 'true')
      return { status: 'Not sent: the input is not JSON', problem: `The input box must hold one JSON value, or nothing (then main() is called without input).\n${error.message}` }
    }
  }
  if (stdinBox.value !== '') body.stdin = stdinBox.value
  if (uploads.size > 0) body.files = [...uploads.values()].map(({ name, content, encoding }) => ({ path: name, content, encoding }))
  const chosen = limits()
  if (chosen.problem) return { status: 'Not sent: a limit is not valid', problem: chosen.problem }
  if (Object.keys(chosen.limits).length > 0) body.limits = chosen.limits
  return { body }
}

let running = false
async function run () {
  if (running) return
  running = true
  runButton.disabled = true
  try {
    await reading
    const { body, status, problem } = requestBody()
    const { key, problem: keyProblem } = apiKey()
    if (problem || keyProblem) {
      show('error', { status: problem ? status : 'Not sent: the API key cannot be sent', error: problem ?? keyProblem })
      return
    }
    output.dataset.state = 'running'
    $('status').textContent = 'Running…'
    const headers = { 'content-type': 'application/json' }
    if (key !== '') headers.authorization = `Bearer ${key}`
    const started = performance.now()
    const response = await fetch('execute', { method: 'POST', headers, body: JSON.stringify(body) })
    const elapsed = Math.round(performance.now() - started)
    const reply = await response.json()
    const timing = [timings(response.headers.get('server-timing')), `total ${elapsed} ms`].filter(Boolean).join(' · ')
    const common = { backend: reply.backend, stdout: reply.stdout, stderr: reply.stderr, stdoutTruncated: reply.stdoutTruncated, stderrTruncated: reply.stderrTruncated, timing }
    const error = describeError(reply, response.headers.get('retry-after'))
    if (response.ok) {
      show('ok', { ...common, status: `${response.status} OK`, result: JSON.stringify(reply.result, null, 2), files: reply.files, filesLeftOut: reply.filesLeftOut })
    } else if (response.status === 401) {
      keyBox.setAttribute('aria-invalid', 'true')
      show('error', { ...common, status: `401 ${reply.code ?? reply.error ?? ''}`, error: `${keyAdvice(key !== '')}\n\n${error}` })
    } else {
      show('error', { ...common, status: `${response.status} ${reply.code ?? reply.error ?? ''}`, error })
    }
  } catch (error) {
    show('error', { status: 'No reply', error: `The server could not be reached or did not answer JSON: ${error.message}` })
  } finally {
    running = false
    runButton.disabled = false
  }
}

editor.addEventListener('input', renderGutter)
editor.addEventListener('scroll', () => { gutter.scrollTop = editor.scrollTop })
for (const box of [editor, inputBox, stdinBox]) {
  box.addEventListener('keydown', event => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault()
      run()
    } else if (event.key === 'Tab' && !event.shiftKey && box === editor) {
      event.preventDefault() // Python wants spaces: Tab indents by four
      editor.setRangeText('    ', editor.selectionStart, editor.selectionEnd, 'end')
      renderGutter()
    }
  })
}
inputBox.addEventListener('input', () => inputBox.removeAttribute('aria-invalid'))
keyBox.addEventListener('input', () => {
  keyBox.removeAttribute('aria-invalid')
  keepKey()
})
for (const box of [wallBox, memoryBox]) box.addEventListener('input', () => box.removeAttribute('aria-invalid'))
for (const box of [keyBox, wallBox, memoryBox]) {
  box.addEventListener('keydown', event => {
    if (event.key === 'Enter') {
      event.preventDefault()
      run()
    }
  })
}
runButton.addEventListener('click', run)

// Files: the picker, or dropped anywhere on the page (a drop that is not files, text into a box,
// is left alone; a dropped file is never opened in place of the page).
picker.addEventListener('change', () => {
  addFiles(picker.files)
  picker.value = '' // the same file can be picked again
})
const carriesFiles = event => Boolean(event.dataTransfer?.types.includes('Files'))
let dragDepth = 0
document.addEventListener('dragenter', event => {
  if (!carriesFiles(event)) return
  event.preventDefault()
  dragDepth++
  drop.dataset.over = 'true'
})
document.addEventListener('dragleave', event => {
  if (!carriesFiles(event)) return
  dragDepth = Math.max(0, dragDepth - 1)
  if (dragDepth === 0) delete drop.dataset.over
})
document.addEventListener('dragover', event => {
  if (!carriesFiles(event)) return
  event.preventDefault()
  event.dataTransfer.dropEffect = 'copy'
})
document.addEventListener('drop', event => {
  if (!carriesFiles(event)) return
  event.preventDefault()
  dragDepth = 0
  delete drop.dataset.over
  addFiles(event.dataTransfer.files)
})

const menu = $('examples')
for (const name of Object.keys(EXAMPLES)) menu.add(new Option(name, name))
menu.addEventListener('change', () => load(menu.value))
restoreKey()
load('hello')
