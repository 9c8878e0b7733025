// The playground end to end in headless Chromium against a real server with the nsjail backend
// (or the server at PYSANDBOX_URL): type a script, Ctrl+Enter, read the panes; input, stdin and
// files (picked and dropped) go with it, and returned files come back as images or downloads.
// Under helmet's Content-Security-Policy, so any inline script or style would show up as a
// violation here. Returned files are hostile: an SVG or HTML file a script made must never run.
// A server that needs an API key: the key field, kept in sessionStorage, sent as a Bearer token;
// and the limits fields, sent as the body's `limits`. A run in flight dims the last reply under a
// clock and can be cancelled; the script survives a reload; an error's line is marked in the
// gutter; the reply copies as JSON and the request as a cURL command that bash runs.
// Chromium is Debian's package (/usr/bin/chromium), a test-only dependency: .ci/run and
// `make test` install it. Without it this test fails; it never skips silently.
import t, { type Test } from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { execFile } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { chromium, type Browser, type Download, type Page, type Request } from 'playwright-core'
import { PROJECT_ROOT } from '../../src/config.js'
import { externalUrl, startServer, type Target } from '../helpers/server.js'

const CHROMIUM = '/usr/bin/chromium'
const SCREENSHOT = resolve(PROJECT_ROOT, 'docs/playground.png')
/**
 * The README's screenshot (the CSV-and-chart example's result) is written when it is missing or
 * PYSANDBOX_SCREENSHOT=1 (the timings in it differ every run: rewriting it each time would leave
 * every work tree modified); each run's own screenshot goes to .tap/playground.png.
 */
const screenshotPath = !existsSync(SCREENSHOT) || process.env.PYSANDBOX_SCREENSHOT === '1' ? SCREENSHOT : resolve(PROJECT_ROOT, '.tap/playground.png')

if (!existsSync(CHROMIUM)) {
  t.fail(`${CHROMIUM} is missing: the playground test needs Debian's chromium package (apt-get install chromium; make test installs it)`)
} else {
  // SANDBOX_UID_BASE when given, so a run of this file beside another suite's servers shares no uid.
  const uidBase = Number(process.env.SANDBOX_UID_BASE ?? 1_900_000_000)
  const target = await startServer({ SANDBOX_BACKEND: 'nsjail', SANDBOX_UID_BASE: String(uidBase) })
  t.teardown(target.close)
  const browser: Browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  t.teardown(async () => { await browser.close() })

  /**
   * The page, every console error, page error and failed request it has had, and the bodies it
   * has POSTed to /execute (with the Authorization header of each, in `authorization`). Every
   * Blob the page makes a blob: URL of has its type noted in window.blobTypes (by an init script:
   * the test's, not the page's), so a test can tell what a download link would hand over.
   */
  async function open (t: Test, path: string, viewport = { width: 1100, height: 600 }, server: Target = target): Promise<{ page: Page, problems: string[], sent: Array<Record<string, unknown>>, authorization: Array<string | undefined> }> {
    // A context of its own (its own localStorage), that may use the clipboard; closed with the page.
    const context = await browser.newContext({ viewport, acceptDownloads: true, permissions: ['clipboard-read', 'clipboard-write'] })
    const page = await context.newPage()
    page.once('close', () => { context.close().catch(() => {}) }) // the browser may be closing already
    const problems: string[] = []
    const sent: Array<Record<string, unknown>> = []
    const authorization: Array<string | undefined> = []
    page.on('console', message => { if (message.type() === 'error') problems.push(`console: ${message.text()}`) })
    page.on('pageerror', error => problems.push(`page error: ${error.message}`))
    page.on('requestfailed', request => problems.push(`request failed: ${request.url()} ${request.failure()?.errorText ?? ''}`))
    page.on('request', (request: Request) => {
      if (request.method() !== 'POST' || !request.url().endsWith('/execute')) return
      sent.push(request.postDataJSON())
      authorization.push(request.headers().authorization)
    })
    await page.addInitScript(() => {
      const types: Record<string, string> = {}
      Object.assign(window, { blobTypes: types })
      const create = URL.createObjectURL.bind(URL)
      URL.createObjectURL = (object: Blob | MediaSource) => {
        const url = create(object)
        types[url] = object instanceof Blob ? object.type : 'not a Blob'
        return url
      }
    })
    const response = await page.goto(`${server.url}${path}`)
    t.equal(response?.status(), 200, `GET ${path}`)
    return { page, problems, sent, authorization }
  }

  /** Run what the page holds and wait for the reply to be shown. */
  async function runAndWait (page: Page, state: 'ok' | 'error'): Promise<void> {
    await page.locator('#script').press('Control+Enter')
    await page.locator(`#output[data-state="${state}"]`).waitFor({ timeout: 30_000 })
  }

  /** Click a download link: the download's name and bytes (and the page stays where it was). */
  async function download (page: Page, selector: string): Promise<{ name: string, bytes: Buffer }> {
    const [started] = await Promise.all([page.waitForEvent('download'), page.locator(selector).click()])
    const saved: Download = started
    const path = await saved.path()
    return { name: saved.suggestedFilename(), bytes: readFileSync(path) }
  }

  /** The type of the Blob behind a blob: URL the page made. */
  async function blobType (page: Page, selector: string): Promise<string | undefined> {
    const href = await page.locator(selector).getAttribute('href') ?? ''
    return await page.evaluate(url => (window as unknown as { blobTypes: Record<string, string> }).blobTypes[url], href)
  }

  const sha256 = (bytes: Buffer | string): string => createHash('sha256').update(bytes).digest('hex')

  /** What the page put on the clipboard (the context may read it). */
  async function clipboard (page: Page): Promise<string> {
    return await page.evaluate(async () => await navigator.clipboard.readText())
  }

  /** Click a copy button and wait for its "Copied …" note: the clipboard's text. */
  async function copy (page: Page, button: string, note: string | RegExp): Promise<string> {
    await page.evaluate(async () => { await navigator.clipboard.writeText('') })
    await page.locator(button).click()
    await page.locator('#copy-note', { hasText: note }).waitFor({ timeout: 5_000 })
    return await clipboard(page)
  }

  /** Run a command as a person would paste it: `bash -c`, with PATH and `env` alone. */
  async function bash (command: string, env: Record<string, string> = {}): Promise<string> {
    const { stdout } = await promisify(execFile)('bash', ['-c', command], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, timeout: 30_000 })
    return stdout
  }

  /** The sandboxes the server is running now (its /metrics gauge). */
  async function running (server: Target = target): Promise<number> {
    const metrics = await (await fetch(`${server.url}/metrics`)).text()
    return Number(/^pysandbox_running_sandboxes (\d+)$/m.exec(metrics)?.[1] ?? NaN)
  }

  const backend = (await (await fetch(`${target.url}/readyz`)).json() as { backend: string }).backend

  t.test('type a script, Ctrl+Enter: the result, stdout, backend and timings appear', async t => {
    const { page, problems } = await open(t, '/')
    t.teardown(async () => { await page.close() })
    const editor = page.locator('#script')
    t.match(await editor.inputValue(), /def main\(\):/, 'an example is loaded at start')
    await editor.fill('')
    await editor.pressSequentially('import numpy as np\nimport sys\n\ndef main():\n    print("rows:", 3)\n    print("careful", file=sys.stderr)\n    return {"sum": int(np.arange(4).sum()), "ok": True}')
    t.equal(await page.locator('#gutter').textContent(), '1\n2\n3\n4\n5\n6\n7', 'a line number per line')
    await editor.press('Control+Enter')
    await page.locator('#output[data-state="ok"]').waitFor({ timeout: 30_000 })

    t.same(JSON.parse(await page.locator('#result').textContent() ?? ''), { sum: 6, ok: true }, 'the result')
    t.equal(await page.locator('#stdout').textContent(), 'rows: 3\n')
    t.equal(await page.locator('#stderr').textContent(), 'careful\n')
    t.equal(await page.locator('#error').textContent(), '')
    t.equal(await page.locator('#backend').textContent(), backend, 'the backend that ran it')
    t.match(await page.locator('#status').textContent(), /^200 OK$/)
    t.match(await page.locator('#timing').textContent(), /^queue \d+ ms · sandbox \d+ ms · total \d+ ms$/, 'the Server-Timing durations')
    t.same(problems, [], 'no CSP violation, script error or failed request')
  })

  t.test('an example from the menu that raises: the error pane shows the code and traceback', async t => {
    const { page, problems } = await open(t, '/')
    t.teardown(async () => { await page.close() })
    await page.locator('#examples').selectOption('an error')
    t.match(await page.locator('#script').inputValue(), /return average\(\[\]\)/)
    await page.locator('#script').press('Control+Enter')
    await page.locator('#output[data-state="error"]').waitFor({ timeout: 30_000 })
    t.equal(await page.locator('#status').textContent(), '422 MAIN_RAISED')
    const error = await page.locator('#error').textContent() ?? ''
    t.match(error, /^MAIN_RAISED: ZeroDivisionError: division by zero\n\nTraceback \(most recent call last\):\n/)
    t.match(error, /line 6, in main/)
    t.equal(await page.locator('#result').textContent(), '')
    t.equal(await page.locator('#backend').textContent(), backend)
    t.same(problems, ['console: Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)'], 'Chromium notes the 422; nothing else')
  })

  t.test('input and stdin reach the script; input that is not JSON is reported and nothing is sent', async t => {
    const { page, problems, sent } = await open(t, '/')
    t.teardown(async () => { await page.close() })

    await page.locator('#examples').selectOption('input and stdin')
    t.equal(await page.locator('#input').inputValue(), '{"name": "Ada", "n": 3}', 'the example brings its input')
    await runAndWait(page, 'ok')
    t.same(JSON.parse(await page.locator('#result').textContent() ?? ''), { hello: 'Ada', times: 3, lines: ['first line', 'second line'] }, 'the example\'s input and stdin')

    await page.locator('#script').fill('import sys\n\n\ndef main(data):\n    return {"data": data, "line": input(), "rest": sys.stdin.read()}\n')
    await page.locator('#input').fill('{"n": [1, 2.5, null], "s": "é ✓"}')
    await page.locator('#stdin').fill('first\nsecond\nthird')
    await runAndWait(page, 'ok')
    t.same(JSON.parse(await page.locator('#result').textContent() ?? ''), { data: { n: [1, 2.5, null], s: 'é ✓' }, line: 'first', rest: 'second\nthird' })
    t.same(sent.at(-1), { script: await page.locator('#script').inputValue(), input: { n: [1, 2.5, null], s: 'é ✓' }, stdin: 'first\nsecond\nthird' }, 'input as JSON, stdin as text')

    await page.locator('#input').fill('null')
    await page.locator('#stdin').fill('')
    await page.locator('#script').fill('import sys\n\n\ndef main(data):\n    return {"data": data, "stdin": sys.stdin.read()}\n')
    await runAndWait(page, 'ok')
    t.same(JSON.parse(await page.locator('#result').textContent() ?? ''), { data: null, stdin: '' }, 'null is an input: main(None)')
    t.same(Object.keys(sent.at(-1) ?? {}).sort(), ['input', 'script'], 'an empty stdin box sends no stdin')

    const before = sent.length
    await page.locator('#input').fill('{"n": ')
    await page.locator('#input').press('Control+Enter')
    await page.locator('#output[data-state="error"]').waitFor({ timeout: 5_000 })
    t.equal(await page.locator('#status').textContent(), 'Not sent: the input is not JSON')
    t.match(await page.locator('#error').textContent(), /^The input box must hold one JSON value/)
    t.equal(await page.locator('#result').textContent(), '', 'the last result is gone')
    t.equal(await page.locator('#input').getAttribute('aria-invalid'), 'true', 'the box is marked')
    await page.waitForTimeout(300)
    t.equal(sent.length, before, 'no request was sent')

    await page.locator('#input').fill('')
    t.equal(await page.locator('#input').getAttribute('aria-invalid'), null, 'typing clears the mark')
    await page.locator('#script').fill('def main():\n    return "no input"\n')
    await runAndWait(page, 'ok')
    t.same(sent.at(-1), { script: 'def main():\n    return "no input"\n' }, 'empty boxes: neither input nor stdin is sent, main() is called')
    t.same(problems, [], 'no CSP violation, script error or failed request')
  })

  t.test('files picked and dropped are sent; a returned PNG is an image, a CSV a download, a symbolic link is left out', async t => {
    const { page, problems, sent } = await open(t, '/')
    t.teardown(async () => { await page.close() })
    const dir = mkdtempSync(join(tmpdir(), 'pysandbox-playground-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const csv = 'name,score\nAda,3\nGrace,5\n'
    const binary = Buffer.from([...Array.from({ length: 256 }, (_, i) => i), 0xff, 0xfe, 0xc3])
    writeFileSync(join(dir, 'scores.csv'), csv)
    writeFileSync(join(dir, 'blob.bin'), binary)
    const bom = Buffer.from('\ufeffwith a BOM\n')
    writeFileSync(join(dir, 'bom.txt'), bom)

    await page.locator('#file-picker').setInputFiles([join(dir, 'scores.csv'), join(dir, 'blob.bin'), join(dir, 'bom.txt')])
    await page.locator('#uploads li').nth(2).waitFor()
    t.same(await page.locator('#uploads li .name').allTextContents(), ['scores.csv', 'blob.bin', 'bom.txt'], 'the picked files are listed')
    t.same(await page.locator('#uploads li .size').allTextContents(), [`${csv.length} B`, '259 B', `${bom.length} B`], 'with their sizes')

    // A drop onto the page, as a browser makes it: dragenter marks the drop area, drop adds.
    await page.evaluate(() => {
      const carry = (names: string[]): DataTransfer => {
        const transfer = new DataTransfer()
        for (const name of names) transfer.items.add(new File([`${name} came by drop\n`], name, { type: 'text/plain' }))
        return transfer
      }
      document.querySelector('#script')?.dispatchEvent(new DragEvent('dragenter', { dataTransfer: carry(['dropped.txt']), bubbles: true, cancelable: true }))
    })
    t.equal(await page.locator('#drop').getAttribute('data-over'), 'true', 'a drag of files over the page marks the drop area')
    const dropped = await page.evaluate(() => {
      const transfer = new DataTransfer()
      for (const name of ['dropped.txt', 'extra.txt']) transfer.items.add(new File([`${name} came by drop\n`], name, { type: 'text/plain' }))
      const event = new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true })
      document.querySelector('#script')?.dispatchEvent(event)
      return event.defaultPrevented
    })
    t.ok(dropped, 'the page takes the drop (the browser does not open the file instead)')
    await page.locator('#uploads li').nth(4).waitFor()
    t.equal(await page.locator('#drop').getAttribute('data-over'), null, 'the mark goes')
    await page.locator('#uploads button[aria-label="Remove extra.txt"]').click()
    t.same(await page.locator('#uploads li .name').allTextContents(), ['scores.csv', 'blob.bin', 'bom.txt', 'dropped.txt'], 'a removed file is gone')

    await page.locator('#script').fill([
      'import hashlib',
      'import os',
      'import matplotlib.pyplot as plt',
      '',
      '',
      'def main():',
      '    plt.plot([1, 3, 2])  # left open: figures/1.png',
      '    with open("output/report.csv", "w") as out:',
      '        out.write(open("scores.csv").read().upper())',
      '    os.symlink("/etc/passwd", "output/passwd")',
      '    return {',
      '        "csv": open("scores.csv").read(),',
      '        "bin": hashlib.sha256(open("blob.bin", "rb").read()).hexdigest(),',
      '        "bom": open("bom.txt", "rb").read().hex(),',
      '        "dropped": open("dropped.txt").read(),',
      '        "extra": os.path.exists("extra.txt"),',
      '    }',
      ''
    ].join('\n'))
    await runAndWait(page, 'ok')
    t.same(JSON.parse(await page.locator('#result').textContent() ?? ''), {
      csv,
      bin: sha256(binary),
      bom: bom.toString('hex'),
      dropped: 'dropped.txt came by drop\n',
      extra: false
    }, 'every file arrived byte for byte (a BOM kept); the removed one did not go')
    t.same((sent.at(-1)?.files as Array<{ path: string, encoding: string }>).map(({ path, encoding }) => ({ path, encoding })), [
      { path: 'scores.csv', encoding: 'utf8' },
      { path: 'blob.bin', encoding: 'base64' },
      { path: 'bom.txt', encoding: 'utf8' },
      { path: 'dropped.txt', encoding: 'utf8' }
    ], 'UTF-8 files as text, the rest as base64')

    const image = page.locator('#files img')
    t.equal(await image.count(), 1, 'one image: the figure')
    t.equal(await image.getAttribute('alt'), 'figures/1.png')
    t.match(await image.getAttribute('src'), /^data:image\/png;base64,iVBORw0KGgo/, 'a data: URL of the PNG')
    t.ok(await image.evaluate((element: HTMLImageElement) => element.complete && element.naturalWidth > 0), 'the browser decoded it (img-src allows data:)')
    t.equal(await page.locator('#files a').count(), 2, 'every returned file is a download (the figure too)')

    t.equal(await page.locator('#files a[download="report.csv"]').textContent(), 'report.csv')
    t.match(await page.locator('#files a[download="report.csv"]').getAttribute('href'), /^blob:/)
    t.equal(await blobType(page, '#files a[download="report.csv"]'), 'application/octet-stream', 'the CSV is opaque bytes')
    t.same(await download(page, '#files a[download="report.csv"]'), { name: 'report.csv', bytes: Buffer.from(csv.toUpperCase()) }, 'the CSV downloads as it was left')
    const figure = await download(page, '#files a[download="figures_1.png"]')
    t.equal(figure.bytes.subarray(0, 8).toString('hex'), '89504e470d0a1a0a', 'the figure downloads as a PNG')
    t.match(await page.locator('#left-out').textContent(), /passwd left out: .*symbolic link/, 'a file left out, with its reason')
    t.same(problems, [], 'no CSP violation, script error or failed request')
  })

  t.test('a file whose name the server refuses: the 400 names it, and the file can be removed', async t => {
    const { page, problems } = await open(t, '/')
    t.teardown(async () => { await page.close() })
    await page.locator('#file-picker').setInputFiles({ name: 'output', mimeType: 'text/plain', buffer: Buffer.from('x') })
    await page.locator('#uploads li').waitFor()
    await runAndWait(page, 'error')
    t.equal(await page.locator('#status').textContent(), '400 INVALID_REQUEST')
    t.match(await page.locator('#error').textContent(), /^INVALID_REQUEST: body\.files\[0\]\.path "output" is under output\//)
    await page.locator('#uploads button[aria-label="Remove output"]').click()
    await runAndWait(page, 'ok')
    t.same(problems, ['console: Failed to load resource: the server responded with a status of 400 (Bad Request)'], 'Chromium notes the 400; nothing else')
  })

  t.test('returned SVG and HTML with scripts: offered as octet-stream downloads only, never rendered, nothing runs', async t => {
    const { page, problems } = await open(t, '/')
    t.teardown(async () => { await page.close() })
    const svg = '<svg xmlns="http://www.w3.org/2000/svg" onload="window.pwned = \'svg onload\'; top.document.title = \'pwned\'">' +
      '<script>window.pwned = \'svg script\'; top.document.title = \'pwned\'</script><rect width="10" height="10"/></svg>\n'
    const html = '<!doctype html><title>pwned</title><script>window.pwned = \'html script\'; top.document.title = \'pwned\'</script>' +
      '<img src="x" onerror="window.pwned = \'html onerror\'">\n'
    await page.locator('#script').fill([
      'import json',
      '',
      '',
      'def main():',
      `    open("output/evil.svg", "w").write(json.loads(${JSON.stringify(JSON.stringify(svg))}))`,
      `    open("output/evil.html", "w").write(json.loads(${JSON.stringify(JSON.stringify(html))}))`,
      '    return "written"',
      ''
    ].join('\n'))
    await runAndWait(page, 'ok')
    t.same(await page.locator('#files figcaption a').allTextContents(), ['evil.html', 'evil.svg'], 'both came back')
    t.same(await page.locator('#files figcaption .size').allTextContents(), [`text/html · ${html.length} B`, `image/svg+xml · ${svg.length} B`])

    for (const [name, content] of [['evil.svg', svg], ['evil.html', html]] as const) {
      const link = `#files a[download="${name}"]`
      t.match(await page.locator(link).getAttribute('href'), /^blob:/, `${name}: a blob: link`)
      t.equal(await blobType(page, link), 'application/octet-stream', `${name}: its Blob is application/octet-stream, not its own type`)
      t.same(await download(page, link), { name, bytes: Buffer.from(content) }, `${name}: clicking it downloads it`)
    }
    await page.waitForTimeout(500)
    t.equal(await page.locator('#files img').count(), 0, 'no <img> of either')
    t.equal(await page.locator('object, embed, iframe, frame, svg').count(), 0, 'no <object>, <embed>, <iframe> or inline <svg> anywhere')
    t.equal(page.frames().length, 1, 'no frame was made')
    t.equal(page.url(), `${target.url}/`, 'the page never navigated')
    t.equal(await page.title(), 'PySandbox playground', 'no script of theirs changed the title')
    t.equal(await page.evaluate(() => (window as unknown as { pwned?: string }).pwned), undefined, 'no script of theirs ran')
    t.same(problems, [], 'and none was even tried (a CSP refusal would be a console error)')
  })

  t.test('the CSV-and-chart example: its CSV is attached, pandas summarises it, the bar chart comes back as an image', async t => {
    const { page, problems, sent } = await open(t, '/', { width: 1200, height: 860 })
    t.teardown(async () => { await page.close() })
    await page.locator('#examples').selectOption('a CSV in, a chart out (pandas, matplotlib)')
    t.match(await page.locator('#script').inputValue(), /pd\.read_csv\("sales\.csv"\)/)
    t.same(await page.locator('#uploads li .name').allTextContents(), ['sales.csv'], 'the example attaches its CSV')
    await runAndWait(page, 'ok')
    const result = JSON.parse(await page.locator('#result').textContent() ?? '')
    t.equal(result.rows, 48, 'every row of the CSV')
    t.same(Object.keys(result.by_region).sort(), ['East', 'North', 'South', 'West'])
    const csv = (sent.at(-1)?.files as Array<{ path: string, content: string, encoding: string }>)[0]
    t.equal(csv?.path, 'sales.csv')
    t.equal(csv?.encoding, 'utf8')
    t.match(csv?.content, /^month,region,product,units,amount\n2024-01,North,tea,\d+,\d+\.\d\d\n/)
    t.match(await page.locator('#stdout').textContent(), /units\s+amount/, 'pandas\' summary')
    const chart = page.locator('#files img[alt="figures/1.png"]')
    t.match(await chart.getAttribute('src'), /^data:image\/png;base64,/)
    t.same(await chart.evaluate((element: HTMLImageElement) => [element.naturalWidth, element.naturalHeight]), [640, 480], 'the bar chart, decoded')
    t.equal(await page.locator('#files a[download="by_region.csv"]').count(), 1, 'and the CSV it wrote, as a download')
    mkdirSync(resolve(screenshotPath, '..'), { recursive: true })
    await page.screenshot({ path: screenshotPath })
    t.same(problems, [], 'no CSP violation, script error or failed request')
  })

  const SLEEPS = 'import time\n\n\ndef main():\n    time.sleep(2)\n    return "slept"\n'

  t.test('the limits: blank sends none; filled, limits.wallMs (seconds × 1000) and limits.memoryMb; over the time limit, TIME_LIMIT_EXCEEDED', async t => {
    const { page, problems, sent } = await open(t, '/')
    t.teardown(async () => { await page.close() })
    t.equal(await page.getByLabel('Time limit (s)').getAttribute('id'), 'wall', 'labelled "Time limit (s)"')
    t.equal(await page.getByLabel('Memory (MB)').getAttribute('id'), 'memory', 'labelled "Memory (MB)"')
    await runAndWait(page, 'ok')
    t.notOk('limits' in (sent.at(-1) ?? {}), 'blank: no limits sent (the server\'s defaults)')

    await page.locator('#script').fill(SLEEPS)
    await page.locator('#wall').fill('0.5')
    await page.locator('#memory').fill('200')
    await runAndWait(page, 'error')
    t.same(sent.at(-1)?.limits, { wallMs: 500, memoryMb: 200 }, 'seconds × 1000, and MB as they are')
    t.equal(await page.locator('#status').textContent(), '422 TIME_LIMIT_EXCEEDED')
    t.match(await page.locator('#error').textContent(), /^TIME_LIMIT_EXCEEDED: the script ran longer than the wall-time limit of 500 ms\n/)

    await page.locator('#wall').fill('')
    await runAndWait(page, 'ok')
    t.same(sent.at(-1)?.limits, { memoryMb: 200 }, 'the time limit blank again: only the memory limit')
    t.equal(JSON.parse(await page.locator('#result').textContent() ?? ''), 'slept', 'within the server\'s own 4 s')

    await page.locator('#script').fill('def main():\n    return 1\n')
    await page.locator('#memory').fill('')
    await page.locator('#wall').fill('1.2345')
    await runAndWait(page, 'ok')
    t.same(sent.at(-1)?.limits, { wallMs: 1235 }, 'rounded to the millisecond')

    await page.locator('#wall').fill('')
    await page.locator('#memory').fill('100000')
    await runAndWait(page, 'error')
    t.same(sent.at(-1)?.limits, { memoryMb: 100_000 })
    t.equal(await page.locator('#status').textContent(), '400 INVALID_REQUEST', 'over the ceiling: refused')
    t.match(await page.locator('#error').textContent(), /^INVALID_REQUEST: body\.limits\.memoryMb is 100000, above this server's ceiling \(LIMIT_MEMORY_MB_MAX\) of 512\n/, 'naming the ceiling')

    const before = sent.length
    const bad: Array<[string, string]> = [['#wall', '0'], ['#wall', '-1'], ['#wall', '0.0001'], ['#memory', '0'], ['#memory', '12.5'], ['#memory', '-64']]
    for (const [box, value] of bad) {
      await page.locator('#wall').fill('')
      await page.locator('#memory').fill('')
      await page.locator(box).fill(value)
      await page.locator('#script').press('Control+Enter')
      await page.locator('#output[data-state="error"]').waitFor({ timeout: 5_000 })
      t.equal(await page.locator('#status').textContent(), 'Not sent: a limit is not valid', `${box} ${value}`)
      t.equal(await page.locator(box).getAttribute('aria-invalid'), 'true', `${box} ${value}: the box is marked`)
      await page.locator(box).fill('')
      t.equal(await page.locator(box).getAttribute('aria-invalid'), null, 'typing clears the mark')
    }
    await page.waitForTimeout(300)
    t.equal(sent.length, before, 'none of them was sent')
    t.same(problems, [
      'console: Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)',
      'console: Failed to load resource: the server responded with a status of 400 (Bad Request)'
    ], 'Chromium notes the 422 and the 400; nothing else')
  })

  const HELLO = 'def main():\n    print("Hello from main!")\n    return {"msg": "success", "value": 42}\n'
  const SLOW = 'import time\n\n\ndef main():\n    time.sleep(3)\n    return "too late"\n'

  t.test('a run in flight: the last reply dims under a running clock; Cancel or Escape aborts the request, the page says cancelled, no late reply shows, the server stops the run and serves the next', async t => {
    const { page, problems, sent } = await open(t, '/')
    t.teardown(async () => { await page.close() })
    const run = page.locator('#run')
    t.equal(await run.innerText(), 'Run Ctrl+Enter')
    t.equal(await running(), 0, 'nothing running at first')
    for (const how of ['the Cancel button', 'Escape'] as const) {
      await page.locator('#script').fill(HELLO)
      await runAndWait(page, 'ok')
      const last = await page.locator('#result').textContent()
      await page.locator('#script').fill(SLOW)
      const started = Date.now()
      await page.locator('#script').press('Control+Enter')
      await page.locator('#output[data-state="running"]').waitFor()
      t.equal(await page.locator('#result').textContent(), last, `${how}: the last reply stays while the run is in flight`)
      t.equal(await page.locator('#result').evaluate(element => getComputedStyle(element).opacity), '0.5', `${how}: dimmed`)
      t.equal(await page.locator('#copy-result').isDisabled(), true, `${how}: nothing to copy while it runs`)
      t.equal(await run.innerText(), 'Cancel Esc', `${how}: the Run button is now Cancel`)
      const clock = async (): Promise<number> => {
        const status = await page.locator('#status').textContent() ?? ''
        t.match(status, /^Running… \d+\.\d s$/, `${how}: a running clock (${status})`)
        return Number(/(\d+\.\d) s$/.exec(status)?.[1])
      }
      const first = await clock()
      await page.waitForTimeout(450)
      const second = await clock()
      t.ok(second >= first + 0.3, `${how}: the clock runs (${first} s, then ${second} s)`)

      const aborted = page.waitForEvent('requestfailed', request => request.url().endsWith('/execute'))
      if (how === 'Escape') await page.keyboard.press('Escape')
      else await run.click()
      t.equal((await aborted).failure()?.errorText, 'net::ERR_ABORTED', `${how}: the request is aborted`)
      await page.locator('#output[data-state="cancelled"]').waitFor({ timeout: 2_000 })
      t.match(await page.locator('#status').textContent(), /^Cancelled after \d+\.\d s$/, `${how}: the page says it was cancelled`)
      t.equal(await page.locator('#result').textContent(), '', `${how}: the stale reply is cleared`)
      t.equal(await run.innerText(), 'Run Ctrl+Enter', `${how}: Run again`)
      while (await running() !== 0 && Date.now() - started < 10_000) await new Promise(resolve => setTimeout(resolve, 50))
      t.ok(Date.now() - started < 2_900, `${how}: the server stopped the sandbox (none running after ${Date.now() - started} ms; the script would sleep 3 s)`)
    }
    await page.waitForTimeout(3_000)
    t.equal(await page.locator('#output').getAttribute('data-state'), 'cancelled', 'past the 3 s the script would have slept: still cancelled')
    t.equal(await page.locator('#result').textContent(), '', 'and no late reply shown')

    await page.locator('#script').fill(HELLO)
    await runAndWait(page, 'ok')
    t.same(JSON.parse(await page.locator('#result').textContent() ?? ''), { msg: 'success', value: 42 }, 'the server runs the next script')
    t.equal(sent.length, 5, 'two runs, two cancelled, one more')
    t.same(problems, [`request failed: ${target.url}/execute net::ERR_ABORTED`, `request failed: ${target.url}/execute net::ERR_ABORTED`], 'the two aborted requests; nothing else')
  })

  t.test('the script, input and stdin survive a reload (localStorage, never the key); a chosen example comes back with its files', async t => {
    const { page, problems } = await open(t, '/')
    t.teardown(async () => { await page.close() })
    const script = 'import sys\n\n\ndef main(data):\n    return {"data": data, "stdin": sys.stdin.read()}\n'
    await page.locator('#script').fill(script)
    await page.locator('#input').fill('{"kept": true}')
    await page.locator('#stdin').fill('a line\n')
    await page.locator('#key').fill('psk_not-a-real-key')
    await page.reload()
    t.equal(await page.locator('#script').inputValue(), script, 'the script is back, not the default example')
    t.equal(await page.locator('#input').inputValue(), '{"kept": true}', 'the input too')
    t.equal(await page.locator('#stdin').inputValue(), 'a line\n', 'and stdin')
    t.equal(await page.locator('#gutter').textContent(), '1\n2\n3\n4\n5\n6', 'numbered')
    t.equal(await page.locator('#examples').inputValue(), '', 'the menu claims no example')
    const local = await page.evaluate(() => Object.fromEntries(Object.entries(localStorage)))
    t.same(local, { 'pysandbox.draft': JSON.stringify({ script, input: '{"kept": true}', stdin: 'a line\n' }) }, 'localStorage holds the draft alone')
    t.notOk(JSON.stringify(local).includes('psk_'), 'not the key (sessionStorage keeps that)')
    await runAndWait(page, 'ok')
    t.same(JSON.parse(await page.locator('#result').textContent() ?? ''), { data: { kept: true }, stdin: 'a line\n' }, 'and it runs as it was')

    await page.locator('#examples').selectOption('a CSV in, a chart out (pandas, matplotlib)')
    await page.reload()
    t.equal(await page.locator('#examples').inputValue(), 'a CSV in, a chart out (pandas, matplotlib)', 'a chosen example is kept')
    t.match(await page.locator('#script').inputValue(), /pd\.read_csv\("sales\.csv"\)/)
    t.equal(await page.locator('#input').inputValue(), '', 'with its own (empty) input')
    t.same(await page.locator('#uploads li .name').allTextContents(), ['sales.csv'], 'and its CSV again')
    t.same(problems, [], 'no CSP violation, script error or failed request')
  })

  t.test('the example menu: an edit shows "(your script)"; choosing an example loads it and keeps the user\'s script, which "(your script)" brings back; undoing the edit names the example again', async t => {
    const { page, problems } = await open(t, '/')
    t.teardown(async () => { await page.close() })
    const menu = page.locator('#examples')
    const editor = page.locator('#script')
    const chosen = async (): Promise<string | null> => await menu.locator('option:checked').textContent()
    t.equal(await menu.inputValue(), 'hello', 'the example loaded at start')
    t.equal(await editor.inputValue(), HELLO)
    t.ok(await menu.locator('option[value=""]').evaluate((option: HTMLOptionElement) => option.hidden), 'no "(your script)" to pick yet')

    await editor.press('Control+End')
    await editor.pressSequentially('# mine')
    t.equal(await menu.inputValue(), '', 'edited: no example claimed')
    t.equal(await chosen(), '(your script)')
    for (let i = 0; i < '# mine'.length; i++) await editor.press('Backspace')
    t.equal(await chosen(), 'hello', 'the edit undone: hello again')

    await editor.pressSequentially('x = 1\n')
    t.equal(await chosen(), '(your script)')
    await page.locator('#input').fill('{"n": 1}')
    await page.locator('#input').dispatchEvent('input')
    await menu.selectOption('hello')
    t.equal(await editor.inputValue(), HELLO, 'choosing the example it was loads it again')
    t.equal(await chosen(), 'hello')
    t.ok(await menu.locator('option[value=""]').evaluate((option: HTMLOptionElement) => !option.hidden && !option.disabled), 'the user\'s script, kept apart, can be picked')
    await menu.selectOption('')
    t.equal(await editor.inputValue(), `${HELLO}x = 1\n`, '"(your script)" brings the user\'s script back')
    t.equal(await page.locator('#input').inputValue(), '{"n": 1}', 'with its input')
    await page.reload()
    t.equal(await editor.inputValue(), `${HELLO}x = 1\n`, 'and it is the draft a reload restores')
    await menu.selectOption('hello')
    await menu.selectOption('numpy')
    t.match(await editor.inputValue(), /import numpy as np/, 'another example')
    t.equal(await chosen(), 'numpy')
    await editor.press('Tab')
    t.equal(await chosen(), '(your script)', 'an indent by Tab is an edit too')
    t.same(problems, [])
  })

  const MARKS = [
    { what: 'a syntax error: its line', code: 'SYNTAX_ERROR', line: 5, script: 'def main():\n    return 1\n\n\nx = = 2\n' },
    { what: 'main() raises in a nested call: the last <script> frame', code: 'MAIN_RAISED', line: 2, script: 'def inner(x):\n    return 1 / x\n\n\ndef outer():\n    return inner(0)\n\n\ndef main():\n    return outer()\n' },
    { what: 'a library raises: the script\'s last frame, not the library\'s', code: 'MAIN_RAISED', line: 5, script: 'import json\n\n\ndef main():\n    return json.loads("{")\n' },
    { what: 'line 60 of 61: marked and scrolled into view', code: 'MAIN_RAISED', line: 60, script: `def main():\n${'    x = 1\n'.repeat(58)}    raise ValueError("at the end")\n` }
  ]

  t.test('the gutter marks the line of a syntax error, or of the script\'s last traceback frame; the next edit or run clears it', async t => {
    const { page, problems } = await open(t, '/')
    t.teardown(async () => { await page.close() })
    const mark = page.locator('#gutter .mark')
    for (const { what, code, line, script } of MARKS) {
      await page.locator('#script').fill(script)
      await runAndWait(page, 'error')
      t.equal(await page.locator('#status').textContent(), `422 ${code}`, what)
      t.equal(await mark.count(), 1, `${what}: one line marked`)
      t.equal(await mark.textContent(), String(line), `${what}: line ${line}`)
      t.match(await mark.getAttribute('title'), new RegExp(`^${code}: `), `${what}: its title says why`)
      t.equal(await mark.evaluate(element => getComputedStyle(element).color), 'rgb(180, 35, 44)', `${what}: in red`)
      t.equal(await page.locator('#gutter').textContent(), Array.from({ length: script.split('\n').length }, (_, i) => i + 1).join('\n'), `${what}: the numbers are as they were`)
      const [editor, marked] = [await page.locator('#script').boundingBox(), await mark.boundingBox()]
      t.ok(editor !== null && marked !== null && marked.y >= editor.y && marked.y + marked.height <= editor.y + editor.height, `${what}: in sight`)
      t.equal(await page.locator('#gutter').evaluate(gutter => gutter.scrollTop), await page.locator('#script').evaluate(editor => editor.scrollTop), `${what}: the gutter scrolled with the editor`)
    }
    await page.locator('#script').press('Control+End')
    await page.locator('#script').press('Enter')
    t.equal(await mark.count(), 0, 'an edit clears the mark')

    await page.locator('#script').fill('import time\n\n\ndef main():\n    time.sleep(1)\n    raise ValueError("late")\n')
    await runAndWait(page, 'error')
    t.equal(await mark.textContent(), '6')
    await page.locator('#script').press('Control+Enter')
    await page.locator('#output[data-state="running"]').waitFor()
    t.equal(await mark.count(), 0, 'a run clears it')
    await page.locator('#output[data-state="error"]').waitFor({ timeout: 30_000 })
    t.equal(await mark.textContent(), '6', 'until its reply marks it again')
    t.ok(problems.length > 0 && problems.every(problem => problem === 'console: Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)'), 'Chromium notes the 422s; nothing else')
  })

  t.test('on a 420 px window the header wraps and nothing scrolls sideways, idle or running', async t => {
    const { page, problems } = await open(t, '/', { width: 420, height: 800 })
    t.teardown(async () => { await page.close() })
    const fits = async (when: string): Promise<void> => {
      const [scroll, width] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth])
      t.ok((scroll ?? Infinity) <= (width ?? 0), `${when}: no horizontal scroll (scroll width ${scroll}, window ${width})`)
      for (const selector of ['header h1', '#examples', '#run', 'header nav', '#copy-result', '#copy-curl']) {
        const box = await page.locator(selector).boundingBox()
        t.ok(box !== null && box.x >= 0 && box.x + box.width <= 420, `${when}: ${selector} is within the window (${JSON.stringify(box)})`)
      }
    }
    const [title, nav] = [await page.locator('header h1').boundingBox(), await page.locator('header nav').boundingBox()]
    t.ok(title !== null && nav !== null && nav.y > title.y + title.height / 2, 'the header wraps onto more rows')
    await fits('idle')
    await page.locator('#examples').selectOption('a CSV in, a chart out (pandas, matplotlib)')
    await fits('the longest example\'s name in the menu')
    await page.locator('#script').fill(SLEEPS)
    await page.locator('#script').press('Control+Enter')
    await page.locator('#output[data-state="running"]').waitFor()
    await fits('running (Cancel)')
    await page.locator('#output[data-state="ok"]').waitFor({ timeout: 30_000 })
    await fits('with a reply')
    t.same(problems, [])
  })

  t.test('"Copy result" copies the reply as JSON; "Copy as cURL" copies a command that bash runs to the same reply, quotes, $ and all', async t => {
    const { page, problems, sent } = await open(t, '/')
    t.teardown(async () => { await page.close() })
    t.equal(await page.locator('#copy-result').isDisabled(), true, 'no reply yet: nothing to copy')
    const blob = randomBytes(300)
    await page.locator('#script').fill([
      'import hashlib',
      'import sys',
      '',
      '',
      'def main(data):',
      '    print("it\'s $HOME `id` \\\\ \\"quoted\\" — ünïcode")',
      '    return {"data": data, "stdin": sys.stdin.read(), "notes": open("notes.txt").read(),',
      '            "blob": hashlib.sha256(open("blob.bin", "rb").read()).hexdigest()}',
      ''
    ].join('\n'))
    await page.locator('#input').fill('{"name": "O\'Brien", "cost": "$5", "eof": "\\nJSON\\n"}')
    await page.locator('#stdin').fill('line 1\n\'$(echo no)\'\nJSON\nEOF\n')
    await page.locator('#file-picker').setInputFiles([
      { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('it\'s "a file": $PATH `x`\n') },
      { name: 'blob.bin', mimeType: 'application/octet-stream', buffer: blob }
    ])
    await page.locator('#uploads li').nth(1).waitFor()
    await page.locator('#wall').fill('3')
    await runAndWait(page, 'ok')

    const copied = await copy(page, '#copy-result', 'Copied the reply as JSON')
    const reply = JSON.parse(copied)
    t.equal(copied, `${JSON.stringify(reply, null, 2)}\n`, 'pretty-printed JSON')
    t.same(reply.result, JSON.parse(await page.locator('#result').textContent() ?? ''), 'the result shown')
    t.same(reply.result, { data: { name: 'O\'Brien', cost: '$5', eof: '\nJSON\n' }, stdin: 'line 1\n\'$(echo no)\'\nJSON\nEOF\n', notes: 'it\'s "a file": $PATH `x`\n', blob: sha256(blob) })
    t.equal(reply.stdout, await page.locator('#stdout').textContent(), 'stdout as shown')
    t.equal(reply.stdout, 'it\'s $HOME `id` \\ "quoted" — ünïcode\n')
    t.equal(reply.backend, backend, 'the whole body: the backend too')

    const command = await copy(page, '#copy-curl', /^Copied the cURL command$/)
    t.ok(command.startsWith(`curl -sS --globoff -X POST '${target.url}/execute' \\\n  -H 'content-type: application/json' \\\n  --data-binary @- <<'JSON'\n{`), 'curl POSTs JSON to this server\'s /execute, the body from a quoted here-document')
    t.equal(command.split('\n').length, 6, 'the body on one line (compact: as large as the page\'s own request)')
    t.ok(command.endsWith('\nJSON\n'), 'the here-document ends it')
    t.notMatch(command, /authorization/i, 'no key set: no Authorization header')
    t.same(JSON.parse(command.split('\n').slice(3, -2).join('\n')), sent.at(-1), 'its body is the one the page sent')
    t.same(JSON.parse(await bash(command)), reply, 'bash runs it: the same reply, byte for byte in every field')

    await page.locator('#script').fill('def main(data):\n    raise ValueError(data["cost"])\n')
    await runAndWait(page, 'error')
    const refused = JSON.parse(await copy(page, '#copy-result', 'Copied the reply as JSON'))
    t.match(refused, { statusCode: 422, code: 'MAIN_RAISED', message: 'ValueError: $5', backend }, 'an error reply copies whole too')
    const again = JSON.parse(await bash(await copy(page, '#copy-curl', 'Copied the cURL command')))
    t.same({ ...again, requestId: undefined }, { ...refused, requestId: undefined }, 'and its cURL command gets the same (but for the request id)')

    await page.locator('#input').fill('{not JSON')
    await page.locator('#copy-curl').click()
    await page.locator('#copy-note', { hasText: 'Not sent: the input is not JSON' }).waitFor({ timeout: 5_000 })
    t.pass('a request that cannot be made is not copied: the note says why')

    // Plain HTTP to another host is no secure context: no navigator.clipboard, the fallback copies.
    const insecure = await page.context().newPage()
    t.teardown(async () => { await insecure.close() })
    await insecure.addInitScript(() => { Object.defineProperty(Navigator.prototype, 'clipboard', { get: () => undefined }) })
    await insecure.goto(`${target.url}/`)
    await insecure.locator('#input').fill('') // the draft it restored (the same profile's localStorage) has the bad input
    await page.evaluate(async () => { await navigator.clipboard.writeText('') })
    t.equal(await insecure.evaluate(() => typeof navigator.clipboard), 'undefined', 'a page without navigator.clipboard')
    await insecure.locator('#copy-curl').click()
    await insecure.locator('#copy-note', { hasText: 'Copied the cURL command' }).waitFor({ timeout: 5_000 })
    t.ok((await clipboard(page)).startsWith(`curl -sS --globoff -X POST '${target.url}/execute' \\\n  -H 'content-type: application/json' \\\n  --data-binary @- <<'JSON'\n`), 'copied all the same')
    t.equal(await insecure.locator('textarea.scratch').count(), 0, 'its scratch text is gone')
    t.same(problems, [
      'console: Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)'
    ], 'Chromium notes the 422; nothing else')
  })

  t.test('a server that needs a key: without it the 401 points to the key field; typed, it runs; kept in sessionStorage for the tab, never localStorage or the URL', async t => {
    if (externalUrl !== undefined) return t.pass('skipped: needs a server of its own with API_KEYS_FILE')
    const key = `psk_${randomBytes(32).toString('base64url')}`
    const keys = mkdtempSync(join(tmpdir(), 'pysandbox-playground-keys-'))
    t.teardown(() => rmSync(keys, { recursive: true, force: true }))
    writeFileSync(join(keys, 'keys'), `playground-test:${sha256(key)}\n`)
    // Its own uids, clear of the other server's (both are up at once).
    const keyed = await startServer({ SANDBOX_BACKEND: 'nsjail', API_KEYS_FILE: join(keys, 'keys'), SANDBOX_UID_BASE: String(uidBase + 8192) })
    t.teardown(keyed.close)
    const { page, problems, sent, authorization } = await open(t, '/', undefined, keyed)
    t.teardown(async () => { await page.close() })
    const field = page.getByLabel('API key (only if the server needs one)')
    t.equal(await field.getAttribute('id'), 'key', 'the field, by its label')
    t.equal(await field.getAttribute('type'), 'password', 'the key is not shown')
    t.equal(await field.getAttribute('autocomplete'), 'off')
    t.equal(await field.inputValue(), '', 'empty at first')

    await runAndWait(page, 'error')
    t.equal(authorization.at(-1), undefined, 'no key: no Authorization header')
    t.equal(await page.locator('#status').textContent(), '401 UNAUTHORIZED')
    t.match(await page.locator('#error').textContent(), /^This server needs an API key: enter it in the "API key" field \(under the script\), then run again\.\n\nUNAUTHORIZED: /)
    t.equal(await field.getAttribute('aria-invalid'), 'true', 'the key field is marked')
    t.equal(await page.locator('#result').textContent(), '')

    await field.fill(`psk_${randomBytes(32).toString('base64url')}`)
    t.equal(await field.getAttribute('aria-invalid'), null, 'typing clears the mark')
    await runAndWait(page, 'error')
    t.match(await page.locator('#error').textContent(), /^The server refused this API key: check the "API key" field/, 'a wrong key: refused')

    await field.fill(` ${key} `)
    await runAndWait(page, 'ok')
    t.equal(authorization.at(-1), `Bearer ${key}`, 'sent as Authorization: Bearer, spaces around it trimmed')
    t.same(JSON.parse(await page.locator('#result').textContent() ?? ''), { msg: 'success', value: 42 }, 'with the key, it runs')
    t.notOk(sent.some(body => JSON.stringify(body).includes(key)), 'never in a body')
    t.notOk(page.url().includes(key), 'never in the URL')

    const command = await copy(page, '#copy-curl', 'Copied the cURL command (set PYSANDBOX_KEY to your key)')
    t.match(command, /\n {2}-H @\/dev\/fd\/3 --data-binary @- 3<<KEY <<'JSON'\nAuthorization: Bearer \$\{PYSANDBOX_KEY:\?set PYSANDBOX_KEY to your API key\}\nKEY\n/, 'the cURL command reads the key from $PYSANDBOX_KEY, into a header on a file descriptor')
    t.notOk(command.includes(key), 'and never holds the key itself')
    t.same(JSON.parse(await bash(command, { PYSANDBOX_KEY: key })), { result: { msg: 'success', value: 42 }, stdout: 'Hello from main!\n', stderr: '', backend }, 'bash runs it with the key')
    // While curl runs, its arguments (what ps shows every local user) hold no key: a stand-in curl prints them.
    const standIn = mkdtempSync(join(tmpdir(), 'pysandbox-curl-'))
    t.teardown(() => rmSync(standIn, { recursive: true, force: true }))
    writeFileSync(join(standIn, 'curl'), '#!/bin/sh\nprintf "%s\\n" "$@"\ncat /dev/fd/3\n', { mode: 0o755 })
    const seen = await bash(command, { PYSANDBOX_KEY: key, PATH: `${standIn}:${process.env.PATH ?? '/usr/bin:/bin'}` })
    t.ok(seen.endsWith(`Authorization: Bearer ${key}\n`) && !seen.slice(0, seen.lastIndexOf('Authorization')).includes(key), 'curl gets the key on fd 3, not in its arguments')
    await t.rejects(bash(command), /set PYSANDBOX_KEY to your API key/, 'without it, bash stops before curl runs (no request with an empty key)')

    await page.locator('#script').press('Control+End')
    await page.locator('#script').pressSequentially('# kept\n') // an edit: the draft goes to localStorage
    const stored = await page.evaluate(() => ({
      session: Object.fromEntries(Object.entries(sessionStorage)),
      local: Object.fromEntries(Object.entries(localStorage)),
      cookie: document.cookie
    }))
    t.same(stored, { session: { 'pysandbox.key': ` ${key} ` }, local: { 'pysandbox.draft': JSON.stringify({ script: `${HELLO}# kept\n`, input: '', stdin: '' }) }, cookie: '' }, 'in sessionStorage only: localStorage has the script alone, no cookie')

    await page.reload()
    t.equal(await field.inputValue(), ` ${key} `, 'a reload in the same tab keeps it')
    // Two tabs of one browser profile share localStorage and cookies, not sessionStorage.
    const profile = await browser.newContext()
    t.teardown(async () => { await profile.close() })
    const [first, second] = [await profile.newPage(), await profile.newPage()]
    await first.goto(`${keyed.url}/`)
    await first.locator('#key').fill(key)
    await second.goto(`${keyed.url}/`)
    t.equal(await second.locator('#key').inputValue(), '', 'another tab of the same profile does not have it')
    await first.reload()
    t.equal(await first.locator('#key').inputValue(), key, 'while the tab it was typed in keeps it')
    await field.fill('')
    t.same(await page.evaluate(() => Object.keys(sessionStorage)), [], 'emptied: gone from sessionStorage too')

    await field.fill(`${key.slice(0, 10)} ${key.slice(10)}`)
    const before = sent.length
    await page.locator('#script').press('Control+Enter')
    await page.locator('#output[data-state="error"]').waitFor({ timeout: 5_000 })
    t.equal(await page.locator('#status').textContent(), 'Not sent: the API key cannot be sent', 'a key with a space inside is not sent')
    t.equal(sent.length, before)
    t.same(problems, [
      'console: Failed to load resource: the server responded with a status of 401 (Unauthorized)',
      'console: Failed to load resource: the server responded with a status of 401 (Unauthorized)'
    ], 'Chromium notes the two 401s; nothing else')
  })

  t.test('on a narrow window the key and limits fields fit: nothing scrolls sideways', async t => {
    const { page, problems } = await open(t, '/', { width: 360, height: 740 })
    t.teardown(async () => { await page.close() })
    const widths = await page.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth])
    t.ok((widths[0] ?? Infinity) <= (widths[1] ?? 0), `no horizontal scroll (scroll width, client width: ${widths.join(', ')})`)
    for (const id of ['key', 'wall', 'memory', 'input', 'stdin']) {
      const box = await page.locator(`#${id}`).boundingBox()
      t.ok(box !== null && box.x >= 0 && box.x + box.width <= 360 && box.width >= 90, `#${id} is within the window and usable (${JSON.stringify(box)})`)
    }
    t.same(problems, [])
  })

  t.test('the docs page renders Swagger UI from this server alone', async t => {
    const { page, problems } = await open(t, '/docs')
    t.teardown(async () => { await page.close() })
    await page.locator('.opblock-summary-path[data-path="/execute"]').waitFor({ timeout: 30_000 })
    t.match(await page.locator('.info .title').textContent(), /PySandbox/)
    t.same(problems, [], 'no CSP violation, script error or failed request')
  })
}
