// The playground end to end in headless Chromium against a real server with the nsjail backend
// (or the server at PYSANDBOX_URL): type a script, Ctrl+Enter, read the panes. Under helmet's
// Content-Security-Policy, so any inline script or style would show up as a violation here.
// Chromium is Debian's package (/usr/bin/chromium), a test-only dependency: .ci/run and
// `make test` install it. Without it this test fails; it never skips silently.
import t, { type Test } from 'tap'
import { existsSync, mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import { chromium, type Browser, type Page } from 'playwright-core'
import { PROJECT_ROOT } from '../../src/config.js'
import { startServer } from '../helpers/server.js'

const CHROMIUM = '/usr/bin/chromium'
const SCREENSHOT = resolve(PROJECT_ROOT, 'docs/playground.png')
/**
 * The README's screenshot is written when it is missing or PYSANDBOX_SCREENSHOT=1 (the timings
 * in it differ every run: rewriting it each time would leave every work tree modified); each
 * run's own screenshot goes to .tap/playground.png.
 */
const screenshotPath = !existsSync(SCREENSHOT) || process.env.PYSANDBOX_SCREENSHOT === '1' ? SCREENSHOT : resolve(PROJECT_ROOT, '.tap/playground.png')

if (!existsSync(CHROMIUM)) {
  t.fail(`${CHROMIUM} is missing: the playground test needs Debian's chromium package (apt-get install chromium; make test installs it)`)
} else {
  const target = await startServer({ SANDBOX_BACKEND: 'nsjail' })
  t.teardown(target.close)
  const browser: Browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  t.teardown(async () => { await browser.close() })

  /** The page, and every console error, page error and failed request it has had. */
  async function open (t: Test, path: string): Promise<{ page: Page, problems: string[] }> {
    const page = await browser.newPage({ viewport: { width: 1100, height: 600 } })
    const problems: string[] = []
    page.on('console', message => { if (message.type() === 'error') problems.push(`console: ${message.text()}`) })
    page.on('pageerror', error => problems.push(`page error: ${error.message}`))
    page.on('requestfailed', request => problems.push(`request failed: ${request.url()} ${request.failure()?.errorText ?? ''}`))
    const response = await page.goto(`${target.url}${path}`)
    t.equal(response?.status(), 200, `GET ${path}`)
    return { page, problems }
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
    mkdirSync(resolve(screenshotPath, '..'), { recursive: true })
    await page.screenshot({ path: screenshotPath })
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

  t.test('the docs page renders Swagger UI from this server alone', async t => {
    const { page, problems } = await open(t, '/docs')
    t.teardown(async () => { await page.close() })
    await page.locator('.opblock-summary-path[data-path="/execute"]').waitFor({ timeout: 30_000 })
    t.match(await page.locator('.info .title').textContent(), /PySandbox/)
    t.same(problems, [], 'no CSP violation, script error or failed request')
  })
}
