// A request body (POST /execute's, or an MCP tool call's) as the sandbox's ScriptRequest: the
// depth of `input` checked, files decoded within their limits, the run's limits resolved within
// the server's ceilings and the caller's. Throws InvalidRequestError (400) for what it refuses.
import type { Ceilings } from './config.js'
import type { Limits, ScriptRequest } from './backends/backend.js'
import { resolveLimits } from './access/limits.js'
import { InvalidRequestError } from './errors/errors.js'
import { inputFiles, type FilesInLimits } from './files.js'
import { nestsWithin } from './json-scan.js'
import type { Tenant } from './plugins/access.js'
import { MAX_INPUT_DEPTH, type ExecuteRequest } from './schemas.js'

export interface RequestLimits {
  filesIn: FilesInLimits
  /** A run's limits when the request asks for none, and the most it may ask for. */
  limits: { defaults: Limits, ceilings: Ceilings }
}

export function scriptRequest (body: ExecuteRequest, { filesIn, limits }: RequestLimits, tenant: Tenant): ScriptRequest {
  const { script, input, stdin } = body
  // `input` present, even as null, is main()'s argument: absent and null differ.
  const hasInput = Object.hasOwn(body, 'input')
  if (hasInput && !nestsWithin(Buffer.from(JSON.stringify(input)), MAX_INPUT_DEPTH)) {
    throw new InvalidRequestError(`body.input is nested deeper than ${MAX_INPUT_DEPTH} levels`)
  }
  const files = body.files === undefined ? undefined : inputFiles(body.files, filesIn)
  return {
    script,
    ...(hasInput ? { input: { value: input } } : {}),
    ...(stdin !== undefined ? { stdin } : {}),
    ...(files !== undefined ? { files } : {}),
    // Always resolved: a key's ceiling below a default lowers that default too.
    limits: resolveLimits(body.limits, limits.defaults, { server: limits.ceilings, caller: tenant.ceilings })
  }
}
