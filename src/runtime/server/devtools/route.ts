import type { H3Event } from 'h3'
import { createError, defineEventHandler, getRequestHeader, getRequestHost, setResponseHeader } from 'h3'
import { useRuntimeConfig } from 'nitropack/runtime'
import { devAllowedHosts } from '../../shared/options'
import { isHostAllowed, normalizeHosts } from '../admission'
import type { ResolvedRuntimeOptions } from '../config'
import { inspector } from './inspector'
import { devtoolsPage } from './page'

const configured = (useRuntimeConfig().orpc as ResolvedRuntimeOptions).allowedHosts
// Never any host: an empty list (a runtime override) means the local names, as it does for the socket in development.
const allowedHosts = normalizeHosts(configured.length ? configured : devAllowedHosts)

/** Why the request may not read the tab, if it may not: a host name not allowed, or another site's page. */
function refusalOf(event: H3Event): string | undefined {
  let hostname: string
  try {
    hostname = new URL(`http://${getRequestHost(event)}`).hostname
  }
  catch {
    return 'Malformed Host'
  }
  if (!isHostAllowed(hostname, allowedHosts)) return `Host ${hostname} is not allowed`
  if (getRequestHeader(event, 'sec-fetch-site') === 'cross-site') return 'Cross-site requests are not allowed'
}

/**
 * The DevTools tab (development only): its page, `state` (what the inspector holds, as JSON) and
 * `calls/<seq>` (a recent call's frames, on demand). It shows every connection's traffic, so, like the
 * socket in development, it answers only under the allowed host names (localhost by default), which a
 * DNS-rebinding page cannot reach, and not to another site's page.
 */
export default defineEventHandler((event) => {
  const refusal = refusalOf(event)
  if (refusal) throw createError({ statusCode: 403, statusMessage: refusal })
  const match = /\/devtools(?:\/(state|calls\/(\d+)))?\/?(?:\?|$)/.exec(event.path)
  if (!match) throw createError({ statusCode: 404, statusMessage: 'Not found' })
  const [, section, seq] = match
  setResponseHeader(event, 'cache-control', 'no-store')
  if (section === 'state') return inspector.state()
  if (seq) {
    const payload = inspector.payload(Number(seq))
    if (!payload) throw createError({ statusCode: 404, statusMessage: 'No such call among the recent ones' })
    return payload
  }
  setResponseHeader(event, 'content-type', 'text/html; charset=utf-8')
  return devtoolsPage
})
