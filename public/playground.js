// The playground: an editor with line numbers, Ctrl+Enter (or ⌘+Enter) runs the script through
// POST /execute, and the reply is shown pane by pane. No framework, no inline script (CSP).
/* global document, fetch, performance, Option */
'use strict'

const EXAMPLES = {
  hello: 'def main():\n    print("Hello from main!")\n    return {"msg": "success", "value": 42}\n',
  numpy: 'import numpy as np\n\n\ndef main():\n    a = np.arange(12).reshape(3, 4)\n    print(a)\n    # numpy scalars are not JSON: convert them\n    return {"sum": int(a.sum()), "column_means": a.mean(axis=0).tolist()}\n',
  pandas: 'import pandas as pd\n\n\ndef main():\n    df = pd.DataFrame({"city": ["Oslo", "Lima", "Oslo"], "temp": [3, 19, 5]})\n    print(df)\n    return df.groupby("city")["temp"].mean().to_dict()\n',
  'an error': 'def average(values):\n    return sum(values) / len(values)\n\n\ndef main():\n    return average([])\n',
  'not JSON': 'import numpy as np\n\n\ndef main():\n    return {"total": np.int64(3)}\n',
  'a time limit (infinite loop)': 'def main():\n    while True:\n        pass\n',
  'a memory limit': 'def main():\n    blob = bytearray(4 * 1024 ** 3)\n    return len(blob)\n'
}

const $ = id => document.getElementById(id)
const editor = $('script')
const gutter = $('gutter')
const runButton = $('run')
const output = $('output')

let numbered = 0
function renderGutter () {
  const lines = editor.value.split('\n').length
  if (lines !== numbered) {
    numbered = lines
    gutter.textContent = Array.from({ length: lines }, (_, i) => i + 1).join('\n')
  }
  gutter.scrollTop = editor.scrollTop
}

function load (name) {
  editor.value = EXAMPLES[name]
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

function show (state, fields) {
  output.dataset.state = state
  for (const id of ['status', 'result', 'error', 'stdout', 'stderr', 'timing']) $(id).textContent = fields[id] ?? ''
  $('backend').hidden = !fields.backend
  $('backend').textContent = fields.backend ?? ''
  $('stdout-flag').hidden = !fields.stdoutTruncated
  $('stderr-flag').hidden = !fields.stderrTruncated
}

function describeError (body) {
  const lines = [`${body.code ?? 'ERROR'}: ${body.message ?? ''}`]
  if (body.traceback) lines.push('', body.traceback.trimEnd())
  for (const key of ['exception', 'line', 'column', 'signal', 'exitCode', 'requestId']) {
    if (body[key] !== undefined && !(key === 'exception' && body.traceback)) lines.push(`${key}: ${body[key]}`)
  }
  return lines.join('\n')
}

let running = false
async function run () {
  if (running) return
  running = true
  runButton.disabled = true
  output.dataset.state = 'running'
  $('status').textContent = 'Running…'
  const started = performance.now()
  try {
    const response = await fetch('execute', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ script: editor.value })
    })
    const elapsed = Math.round(performance.now() - started)
    const body = await response.json()
    const timing = [timings(response.headers.get('server-timing')), `total ${elapsed} ms`].filter(Boolean).join(' · ')
    const common = { backend: body.backend, stdout: body.stdout, stderr: body.stderr, stdoutTruncated: body.stdoutTruncated, stderrTruncated: body.stderrTruncated, timing }
    if (response.ok) {
      show('ok', { ...common, status: `${response.status} OK`, result: JSON.stringify(body.result, null, 2) })
    } else {
      show('error', { ...common, status: `${response.status} ${body.code ?? body.error ?? ''}`, error: describeError(body) })
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
editor.addEventListener('keydown', event => {
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
    event.preventDefault()
    run()
  } else if (event.key === 'Tab' && !event.shiftKey) {
    event.preventDefault() // Python wants spaces: Tab indents by four
    editor.setRangeText('    ', editor.selectionStart, editor.selectionEnd, 'end')
    renderGutter()
  }
})
runButton.addEventListener('click', run)

const menu = $('examples')
for (const name of Object.keys(EXAMPLES)) menu.add(new Option(name, name))
menu.addEventListener('change', () => load(menu.value))
load('hello')
