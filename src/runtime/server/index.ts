export { createRpcWebSocketHooks, defineRpcWebSocketHandler, isOriginAllowed, RpcCloseCode } from './handler'
export type { RpcWebSocketHandlerOptions } from './handler'
export { createRpcCaller } from './caller'
export type { RpcContext, RpcContextFunction, RpcContextInput, RpcRouter, RpcUpgradeRequest } from '../types'
