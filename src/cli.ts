#!/usr/bin/env node
// The `pysandbox` executable (package.json "bin"): runs a script on a PySandbox server.
// `pysandbox run script.py [--url URL] [--input JSON] [--stdin FILE] [--file PATH[=NAME]]... [--out DIR]
// [--json] [--key-file FILE] [--timeout SECONDS] [--cpu SECONDS] [--memory MB] [--request-timeout SECONDS]`
// (the key also from $PYSANDBOX_KEY), `pysandbox --version`, `pysandbox --help`; see src/client.ts.
import { main } from './client.js'

process.exitCode = await main(process.argv.slice(2), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env })
