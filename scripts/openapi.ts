// `npm run openapi [-- FILE]`: the OpenAPI document the server serves at /openapi.json, made
// without a server or a sandbox (the document depends on neither), linted with Redocly's
// recommended-strict rules (a warning counts as an error), and written to FILE when given.
// `make lint` runs it: any problem exits 1.
import { writeFileSync } from 'node:fs'
import { createConfig, formatProblems, getTotals, lintFromString } from '@redocly/openapi-core'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'

const app = await buildApp({ config: loadConfig({}), backends: [] })
await app.ready()
const document = JSON.stringify(app.swagger(), null, 2)
await app.close()

const problems = await lintFromString({
  source: document,
  absoluteRef: 'openapi.json',
  config: await createConfig({ extends: ['recommended-strict'] })
})
const file = process.argv[2]
if (file !== undefined) writeFileSync(file, document + '\n')
if (problems.length > 0) {
  formatProblems(problems, { format: 'stylish', totals: getTotals(problems), version: 'openapi-core' })
  process.exitCode = 1
} else {
  console.log(`openapi.json: no problems (Redocly, recommended-strict)${file === undefined ? '' : `; written to ${file}`}`)
}
