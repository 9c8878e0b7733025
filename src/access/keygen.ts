// The keygen command: a new API key, printed once, and the line of API_KEYS_FILE that admits it.
// The key alone goes to stdout (`npm run -s keygen -- me > me.key` is a key file for the CLI's
// --key-file); the line for the server, and what to do with each, to stderr.
import { newKey } from './keys.js'

export const KEYGEN_USAGE = 'usage: npm run keygen -- NAME   (NAME: 1-64 letters, digits, ".", "_", "-")\n'

/** Runs the command; returns its exit status (2: a usage error). */
export function keygen (args: string[], io: { stdout: { write: (text: string) => unknown }, stderr: { write: (text: string) => unknown } }): number {
  const [name, ...rest] = args
  if (name === undefined || rest.length > 0 || name === '-h' || name === '--help') {
    io.stderr.write(KEYGEN_USAGE)
    return 2
  }
  let made: ReturnType<typeof newKey>
  try {
    made = newKey(name)
  } catch (error) {
    io.stderr.write(`${(error as Error).message}\n`)
    return 2
  }
  io.stderr.write(`# the key for ${name}, on stdout: shown only now; give it to the caller, who sends it as Authorization: Bearer <key>\n`)
  io.stdout.write(`${made.key}\n`)
  io.stderr.write(`# the line for API_KEYS_FILE (options may follow it: rate=N slots=N queue=N wallMs=N cpuSeconds=N memoryMb=N processes=N outputBytes=N):\n${made.line}\n`)
  return 0
}
