// One long-lived nsjail the server talks to through its stdin and stdout: a warm jail's zygote
// (zygote.ts) or a session's (session-jail.ts). How it is started, how its end is heard, and how
// it is ended, in one place. Whichever way it fails to start, it dies on a later tick, never by an
// exception: a replacement is made inside the 'exit' handler of the jail it replaces.
import { spawn, type ChildProcess } from 'node:child_process'
import type { Writable } from 'node:stream'
import type { Launch } from '../launch.js'
import type { CappedSink } from '../sink.js'
import type { SpawnResult } from '../spawn.js'

/** How long nsjail has to tear its jail down after SIGTERM before its group gets SIGKILL. */
const KILL_GRACE_MS = 1000
/** How long frames still in the pipe are waited for after the jail exited. */
const EXIT_DRAIN_MS = 200

export class JailProcess {
  /** Undefined when Node refused to start it at all (it threw). */
  private readonly child: ChildProcess | undefined
  /** Its stdin; undefined when it has no pipes (it could not be started). */
  readonly input: Writable | undefined
  /** Settles when the jail's process has exited (or never started). */
  readonly exited: Promise<void>

  /** `data`: each chunk of its stdout; `death`: why it ended or could not start (may come twice). */
  constructor (launch: Launch, on: { data: (chunk: Buffer) => void, death: (reason: string) => void }) {
    let child: ChildProcess
    try {
      child = spawn(launch.file, launch.args, { env: launch.env, stdio: ['pipe', 'pipe', 'ignore'], detached: true, shell: false })
    } catch (error) { // what Node does not report as 'error' (ENOMEM from fork, a bad argument)
      this.child = this.input = undefined
      this.exited = Promise.resolve()
      process.nextTick(() => on.death(`could not start: ${(error as Error).message}`))
      return
    }
    this.child = child
    this.exited = new Promise(resolve => {
      child.once('exit', () => resolve())
      child.once('error', () => resolve())
    })
    child.on('error', error => on.death(`could not start: ${error.message}`))
    child.on('exit', (code, signal) => {
      const reason = `exited (${signal ?? String(code)})`
      // Its last frames (a STATUS written just before it exited: a memory kill, a CPU kill) may
      // still be in the pipe when Node reports the exit: they are heard first, for a moment at
      // most (found by a review: the call was answered CRASHED). Which comes first is the OS's choice.
      const out = child.stdout
      /* c8 ignore next 5 */
      if (out === null || out.readableEnded || out.destroyed) return on.death(reason)
      const heard = (): void => { clearTimeout(late); on.death(reason) }
      const late = setTimeout(heard, EXIT_DRAIN_MS)
      out.once('close', heard)
    })
    // An idle jail keeps no process alive: it exits by itself when its input closes.
    child.unref()
    const input = child.stdin ?? undefined
    const output = child.stdout ?? undefined
    this.input = input
    // Out of descriptors (EMFILE, ENFILE), Node makes no pipes: 'error' ends it on the next tick.
    if (input === undefined || output === undefined) return
    for (const stream of [input, output] as unknown as Array<{ unref?: () => void }>) stream.unref?.()
    input.on('error', () => on.death('its input closed'))
    output.on('data', on.data)
  }

  /** nsjail, on SIGTERM, SIGKILLs the jail's processes and removes its cgroups (a SIGKILL would
   *  leave those behind on the host); its process group gets SIGKILL if it lingers. Its pipes are
   *  closed at once: nothing more is read from it. */
  terminate (): void {
    this.child?.stdout?.destroy()
    this.input?.destroy()
    const child = this.child
    const pid = child?.pid
    if (child === undefined || pid === undefined || child.exitCode !== null || child.signalCode !== null) return
    const signal = (target: number, name: NodeJS.Signals): void => {
      try {
        process.kill(target, name)
        /* c8 ignore next 3 -- a race: the jail exited between the check above and the signal */
      } catch {
        // Already gone.
      }
    }
    signal(pid, 'SIGTERM')
    const escalate = setTimeout(() => signal(-pid, 'SIGKILL'), KILL_GRACE_MS)
    escalate.unref()
    this.exited.then(() => clearTimeout(escalate), () => {})
  }
}

/** What a jail relayed of one run or call: its streams, capped, and when it started. */
export interface Relayed {
  started: number
  stdout: CappedSink
  stderr: CappedSink
  channel: CappedSink
  timedOut: boolean
  aborted?: boolean
}

/** The relayed run as the spawn wrapper reports a cold one, for interpret() (outcome.ts); without
 *  a status, the jail died before it reported one. */
export function relayedResult (relayed: Relayed, status: { exitCode: number | null, signal: number | null } = { exitCode: null, signal: null }): SpawnResult {
  return {
    ...status,
    stdout: relayed.stdout.bytes(),
    stderr: relayed.stderr.bytes(),
    stdoutTruncated: relayed.stdout.truncated,
    stderrTruncated: relayed.stderr.truncated,
    channel: relayed.channel.bytes(),
    channelOverflow: relayed.channel.truncated,
    timedOut: relayed.timedOut,
    aborted: relayed.aborted === true,
    durationMs: Math.round(performance.now() - relayed.started)
  }
}
