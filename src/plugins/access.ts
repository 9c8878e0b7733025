// Who is calling: every request gets a tenant (its API key's, or its address's) before anything
// else runs, and with API_KEYS_FILE set a request without a valid `Authorization: Bearer <key>`
// is refused 401 before its body is read. Routes marked `config.public` (health, readiness, the
// OpenAPI document, the docs and the playground's files) stay open. The keys file is read again
// on SIGHUP and when it changes; a file that cannot be read keeps the keys in force (never open).
import { isIP } from 'node:net'
import { statSync, unwatchFile, watchFile } from 'node:fs'
import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { ConfigError, type Ceilings } from '../config.js'
import { InvalidRequestError, UnauthorizedError } from '../errors/errors.js'
import { bearerToken, findKey, parseKeys, readKeysFile, urlHoldsKey, type ApiKey } from '../access/keys.js'

/** Who a request counts as: for the rate limit, the slot shares, the ceilings and the metrics. */
export interface Tenant {
  /** What the rate limit and the slot shares count by: `key:<name>`, else `address:<ip>`. */
  readonly id: string
  /** The metrics label and log field: the key's name, or "-" without keys (addresses are unbounded). */
  readonly label: string
  readonly rate: number
  readonly slots: number
  readonly queue: number
  /** Sessions it may have open at once. */
  readonly sessions: number
  readonly ceilings: Ceilings
}

export type AuthMode = 'api-keys' | 'open'

export interface Access {
  /** Whether /execute needs a key; /readyz reports it. */
  readonly mode: AuthMode
}

declare module 'fastify' {
  interface FastifyInstance {
    access: Access
  }
  interface FastifyRequest {
    tenant: Tenant
  }
  interface FastifyContextConfig {
    /** Open to anyone, even with API keys on (health, docs, the playground's files). */
    public?: boolean
    /** The route runs scripts (/execute, /mcp): the bounds on unread replies apply (connections.ts). */
    runsScripts?: boolean
  }
}

export interface AccessOptions {
  keysFile: string | undefined
  /** What a caller gets unless its key says otherwise. */
  defaults: { rate: number, slots: number, queue: number, sessions: number, ceilings: Ceilings }
  /** The address the server listens on: open mode warns unless it is loopback. */
  host: string
  /** /metrics has no token of its own: with keys on, it names them to anyone (a warning). */
  metricsOpen: boolean
  /** How often the keys file is checked for a change (ms). */
  watchIntervalMs?: number
}

const REALM = 'Bearer realm="pysandbox"'
/** Query parameters that carry credentials in other APIs: refused, as is a key anywhere in the URL. */
const CREDENTIAL_PARAMETER = /^(api[_-]?key|key|token|access[_-]?token|auth|authorization|bearer|password|secret)$/i
const LOOPBACK = /^(127\.|::1$|localhost$)/

/** 401; the connection closes after it, so a refused client cannot go on streaming its body. */
function refuse (reply: FastifyReply, error: string | undefined, message: string): never {
  reply.header('www-authenticate', error === undefined ? REALM : `${REALM}, error="${error}"`)
  reply.header('connection', 'close')
  throw new UnauthorizedError(message)
}

/** No credential in the URL: URLs are logged, kept in histories and by proxies. */
function refuseCredentialsInUrl (request: FastifyRequest): void {
  const query = request.url.indexOf('?')
  const names = query < 0 ? [] : [...new URLSearchParams(request.url.slice(query + 1)).keys()]
  if (urlHoldsKey(request.url) || names.some(name => CREDENTIAL_PARAMETER.test(name))) {
    throw new InvalidRequestError('credentials are never accepted in the URL (it is logged and kept by proxies): send the key as `Authorization: Bearer <key>`, and treat this one as leaked')
  }
}

/** Who an address is: one form per address (an IPv4 address mapped into IPv6 is the IPv4 one),
 *  an IPv6 client by its /64 (one host has a whole /64 to pick from), and the connection's own
 *  address when a forwarded one is no address at all. */
export function callerAddress (ip: string, socketAddress: string | undefined): string {
  const address = isIP(ip) === 0 ? socketAddress ?? 'unknown' : ip
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  if (mapped?.[1] !== undefined) return mapped[1]
  if (isIP(address) !== 6) return address
  return `${expandIPv6(address).slice(0, 4).join(':')}::/64`
}

/** The eight groups of an IPv6 address, without leading zeros. */
function expandIPv6 (address: string): string[] {
  const [head = '', tail] = address.split('::')
  const left = head === '' ? [] : head.split(':')
  const right = tail === undefined || tail === '' ? [] : tail.split(':')
  const groups = [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right]
  return groups.map(group => Number.parseInt(group, 16).toString(16))
}

export default fp<AccessOptions>(async function accessPlugin (app, options) {
  const { defaults, keysFile } = options
  const addressTenant = (request: FastifyRequest): Tenant => ({ id: `address:${callerAddress(request.ip, request.socket.remoteAddress)}`, label: '-', ...defaults })
  const keyTenant = (key: ApiKey): Tenant => ({
    id: `key:${key.name}`,
    label: key.name,
    rate: key.shares.rate ?? defaults.rate,
    slots: key.shares.slots ?? defaults.slots,
    queue: key.shares.queue ?? defaults.queue,
    sessions: key.shares.sessions ?? defaults.sessions,
    ceilings: { ...defaults.ceilings, ...key.ceilings }
  })

  let keys: readonly ApiKey[] | undefined
  if (keysFile !== undefined) {
    try {
      keys = parseKeys(readKeysFile(keysFile), defaults.ceilings)
    } catch (error) {
      throw new ConfigError([{ variable: 'API_KEYS_FILE', value: keysFile, line: `API_KEYS_FILE=${JSON.stringify(keysFile)} cannot be used: ${(error as Error).message}` }])
    }
    warnIfWritable(keysFile, message => app.log.warn(message))
    app.log.info({ keys: keys.length, file: keysFile }, `API keys on: ${keys.length} key(s); /execute needs Authorization: Bearer <key>`)
    if (keys.length === 0) app.log.warn(`API_KEYS_FILE ${keysFile} lists no key: every request to /execute is refused 401`)
    if (options.metricsOpen) app.log.warn('API keys are on but /metrics is open (no METRICS_TOKEN_HASH): anyone can read your keys\' names and traffic there')

    const reload = (why: string): void => {
      try {
        const next = parseKeys(readKeysFile(keysFile), defaults.ceilings)
        keys = next
        app.log.info({ keys: next.length, why }, `API keys reloaded: ${next.length} key(s)`)
      } catch (error) {
        app.log.error({ why, err: { message: (error as Error).message } }, 'API keys NOT reloaded (the keys in force stay): the file cannot be used')
      }
    }
    // A Kubernetes Secret is swapped by a rename: stat polling sees it, fs.watch on the old inode would not.
    // (It calls back when the file's status changes, its access time aside: reading it again is cheap.)
    watchFile(keysFile, { interval: options.watchIntervalMs ?? 1000, persistent: false }, () => reload('file changed'))
    const onHangup = (): void => reload('SIGHUP')
    process.on('SIGHUP', onHangup)
    app.addHook('onClose', async () => {
      unwatchFile(keysFile)
      process.off('SIGHUP', onHangup)
    })
  } else if (!LOOPBACK.test(options.host)) {
    app.log.warn({ host: options.host }, `NO API KEYS (API_KEYS_FILE unset): anyone who reaches ${options.host} runs code. Set API_KEYS_FILE, or keep the port private (Cloud Run IAM, a network policy)`)
  }

  app.decorate('access', {
    get mode (): AuthMode { return keys === undefined ? 'open' : 'api-keys' }
  } satisfies Access)
  app.decorateRequest('tenant', null as unknown as Tenant)

  app.addHook('onRequest', async (request, reply) => {
    refuseCredentialsInUrl(request)
    if (keys === undefined || request.routeOptions.config.public === true) {
      request.tenant = addressTenant(request)
      return
    }
    const token = bearerToken(request.headers.authorization)
    if (token === undefined) {
      refuse(reply, undefined, request.headers.authorization === undefined
        ? 'this server needs an API key: send Authorization: Bearer <key>'
        : 'the Authorization header must be Bearer <key>')
    }
    const key = findKey(keys, token)
    if (key === undefined) refuse(reply, 'invalid_token', 'the API key is not valid (unknown or revoked)')
    request.tenant = keyTenant(key)
  })
}, { name: 'access', fastify: '5.x' })

/** Whoever can write the keys file can let themselves in. */
function warnIfWritable (file: string, warn: (message: string) => void): void {
  try {
    const mode = statSync(file).mode
    if ((mode & 0o022) !== 0) warn(`API_KEYS_FILE ${file} is writable by its group or by others: whoever can write it can add a key (chmod 600 or 644)`)
    /* c8 ignore next 3 -- a race: the file was read a moment ago */
  } catch {
    // Gone since: the watch will say so.
  }
}
