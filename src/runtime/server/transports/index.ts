import type { RpcUpgradeRequest } from '../../types'
import { cloudflareTransport, isCloudflareWorker } from './cloudflare'
import { isNodeUpgrade, nodeTransport } from './node'
import type { RpcTransport } from './types'
import { webTransport as web } from './web'

export type { RpcSocketProgress, RpcTransport } from './types'

/** The transport of the runtime an upgrade came through: Node (crossws's Node adapter), Cloudflare or another web runtime. */
export function transportOf(request: RpcUpgradeRequest): RpcTransport {
  if (isCloudflareWorker) return cloudflareTransport as RpcTransport
  return (isNodeUpgrade(request) ? nodeTransport : web) as RpcTransport
}

/** Bun and Deno (and what a route assumes until its first upgrade says otherwise). */
export const webTransport = web as RpcTransport
