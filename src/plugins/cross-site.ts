// Refuses what a browser sends from another site's page (cross-site request forgery). The API
// answers no CORS preflight, so such a page can only send "simple" requests, and one of those
// changes state: a body-less POST /sessions (an outside review: a page held its visitor's only
// session place, in open mode, for SESSION_IDLE_MS). Browsers say where a request comes from:
// Sec-Fetch-Site (anything but same-origin, or none for one the user typed), else Origin (not the
// server's own: the Host it was sent to, or X-Forwarded-Host when a proxy rewrote Host; a page
// cannot set either on a request that needs no preflight). Clients that are not browsers send
// neither, and pass; the playground and /docs are the server's own origin, and pass. Not stopped:
// DNS rebinding (the attacker's name pointed at this server: Origin and Host agree); API keys do.
import fp from 'fastify-plugin'
import { CrossSiteError } from '../errors/errors.js'

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])
const OWN = new Set(['same-origin', 'none'])

export default fp(async function crossSite (app) {
  app.addHook('onRequest', async request => {
    if (SAFE_METHODS.has(request.method)) return
    const site = request.headers['sec-fetch-site']
    if (site !== undefined) {
      if (!OWN.has(site)) throw new CrossSiteError(`Sec-Fetch-Site: ${site.slice(0, 32)}`)
      return
    }
    const origin = request.headers.origin
    if (origin === undefined) return
    const from = hostOf(origin)
    const forwarded = request.headers['x-forwarded-host']
    const own = [request.headers.host, ...(typeof forwarded === 'string' ? forwarded.split(',').map(host => host.trim()) : [])]
    if (from === undefined || !own.includes(from)) throw new CrossSiteError(`Origin: ${origin.slice(0, 100)}`)
  })
}, { name: 'cross-site', fastify: '5.x' })

function hostOf (origin: string): string | undefined {
  try {
    return new URL(origin).host
  } catch {
    return undefined // "null" (a sandboxed frame, a file) or garbage: not ours
  }
}
