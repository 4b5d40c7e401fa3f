// `nuxt-orpc/client`: the framework-free browser (and Node 22+) transport, what `useRpc()` runs on.
export { createRpcConnection, errorForClose, RpcClientErrorCode, RpcConnection } from './connection'
export type { RpcConnectionOptions, RpcConnectionState, RpcConnectionStatus, RpcTransportName } from './connection'
export { createRpcClient } from './client'
export { isRetryableSubscriptionError, startResumableSubscription } from './resumable'
export type { ResumableSubscription, ResumableSubscriptionOptions, RpcSubscriptionCallOptions, RpcSubscriptionSource, RpcSubscriptionStatus } from './resumable'
export { RpcCloseCode } from '../shared/protocol'
export { applyPresenceEvent } from '../shared/presence'
export type { RpcPresenceEvent, RpcPresenceMember } from '../shared/presence'
