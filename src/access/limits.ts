// Per-request limits: what a request asks for in `limits`, within the ceilings of the server and
// of its caller's key, resolved against the server's defaults into the limits its run gets.
import type { Ceilings } from '../config.js'
import type { Limits } from '../backends/backend.js'
import { InvalidRequestError } from '../errors/errors.js'

/** The request's names, as `limits` carries them. */
export type RequestedLimits = Partial<Ceilings>

/** Each request name, the run limit it sets and the server's ceiling variable. */
const FIELDS = [
  ['wallMs', 'wallTimeMs', 'LIMIT_WALL_MS_MAX'],
  ['cpuSeconds', 'cpuSeconds', 'LIMIT_CPU_S_MAX'],
  ['memoryMb', 'memoryMiB', 'LIMIT_MEMORY_MB_MAX'],
  ['processes', 'processes', 'LIMIT_PROCESSES_MAX'],
  ['outputBytes', 'outputBytes', 'LIMIT_OUTPUT_BYTES_MAX']
] as const satisfies ReadonlyArray<readonly [keyof Ceilings, keyof Limits, string]>

/** The limits of one run: the defaults, lowered to the caller's ceilings, then whatever it asked
 *  for; asking above a ceiling is a 400 that names the ceiling and whose it is. */
export function resolveLimits (requested: RequestedLimits | undefined, defaults: Limits,
  ceilings: { server: Ceilings, caller: Ceilings }): Limits {
  const limits: Limits = { ...defaults }
  for (const [name, limit, variable] of FIELDS) {
    const ceiling = ceilings.caller[name]
    const asked = requested?.[name]
    if (asked !== undefined && asked > ceiling) {
      const whose = ceiling < ceilings.server[name] ? 'your API key\'s ceiling' : `this server's ceiling (${variable})`
      throw new InvalidRequestError(`body.limits.${name} is ${asked}, above ${whose} of ${ceiling}`)
    }
    limits[limit] = asked ?? Math.min(defaults[limit], ceiling)
  }
  return limits
}
