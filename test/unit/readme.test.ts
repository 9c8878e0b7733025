import t from 'tap'
import { readFileSync } from 'node:fs'
import { README, withConfigTable } from '../../scripts/config-table.js'

t.test('the README\'s configuration table is the one generated from the schema', async t => {
  const readme = readFileSync(README, 'utf8')
  t.equal(readme, withConfigTable(readme), 'run `npm run docs` after changing src/config.ts')
})

t.test('a README without the markers is refused', async t => {
  t.throws(() => withConfigTable('no markers'), /markers/)
})

t.test('a variable without a default or a description still gets its row', async t => {
  const config = await import('../../src/config.js')
  const { configTable } = await t.mockImport<typeof import('../../scripts/config-table.js')>('../../scripts/config-table.js', {
    '../../src/config.js': { ...config, ConfigSchema: { properties: { SOME_SECRET: {} } } }
  })
  t.match(configTable(), /^\| `SOME_SECRET` \| `\(none\)` \| {2}\|$/m)
})
