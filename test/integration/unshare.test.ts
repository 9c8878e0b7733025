// The HTTP suite against a listening server whose sandbox is util-linux unshare.
import t from 'tap'
import { externalUrl } from '../helpers/server.js'
import { sandboxSuite } from '../helpers/sandbox-suite.js'

// A server started elsewhere (the container tests) has one backend: nsjail.test.ts covers it.
if (externalUrl === undefined) sandboxSuite('unshare')
else t.pass('skipped: PYSANDBOX_URL points at one external server')
