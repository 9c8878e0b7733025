// The HTTP suite against a listening server whose sandbox is the real nsjail.
import { sandboxSuite } from '../helpers/sandbox-suite.js'

sandboxSuite(process.env.PYSANDBOX_EXPECT_BACKEND ?? 'nsjail')
