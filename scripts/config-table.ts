// The README's configuration table, generated from the configuration schema so the two cannot
// drift: `npm run docs` writes it between the README's markers; test/unit/readme.test.ts
// checks the README holds exactly this table.
import { readFileSync, writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { ConfigSchema, PROJECT_ROOT } from '../src/config.js'

const START = '<!-- config-table:start -->'
const END = '<!-- config-table:end -->'
export const README = resolve(PROJECT_ROOT, 'README.md')

export function configTable (): string {
  const rows = Object.entries(ConfigSchema.properties).map(([name, schema]) => {
    const raw: unknown = (schema as { default?: unknown }).default
    const shown = name === 'CONCURRENCY'
      ? 'number of CPUs'
      : name === 'QUEUE_SIZE'
        ? '2 × number of CPUs'
        : raw === undefined ? '(none)' : String(raw).replace(PROJECT_ROOT, '<project>')
    const description = String((schema as { description?: string }).description ?? '').replaceAll('|', '\\|')
    return `| \`${name}\` | \`${shown}\` | ${description} |`
  })
  return ['| variable | default | meaning |', '| --- | --- | --- |', ...rows].join('\n')
}

/** The README's text with the table between the markers replaced by the current one. */
export function withConfigTable (readme: string): string {
  const start = readme.indexOf(START)
  const end = readme.indexOf(END)
  if (start < 0 || end < start) throw new Error(`README.md lacks the markers ${START} ${END}`)
  return `${readme.slice(0, start + START.length)}\n${configTable()}\n${readme.slice(end)}`
}

if (process.argv[1]?.endsWith('config-table.ts') === true) {
  writeFileSync(README, withConfigTable(readFileSync(README, 'utf8')))
}
