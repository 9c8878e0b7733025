// The Grafana dashboard (deploy/grafana/pysandbox.json), checked offline: it parses as an
// importable dashboard whose panels all query the Prometheus data source chosen in its
// variable, and every metric its expressions name is one GET /metrics exports (read from the
// `# TYPE` lines of an app built with the fake backend), so a renamed metric cannot leave a
// panel silently empty.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { build } from '../helpers/app.js'

const PATH = fileURLToPath(new URL('../../deploy/grafana/pysandbox.json', import.meta.url))

interface Target { refId?: string, expr?: string, datasource?: { type?: string, uid?: string } }
interface GridPos { x: number, y: number, w: number, h: number }
interface Panel { id?: number, type?: string, title?: string, gridPos?: GridPos, datasource?: { type?: string, uid?: string }, targets?: Target[], panels?: Panel[] }
interface Variable { name?: string, type?: string, query?: unknown, definition?: string }
interface Dashboard { title?: string, uid?: string, schemaVersion?: number, panels?: Panel[], templating?: { list?: Variable[] } }

const dashboard = JSON.parse(readFileSync(PATH, 'utf8')) as Dashboard
/** Every panel, those inside collapsed rows included. */
const panels = (dashboard.panels ?? []).flatMap(p => [p, ...(p.panels ?? [])])
const queried = panels.filter(p => p.type !== 'row')

/** PromQL words that are not metric names. */
const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'and', 'or', 'unless', 'inf', 'nan'])

/** The metric names a PromQL expression selects: identifiers left once strings, label matchers,
 *  ranges, label lists and Grafana variables are taken out, other than functions and keywords. */
function metricNames (expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '')
    .replace(/\$\{?\w+\}?/g, '')
    .replace(/\b\d[\w.]*/g, '') // numbers and durations (5m)
  const names = [...bare.matchAll(/[A-Za-z_:][\w:]*/g)]
    .filter(m => !bare.slice((m.index ?? 0) + m[0].length).trimStart().startsWith('('))
    .map(m => m[0])
    .filter(name => !KEYWORDS.has(name.toLowerCase()))
  return [...new Set(names)]
}

/** The series names GET /metrics exports: each `# TYPE` family, a histogram as its _bucket,
 *  _sum and _count, a summary as itself, _sum and _count. */
function exported (text: string): Set<string> {
  const names = new Set<string>()
  for (const [, name = '', type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(name + suffix)
    else if (type === 'summary') for (const suffix of ['', '_sum', '_count']) names.add(name + suffix)
    else names.add(name)
  }
  return names
}

t.test('metricNames reads the metric names of PromQL expressions', async t => {
  const cases: Array<[string, string[]]> = [
    ['sum by (route) (rate(a_total{instance=~"$instance", code="x{y}"}[$__rate_interval]))', ['a_total']],
    ['histogram_quantile(0.99, sum by (le, outcome) (rate(b_bucket[5m])))', ['b_bucket']],
    ['c / on (instance) group_left d offset 5m', ['c', 'd']],
    ['max without (pod) (e) > bool 0 and f', ['e', 'f']],
    ['g{l="${var}"} unless h', ['g', 'h']] // eslint-disable-line no-template-curly-in-string -- Grafana's variable syntax, not a template
  ]
  for (const [expr, names] of cases) t.same(metricNames(expr), names, expr)
})

t.test('the dashboard is an importable dashboard on a Prometheus data source variable', async t => {
  t.equal(dashboard.title, 'PySandbox')
  t.match(dashboard.uid, /^[a-z0-9-]{1,40}$/, 'a stable uid')
  t.ok((dashboard.schemaVersion ?? 0) >= 36, 'a current schema version')
  const variables = dashboard.templating?.list ?? []
  const source = variables.find(v => v.type === 'datasource')
  t.equal(source?.query, 'prometheus', 'a data source variable of Prometheus type')
  const ids = panels.map(p => p.id)
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique')
  t.ok(queried.length >= 15, `${queried.length} panels`)
  for (const panel of queried) {
    const where = `panel "${panel.title ?? '?'}"`
    t.same(panel.datasource, { type: 'prometheus', uid: `\${${source?.name ?? ''}}` }, `${where} uses the variable's data source`)
    const targets = panel.targets ?? []
    t.ok(targets.length > 0 && targets.every(target => typeof target.expr === 'string' && target.expr !== ''), `${where} has queries`)
    t.equal(new Set(targets.map(target => target.refId)).size, targets.length, `${where}: its queries' refIds are unique`)
  }
  // No two panels on the same cells of the 24-column grid.
  const cells = new Map<string, string>()
  for (const panel of panels) {
    const { x, y, w, h } = panel.gridPos as GridPos
    t.ok(x >= 0 && w > 0 && x + w <= 24 && h > 0, `panel "${panel.title ?? '?'}" fits the grid`)
    for (let i = x; i < x + w; i++) {
      for (let j = y; j < y + h; j++) {
        const other = cells.get(`${i},${j}`)
        if (other !== undefined) t.fail(`panels "${other}" and "${panel.title ?? '?'}" overlap`)
        cells.set(`${i},${j}`, panel.title ?? '?')
      }
    }
  }
})

t.test('every metric a panel or variable names is one the server exports, and each family the dashboard is for is on it', async t => {
  const { app } = await build(t)
  const reply = await app.inject({ method: 'GET', url: '/metrics' })
  t.equal(reply.statusCode, 200)
  const names = exported(reply.body)
  const used = new Map<string, string>()
  for (const panel of queried) {
    for (const target of panel.targets ?? []) {
      for (const name of metricNames(target.expr ?? '')) used.set(name, panel.title ?? '?')
    }
  }
  for (const variable of dashboard.templating?.list ?? []) {
    for (const [, name = ''] of (variable.definition ?? '').matchAll(/label_values\(\s*([A-Za-z_:][\w:]*)\s*,/g)) used.set(name, `variable ${variable.name ?? '?'}`)
  }
  for (const [name, where] of used) t.ok(names.has(name), `${name} (${where}) is exported`)
  const families = [
    'pysandbox_http_request_duration_seconds_count', 'pysandbox_http_request_duration_seconds_bucket', 'pysandbox_http_errors_total',
    'pysandbox_executions_total', 'pysandbox_execution_duration_seconds_bucket', 'pysandbox_queue_depth', 'pysandbox_queue_limit',
    'pysandbox_queue_wait_seconds_bucket', 'pysandbox_running_sandboxes', 'pysandbox_concurrency_limit', 'pysandbox_shed_total',
    'pysandbox_shutdown_total', 'pysandbox_shutting_down', 'pysandbox_ready', 'pysandbox_probe_ok', 'pysandbox_warm_sandboxes',
    'pysandbox_warm_runs_total', 'process_resident_memory_bytes', 'process_open_fds', 'nodejs_eventloop_lag_p99_seconds'
  ]
  t.same(families.filter(name => !used.has(name)), [], 'every family the dashboard is for has a panel')
})
