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
// A run in flight dims the last reply, shows a running clock and can be cancelled (the Run button
// turns into Cancel; Escape too): the request is aborted, which stops the run on the server, and
// its reply, should one still come, is never shown. The script, input and stdin are kept in
// localStorage (never the key) and come back on reload. A SYNTAX_ERROR's line, or the line of
// the script's last frame in a traceback, is marked in the gutter until the next edit or run.
// "Copy result" copies the reply as JSON; "Copy as cURL" the request as a shell command that
// reads the key from $PYSANDBOX_KEY (the key itself is never copied).
/* global document, navigator, fetch, performance, sessionStorage, localStorage, getComputedStyle, setInterval, clearInterval, setTimeout, clearTimeout, AbortController, Option, Blob, URL, TextDecoder, TextEncoder, btoa, atob */
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
const menu = $('examples')
// "(your script)": the editor's text is no example's, or the user's own script is kept apart.
const yours = new Option('(your script)', '')
yours.hidden = true

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

// The script, input and stdin outlive the tab (localStorage): a reload or a closed tab loses no
// work. Never the key, never the files (they can be large; an example's files come back with it).
// The user's own script, when an example replaces it, is kept apart too: "(your script)" in the
// examples menu brings it back.
const DRAFT_ITEM = 'pysandbox.draft'
const YOURS_ITEM = 'pysandbox.yours'
const current = () => ({ script: editor.value, input: inputBox.value, stdin: stdinBox.value })
function keep (item, value) {
  try {
    localStorage.setItem(item, JSON.stringify(value))
  } catch { // refused or full: then no older copy may come back on reload either
    try { localStorage.removeItem(item) } catch {}
  }
}
const keepDraft = () => keep(DRAFT_ITEM, current())
/** A kept script with its input and stdin, or undefined (none, or not one of ours). */
function kept (item) {
  try {
    const draft = JSON.parse(localStorage.getItem(item) ?? 'null')
    if (typeof draft?.script !== 'string') return undefined
    return { script: draft.script, input: typeof draft.input === 'string' ? draft.input : '', stdin: typeof draft.stdin === 'string' ? draft.stdin : '' }
  } catch {
    return undefined
  }
}

let numbered = 0
// The line an error points at ({ line, title }), marked in the gutter until the next edit or run.
let marked
function renderGutter (force = false) {
  const lines = editor.value.split('\n').length
  if (lines !== numbered || force) {
    numbered = lines
    const numbers = Array.from({ length: lines }, (_, i) => i + 1)
    if (marked && marked.line <= lines) {
      const mark = document.createElement('span')
      mark.className = 'mark'
      mark.title = marked.title
      mark.textContent = String(marked.line)
      gutter.replaceChildren(numbers.slice(0, marked.line - 1).map(n => `${n}\n`).join(''), mark, numbers.slice(marked.line).map(n => `\n${n}`).join(''))
    } else {
      gutter.textContent = numbers.join('\n')
    }
  }
  gutter.scrollTop = editor.scrollTop
}

/** The script's line a reply points at: a SYNTAX_ERROR's, or the last "<script>" frame's of a traceback. */
function errorLine (reply) {
  if (reply.code === 'SYNTAX_ERROR' && Number.isSafeInteger(reply.line)) return reply.line
  if (typeof reply.traceback !== 'string') return undefined
  const frames = [...reply.traceback.matchAll(/^ {2}File "<script>", line (\d+)/gm)]
  return frames.length > 0 ? Number(frames.at(-1)[1]) : undefined
}

/** Mark the line in the gutter, and scroll the editor to it if it is out of sight. */
function mark (line, title) {
  if (!(line >= 1 && line <= editor.value.split('\n').length)) return
  marked = { line, title }
  renderGutter(true)
  const height = parseFloat(getComputedStyle(editor).lineHeight)
  const top = (line - 1) * height
  if (top < editor.scrollTop || top + height > editor.scrollTop + editor.clientHeight) {
    editor.scrollTop = Math.max(0, top - editor.clientHeight / 3)
    gutter.scrollTop = editor.scrollTop
  }
}

function unmark () {
  if (marked === undefined) return
  marked = undefined
  renderGutter(true)
}

/** The example whose script the editor holds, if any. */
function exampleOf (script) {
  return Object.keys(EXAMPLES).find(name => example(name).script === script)
}

/** The menu names the example the editor holds, or shows "(your script)" once it was edited;
 *  "(your script)" is offered too while one is kept apart. */
function syncMenu () {
  const name = exampleOf(editor.value)
  yours.hidden = name !== undefined && kept(YOURS_ITEM) === undefined
  menu.value = name ?? ''
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

function example (name) {
  return typeof EXAMPLES[name] === 'string' ? { script: EXAMPLES[name] } : EXAMPLES[name]
}

/** Put a script (an example, or the kept draft) in the editor, with its input, stdin and files. */
function fill ({ script, input = '', stdin = '', files = [] }) {
  editor.value = script
  inputBox.value = input
  inputBox.removeAttribute('aria-invalid')
  stdinBox.value = stdin
  for (const file of files) uploads.set(file.name, encode(file.name, new TextEncoder().encode(file.text)))
  renderUploads()
  unmark()
  renderGutter()
  syncMenu()
  editor.focus()
}

function load (name) {
  fill(example(name))
  keepDraft()
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

// The reply shown, for "Copy result" (none while a run is in flight, or after a cancel).
let shownReply

function show (state, fields, reply) {
  output.dataset.state = state
  shownReply = reply
  $('copy-result').disabled = reply === undefined
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

/** 1234.5 (ms) → "1.2" (s) */
const seconds = ms => (ms / 1000).toFixed(1)

// The run in flight: { controller, started, clock }, or undefined.
let inFlight

/** The Run button turns into Cancel while a run is in flight, and back. */
function setRunning (running) {
  $('run-label').hidden = running
  $('cancel-label').hidden = !running
  runButton.title = running ? 'Cancel the run (Escape)' : 'Run (Ctrl+Enter)'
  runButton.classList.toggle('cancel', running)
}

/** The last reply stays, dimmed, under a clock until the new one comes. */
function startRunning (flight) {
  output.dataset.state = 'running'
  shownReply = undefined
  $('copy-result').disabled = true
  // Ten updates a second are not for a screen reader: the live region hears "Running…" once.
  const clock = document.createElement('span')
  clock.setAttribute('aria-hidden', 'true')
  $('status').replaceChildren('Running… ', clock)
  const tick = () => { clock.textContent = `${seconds(performance.now() - flight.started)} s` }
  tick()
  flight.clock = setInterval(tick, 100)
  setRunning(true)
}

/** The run is over (answered, refused or cancelled); a later run's button and clock are left alone. */
function finish (flight) {
  clearInterval(flight.clock)
  if (inFlight !== flight) return
  inFlight = undefined
  setRunning(false)
}

/** Abort the run in flight: the server stops it when the request goes, and its reply is never shown. */
function cancel () {
  const flight = inFlight
  if (flight === undefined) return
  finish(flight)
  flight.controller.abort()
  show('cancelled', { status: `Cancelled after ${seconds(performance.now() - flight.started)} s` })
}

async function run () {
  if (inFlight !== undefined) return
  const flight = { controller: new AbortController(), started: performance.now() }
  inFlight = flight
  unmark()
  startRunning(flight)
  try {
    await reading
    if (inFlight !== flight) return // cancelled while files were read
    const { body, status, problem } = requestBody()
    const { key, problem: keyProblem } = apiKey()
    if (problem || keyProblem) {
      show('error', { status: problem ? status : 'Not sent: the API key cannot be sent', error: problem ?? keyProblem })
      return
    }
    const headers = { 'content-type': 'application/json' }
    if (key !== '') headers.authorization = `Bearer ${key}`
    const response = await fetch('execute', { method: 'POST', headers, body: JSON.stringify(body), signal: flight.controller.signal })
    const reply = await response.json()
    if (inFlight !== flight) return // cancelled: a late reply is never shown
    const elapsed = Math.round(performance.now() - flight.started)
    const timing = [timings(response.headers.get('server-timing')), `total ${elapsed} ms`].filter(Boolean).join(' · ')
    const common = { backend: reply.backend, stdout: reply.stdout, stderr: reply.stderr, stdoutTruncated: reply.stdoutTruncated, stderrTruncated: reply.stderrTruncated, timing }
    const error = describeError(reply, response.headers.get('retry-after'))
    if (response.ok) {
      show('ok', { ...common, status: `${response.status} OK`, result: JSON.stringify(reply.result, null, 2), files: reply.files, filesLeftOut: reply.filesLeftOut }, reply)
    } else if (response.status === 401) {
      keyBox.setAttribute('aria-invalid', 'true')
      show('error', { ...common, status: `401 ${reply.code ?? reply.error ?? ''}`, error: `${keyAdvice(key !== '')}\n\n${error}` }, reply)
    } else {
      show('error', { ...common, status: `${response.status} ${reply.code ?? reply.error ?? ''}`, error }, reply)
      mark(errorLine(reply), `${reply.code}: ${reply.message}`)
    }
  } catch (error) {
    if (inFlight !== flight) return // cancelled: cancel() has said so
    show('error', { status: 'No reply', error: `The server could not be reached or did not answer JSON: ${error.message}` })
  } finally {
    finish(flight)
  }
}

// The copy buttons' word on what they did, for a moment.
let noteTimer
function copyNote (text) {
  clearTimeout(noteTimer)
  $('copy-note').textContent = text
  noteTimer = setTimeout(() => { $('copy-note').textContent = '' }, 4000)
}

/**
 * Text to the clipboard. navigator.clipboard exists only in a secure context (HTTPS, localhost):
 * over plain HTTP to another host, the old way, a selected scratch textarea and execCommand.
 */
async function copyText (text, what) {
  try {
    await navigator.clipboard.writeText(text)
  } catch {
    const focused = document.activeElement
    const scratch = document.createElement('textarea')
    scratch.className = 'scratch'
    scratch.readOnly = true
    scratch.value = text
    document.body.append(scratch)
    scratch.select()
    const copied = document.execCommand('copy')
    scratch.remove()
    focused?.focus()
    if (!copied) return copyNote('Not copied: the browser refused the clipboard')
  }
  copyNote(`Copied ${what}`)
}

/** 'it's' → "'it'\''s'": one word for a POSIX shell, whatever it holds. */
const shellQuote = text => `'${text.replaceAll("'", "'\\''")}'`

/**
 * The request as a cURL command: the body, compact JSON (one line, so no line of it is "JSON"),
 * in a quoted here-document (taken byte for byte: no expansion, no quoting to get wrong). The
 * key, when one is set, is read from $PYSANDBOX_KEY into a header that curl reads from a file
 * descriptor: never the key itself on a clipboard, nor in curl's arguments (which `ps` shows);
 * unset, bash stops before curl runs. --globoff: brackets in the page's path are no pattern.
 */
function curlCommand (body, withKey) {
  const url = new URL('execute', document.baseURI)
  url.username = '' // credentials in the page's address stay out of the command
  url.password = ''
  return [
    `curl -sS --globoff -X POST ${shellQuote(url.href)} \\`,
    "  -H 'content-type: application/json' \\",
    ...(withKey
      // eslint-disable-next-line no-template-curly-in-string -- bash's expansion, not JavaScript's
      ? ["  -H @/dev/fd/3 --data-binary @- 3<<KEY <<'JSON'", 'Authorization: Bearer ${PYSANDBOX_KEY:?set PYSANDBOX_KEY to your API key}', 'KEY']
      : ["  --data-binary @- <<'JSON'"]),
    JSON.stringify(body),
    'JSON',
    ''
  ].join('\n')
}

async function copyCurl () {
  await reading
  const { body, status } = requestBody()
  if (body === undefined) return copyNote(status)
  await copyText(curlCommand(body, keyBox.value.trim() !== ''), keyBox.value.trim() !== '' ? 'the cURL command (set PYSANDBOX_KEY to your key)' : 'the cURL command')
}

editor.addEventListener('input', () => {
  unmark()
  renderGutter()
  syncMenu()
  keepDraft()
})
editor.addEventListener('scroll', () => { gutter.scrollTop = editor.scrollTop })
for (const box of [editor, inputBox, stdinBox]) {
  box.addEventListener('keydown', event => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault()
      run()
    } else if (event.key === 'Tab' && !event.shiftKey && box === editor) {
      event.preventDefault() // Python wants spaces: Tab indents by four
      editor.setRangeText('    ', editor.selectionStart, editor.selectionEnd, 'end')
      unmark()
      renderGutter()
      syncMenu()
      keepDraft()
    }
  })
}
inputBox.addEventListener('input', () => {
  inputBox.removeAttribute('aria-invalid')
  keepDraft()
})
stdinBox.addEventListener('input', keepDraft)
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
runButton.addEventListener('click', () => { if (inFlight === undefined) run(); else cancel() })
document.addEventListener('keydown', event => {
  if (event.key === 'Escape' && inFlight !== undefined) {
    event.preventDefault()
    cancel()
  }
})
$('copy-result').addEventListener('click', () => {
  if (shownReply !== undefined) copyText(`${JSON.stringify(shownReply, null, 2)}\n`, 'the reply as JSON')
})
$('copy-curl').addEventListener('click', copyCurl)

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

menu.add(yours)
for (const name of Object.keys(EXAMPLES)) menu.add(new Option(name, name))
menu.addEventListener('change', () => {
  if (menu.value === '') {
    const mine = kept(YOURS_ITEM)
    if (mine !== undefined) fill(mine)
    keepDraft()
    return
  }
  // The user's own work is kept apart before an example replaces it.
  if (exampleOf(editor.value) === undefined) keep(YOURS_ITEM, current())
  load(menu.value)
})
restoreKey()
const draft = kept(DRAFT_ITEM)
if (draft === undefined) fill(example('hello'))
else fill({ ...draft, files: example(exampleOf(draft.script))?.files }) // an example's files come back with it
