// One policy, two filters: nsjail's kafel text in nsjail/pysandbox.cfg and the BPF program that
// harness/seccomp.py installs under unshare must refuse the same calls with the same errno.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { PROJECT_ROOT } from '../../src/config.js'

/** name → errno from the kafel policy: the calls listed in each ERRNO(n) { ... } block. */
function kafelPolicy (): Record<string, number> {
  const text = readFileSync(resolve(PROJECT_ROOT, 'nsjail/pysandbox.cfg'), 'utf8')
    .split('\n').filter(line => line.startsWith('seccomp_string:'))
    .map(line => JSON.parse(line.slice('seccomp_string:'.length).trim()) as string).join(' ')
  const calls: Record<string, number> = {}
  for (const block of text.matchAll(/ERRNO\((\d+)\) \{((?:[^{}]|\{[^{}]*\})*)\}/g)) {
    const body = (block[2] ?? '').replace(/\{[^{}]*\}/g, '') // argument conditions: tested by running them
    for (const name of body.split(',').map(n => n.trim()).filter(n => n !== '')) calls[name] = Number(block[1])
  }
  return calls
}

t.test('the harness\'s filter refuses exactly what the nsjail policy refuses, with the same errno', async t => {
  const harness = JSON.parse(execFileSync('python3', [resolve(PROJECT_ROOT, 'harness/seccomp.py')], { encoding: 'utf8' })) as Record<string, number>
  const kafel = kafelPolicy()
  t.ok(Object.keys(kafel).length > 50, `the kafel policy was read (${Object.keys(kafel).length} calls)`)
  t.same(harness, kafel)
})
