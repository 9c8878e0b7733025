// The tree is the architecture: these checks keep it so. The import graph of src/ has no cycle
// (type-only imports count: they are dependencies of the design all the same), backend.ts knows no
// backend, and the app reaches the backends only through backends/index.ts.
import { readFileSync, readdirSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import t from 'tap'
import { PROJECT_ROOT } from '../../src/config.js'

const SRC = join(PROJECT_ROOT, 'src')

function sources (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap(entry =>
    entry.isDirectory() ? sources(join(dir, entry.name)) : entry.name.endsWith('.ts') ? [join(dir, entry.name)] : [])
}

/** Each module of src/ (relative path) → the modules of src/ it imports. */
function importGraph (): Map<string, string[]> {
  const graph = new Map<string, string[]>()
  for (const file of sources(SRC)) {
    const text = readFileSync(file, 'utf8')
    const targets = [...text.matchAll(/^(?:import|export)\b[^'"]*?from '(\.{1,2}\/[^']+)'/gm)]
      .map(m => relative(SRC, resolve(dirname(file), (m[1] ?? '').replace(/\.js$/, '.ts'))))
    graph.set(relative(SRC, file), targets)
  }
  return graph
}

/** One cycle of the graph as a path, or undefined. */
function findCycle (graph: Map<string, string[]>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>()
  const path: string[] = []
  const visit = (node: string): string[] | undefined => {
    if (state.get(node) === 'done') return undefined
    if (state.get(node) === 'open') return [...path.slice(path.indexOf(node)), node]
    state.set(node, 'open')
    path.push(node)
    for (const next of graph.get(node) ?? []) {
      const cycle = visit(next)
      if (cycle !== undefined) return cycle
    }
    path.pop()
    state.set(node, 'done')
    return undefined
  }
  for (const node of graph.keys()) {
    const cycle = visit(node)
    if (cycle !== undefined) return cycle
  }
  return undefined
}

const graph = importGraph()

t.test('the import graph of src/ has no cycle', async t => {
  t.ok(graph.size > 20, 'the graph was read')
  t.equal(findCycle(graph)?.join(' → '), undefined)
})

t.test('the cycle finder finds one', async t => {
  t.same(findCycle(new Map([['a', ['b']], ['b', ['c']], ['c', ['a']]])), ['a', 'b', 'c', 'a'])
})

t.test('the backend interface imports no backend; only backends/index.ts knows them all', async t => {
  const backendFolders = /^backends\/(nsjail|unshare|direct)\//
  t.same((graph.get('backends/backend.ts') ?? []).filter(m => backendFolders.test(m)), [])
  for (const [module, targets] of graph) {
    if (backendFolders.test(module) || module === 'backends/index.ts') continue
    t.same(targets.filter(m => backendFolders.test(m)), [], `${module} reaches no backend's folder`)
  }
})

t.test('a backend folder does not reach into another', async t => {
  for (const [module, targets] of graph) {
    const own = /^backends\/(nsjail|unshare|direct)\//.exec(module)?.[1]
    if (own === undefined) continue
    t.same(targets.filter(m => /^backends\/(nsjail|unshare|direct)\//.test(m) && !m.startsWith(`backends/${own}/`)), [], module)
  }
})
