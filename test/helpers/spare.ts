// Attacks on a warm jail's spare (docs/warm.md): the next run's process, forked by the zygote while
// the run before it is torn down. Used by the deny tests (test/integration/warm.test.ts) and by
// their sabotage (sabotage-harness.test.ts). A script of a run, as the caller sends it.
import { randomBytes } from 'node:crypto'
import { post, postBody, type Target } from './server.js'

/** A run whose output and result hold a token (the zygote relays them through its buffer). */
export function leaveToken (token: string): Record<string, unknown> {
  return { script: `import os\ndef main():\n    print("${token}" * 64)\n    return ["${token}", os.readlink("/proc/self/ns/pid")]\n` }
}

/** The next run: is the token anywhere in its own writable memory? It is searched as two halves
 *  that must be adjacent, so the search itself never holds it whole. `own`: a token the run makes
 *  itself, which the same search must find (the search works). */
export function findToken (token: string): string {
  const [head, tail] = [token.slice(0, 16), token.slice(16)]
  return `def adjacent(head, tail):
    head, tail = head.encode(), tail.encode()
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("rw") or (len(fields) > 5 and not fields[5].startswith("[heap")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                region = mem.read(end - start)
            except OSError:
                continue
            at = region.find(head)
            while at >= 0:
                if region[at + len(head):at + len(head) + len(tail)] == tail:
                    return True
                at = region.find(head, at + 1)
    return False
def main():
    import os
    own = ("own" + "${head.slice(3)}" + "${tail}").encode()
    return {"previous": adjacent("${head}", "${tail}"), "own": adjacent("own" + "${head.slice(3)}", "${tail}"), "kept": len(own),
            "jail": os.readlink("/proc/self/ns/pid")}
`
}

/** A run that leaves a process which, as long as it lives, lowers the priority and the file limit
 *  of every other process it can see (the next run's, if it were there). */
export const HARASS = `import os, resource
def harass():
    mine = {os.getpid(), os.getppid()}
    while True:
        for p in os.listdir("/proc"):
            if p.isdigit() and int(p) not in mine:
                for act in (lambda: os.setpriority(os.PRIO_PROCESS, int(p), 19),
                            lambda: resource.prlimit(int(p), resource.RLIMIT_NOFILE, (16, 16))):
                    try:
                        act()
                    except OSError:
                        pass
def main():
    if os.fork() == 0:
        os.setpgid(0, 0)
        os.closerange(0, 1024)  # detached: the run's streams end without it
        harass()
    return "left"
`

/** What the next run finds of itself: its nice and its file limit. */
export const SELF = 'import os, resource\ndef main():\n    return [os.getpriority(os.PRIO_PROCESS, 0), resource.getrlimit(resource.RLIMIT_NOFILE)[0]]\n'

/** Allow: two processes of one run do reach each other so (the attack works where it can). */
export const HARASS_SIBLING = `import os, resource
def main():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.read(r, 1)
        os._exit(0)
    os.setpriority(os.PRIO_PROCESS, pid, 19)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (16, 16))
    seen = [os.getpriority(os.PRIO_PROCESS, pid), resource.prlimit(pid, resource.RLIMIT_NOFILE)[0]]
    os.write(w, b"x")
    os.waitpid(pid, 0)
    return seen
`

/** Every slot's last run leaves the token, then every slot's next run looks for it. `reached`:
 *  one found it (the previous run's bytes in the next run's memory); `searched`: every search
 *  found the run's own token, every token run printed and returned its token, and every search
 *  ran in a jail a token run had run in (no replaced jail made the search moot). */
export async function tokenReachesNextRun (target: Target, slots: number): Promise<{ reached: boolean, searched: boolean }> {
  const token = randomBytes(16).toString('hex')
  const jails = new Set<string>()
  let searched = true
  for (let i = 0; i < slots; i++) {
    const left = await postBody(target, leaveToken(token))
    const [returned, jail] = (left.body.result as [string, string] | undefined) ?? []
    searched &&= returned === token && String(left.body.stdout).includes(token)
    jails.add(String(jail))
  }
  let reached = false
  for (let i = 0; i < slots; i++) {
    const found = (await post(target, findToken(token))).body.result as { previous: boolean, own: boolean, jail: string } | undefined
    reached ||= found?.previous === true
    searched &&= found?.own === true && jails.has(found.jail)
  }
  return { reached, searched }
}

/** Every slot's next run reports its nice and file limit, first as they are, then after every
 *  slot's last run left a harassing process: true when they changed. */
export async function harassReachesNextRun (target: Target, slots: number): Promise<boolean> {
  const before = JSON.stringify((await post(target, SELF)).body.result)
  for (let i = 0; i < slots; i++) await post(target, HARASS)
  for (let i = 0; i < slots; i++) {
    const reply = await post(target, SELF)
    if (reply.status !== 200 || JSON.stringify(reply.body.result) !== before) return true
  }
  return false
}
