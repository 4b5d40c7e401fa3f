import { createError, defineEventHandler, getRequestHost, setResponseHeader } from 'h3'
import { useRuntimeConfig } from 'nitropack/runtime'
import { isHostAllowed } from '../admission'
import type { ResolvedRuntimeOptions } from '../config'
import { inspector } from './inspector'
import { devtoolsPage } from './page'

const { allowedHosts } = useRuntimeConfig().orpc as ResolvedRuntimeOptions

/**
 * The DevTools tab (development only): its page, `state` (what the inspector holds, as JSON) and
 * `calls/<seq>` (a recent call's frames, on demand). It shows every connection's traffic, so, like the
 * socket in development, it answers only under the allowed host names (localhost by default): a
 * DNS-rebinding page cannot read it.
 */
export default defineEventHandler((event) => {
  const hostname = new URL(`http://${getRequestHost(event)}`).hostname
  if (allowedHosts.length && !isHostAllowed(hostname, allowedHosts)) {
    throw createError({ statusCode: 403, statusMessage: `Host ${hostname} is not allowed` })
  }
  const [, section, seq] = /\/devtools(?:\/(state|calls\/(\d+)))?\/?(?:\?|$)/.exec(event.path) ?? []
  setResponseHeader(event, 'cache-control', 'no-store')
  if (section === 'state') return inspector.state()
  if (seq) {
    const payload = inspector.payload(Number(seq))
    if (!payload) throw createError({ statusCode: 404, statusMessage: 'No such call among the recent ones' })
    return payload
  }
  if (section === undefined && /\/devtools\/?(?:\?|$)/.test(event.path)) {
    setResponseHeader(event, 'content-type', 'text/html; charset=utf-8')
    return devtoolsPage
  }
  throw createError({ statusCode: 404, statusMessage: 'Not found' })
})
