#!/usr/bin/env node
// `npm run keygen -- NAME` (or `node dist/keygen.js NAME`): a new API key (access/keygen.ts).
import { keygen } from './access/keygen.js'

process.exitCode = keygen(process.argv.slice(2), process)
