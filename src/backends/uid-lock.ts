// Two servers on one host must not share sandbox uids: RLIMIT_NPROC is counted per uid, so a
// script of one could fill the process limit of the other's slot, and a clean-up that kills a
// uid's processes would reach the other's runs. A server that runs sandboxes under host uids
// (as root) claims its uids for as long as it lives, by listening on abstract Unix sockets named
// after them: the kernel frees the names when the process ends, however it ends, so no stale lock
// is left. The uids are claimed in blocks of UID_SPAN, every block the server's span touches, so
// any two overlapping spans claim a block in common. The names are visible to every process in
// one network namespace (the host, or one container); containers with network namespaces of
// their own that still share the host's uids (rootful, no user namespace) need distinct bases, as
// the README says.
import { createServer, type Server } from 'node:net'
import { UID_SPAN } from './uids.js'

/** Bases this far apart never share a block: what the refusal suggests. */
export const UID_BASE_SPACING = 2 * UID_SPAN

/** The abstract socket names (a leading NUL: no file, nothing left behind) for the blocks of uids
 *  a server with this base uses. */
export function uidLockNames (base: number): string[] {
  const first = Math.floor(base / UID_SPAN)
  const last = Math.floor((base + UID_SPAN - 1) / UID_SPAN)
  return [...new Set([first, last])].map(block => `\0pysandbox-uids-${UID_SPAN}-${block}`)
}

async function listen (name: string): Promise<Server | NodeJS.ErrnoException> {
  const server = createServer()
  return await new Promise(resolve => {
    server.once('error', resolve)
    server.listen({ path: name }, () => {
      server.unref() // a claim never keeps the process alive
      resolve(server)
    })
  })
}

/** Claims the uids of `base` for this process; resolves to the claim (release() frees it), or to
 *  a sentence when another process on this host uses some of them. */
export async function claimUidBase (base: number): Promise<{ release: () => void } | { problem: string }> {
  const held: Server[] = []
  const release = (): void => { for (const server of held) server.close() }
  for (const name of uidLockNames(base)) {
    const claimed = await listen(name)
    if (claimed instanceof Error) {
      release()
      return {
        problem: claimed.code === 'EADDRINUSE'
          ? `SANDBOX_UID_BASE=${base}: another PySandbox server on this host uses some of the same sandbox uids (each uses the ${UID_SPAN} from its base), and would share their per-uid process limits. Give each server its own base, ${UID_BASE_SPACING} or more apart (for example ${base + UID_BASE_SPACING})`
          /* c8 ignore next -- only a kernel without abstract sockets (not Linux) gets here */
          : `SANDBOX_UID_BASE=${base}: could not claim the sandbox uids: ${claimed.message}`
      }
    }
    held.push(claimed)
  }
  return { release }
}
