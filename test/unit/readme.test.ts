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
