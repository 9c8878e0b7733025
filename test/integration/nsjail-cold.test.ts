// The whole HTTP suite of the nsjail backend again with warm sandboxes off (docs/warm.md): every
// run a cold jail of its own. nsjail.test.ts runs it with the default, warm sandboxes on.
import { sandboxSuite } from '../helpers/sandbox-suite.js'

sandboxSuite(process.env.PYSANDBOX_EXPECT_BACKEND ?? 'nsjail', { WARM_SANDBOXES: 'false' })
