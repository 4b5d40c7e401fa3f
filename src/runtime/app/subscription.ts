import type { ClientContext, ClientLink } from '@orpc/client'
import type { RouterClient } from '@orpc/server'
import { getCurrentScope, onScopeDispose, shallowReadonly, shallowRef, watchEffect } from 'vue'
import type { Ref } from 'vue'
import { useNuxtApp, useRuntimeConfig } from '#imports'
import type { RpcRouter } from '../types'
import { createRpcClient } from '../client/client'
import type { RpcConnection } from '../client/connection'
import type { ResumableSubscription, RpcSubscriptionCallOptions, RpcSubscriptionStatus } from '../client/resumable'
import { startResumableSubscription } from '../client/resumable'
import { useRpcConnection } from './composables'

export type { RpcSubscriptionStatus } from '../client/resumable'

/**
 * The stream call a subscription makes, through the client it is given: `rpc => rpc.chat.messages({ room })`.
 * That client hands each call the subscription's abort signal and, when it resumes, the last event id.
 */
export type RpcSubscriptionStart<T> = (rpc: RouterClient<RpcRouter>) => Promise<AsyncIterable<T>>

/**
 * A client of the app's socket for one attempt of a subscription: its calls carry `attempt`'s signal and last
 * event id. Calling through it is the explicit path from the subscription to its call; `used` tells whether
 * the start did.
 */
function attemptClient(connection: RpcConnection, attempt: RpcSubscriptionCallOptions) {
  const state = { used: false }
  const link: ClientLink<ClientContext> = {
    call(path, input, options) {
      state.used = true
      const signal = options.signal ? AbortSignal.any([options.signal, attempt.signal]) : attempt.signal
      return connection.call(path, input, { ...options, signal, lastEventId: options.lastEventId ?? attempt.lastEventId })
    },
  }
  return { client: createRpcClient<RouterClient<RpcRouter>>(link), state }
}

export interface UseRpcSubscriptionOptions<T> {
  /**
   * Keep the last `accumulate` events in `data`, oldest first, instead of only the latest one.
   * @default undefined (data is the latest event)
   */
  accumulate?: number
  /**
   * Called with every event, in order, once each (also across reconnects).
   * @default undefined
   */
  onEvent?: (value: T) => void
}

export interface RpcSubscription<D> {
  /** The latest event, or the last `accumulate` events. Reset when the source's reactive input changes. */
  data: Readonly<Ref<D>>
  /** `'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' | 'error'`; see {@link RpcSubscriptionStatus}. */
  status: Readonly<Ref<RpcSubscriptionStatus>>
  /** The error of the last failed attempt (`'reconnecting'`) or the one that ended it (`'error'`). */
  error: Readonly<Ref<unknown>>
  /** Id of the last event delivered: the subscription resumes from it after a reconnect. */
  lastEventId: Readonly<Ref<string | undefined>>
  /** Ends the stream (the server's `signal` fires) and stops following the source's input. */
  stop: () => void
}

type EventOf<S> = S extends RpcSubscriptionStart<infer T> ? T : never

/**
 * Follows a stream procedure of the app's router as reactive state:
 *
 * ```ts
 * const { data, status } = useRpcSubscription(rpc => rpc.chat.messages({ room: room.value }), { accumulate: 50 })
 * ```
 *
 * It starts in the browser only (during SSR `status` stays `'idle'`), stops when the component unmounts (or
 * the effect scope ends), and starts again, with fresh `data`, when a reactive value the source reads
 * changes. When the stream drops (the socket closed, the server is restarting) it calls the procedure again
 * with the id of the last event it delivered as `lastEventId`, so a procedure built on `usePublisher()`
 * sends what was missed (within the retention window) and nothing twice. Calls are new calls, never replays.
 */
export function useRpcSubscription<S extends RpcSubscriptionStart<unknown>>(start: S, options: UseRpcSubscriptionOptions<EventOf<S>> & { accumulate: number }): RpcSubscription<EventOf<S>[]>
export function useRpcSubscription<S extends RpcSubscriptionStart<unknown>>(start: S, options?: UseRpcSubscriptionOptions<EventOf<S>>): RpcSubscription<EventOf<S> | undefined>
export function useRpcSubscription<T>(start: RpcSubscriptionStart<T>, options: UseRpcSubscriptionOptions<T> = {}): RpcSubscription<T | T[] | undefined> {
  const accumulate = options.accumulate
  const emptyData = () => accumulate === undefined ? undefined : []
  const data = shallowRef<T | T[] | undefined>(emptyData())
  const status = shallowRef<RpcSubscriptionStatus>('idle')
  const error = shallowRef<unknown>()
  const lastEventId = shallowRef<string>()
  const result = {
    data: shallowReadonly(data),
    status: shallowReadonly(status),
    error: shallowReadonly(error),
    lastEventId: shallowReadonly(lastEventId),
    stop: () => {},
  }
  if (import.meta.server) return result

  const nuxtApp = useNuxtApp()
  const connection = useRpcConnection()!
  const { reconnectBaseDelay, reconnectMaxDelay } = useRuntimeConfig().public.orpc
  let current: ResumableSubscription | undefined

  const deliver = (value: T, id: string | undefined) => {
    lastEventId.value = id
    if (accumulate === undefined) data.value = value
    else data.value = [...(data.value as T[]), value].slice(-Math.max(accumulate, 1))
    options.onEvent?.(value)
  }

  // The effect calls the source, so it tracks the reactive values the source reads: when one changes, the
  // old stream is stopped and a new one starts. Retries call the source again outside the effect.
  const stopEffect = watchEffect((onCleanup) => {
    data.value = emptyData()
    lastEventId.value = undefined
    error.value = undefined
    const subscription = startResumableSubscription(
      async (attempt) => {
        const { client, state } = attemptClient(connection, attempt)
        const iterable = await nuxtApp.runWithContext(() => start(client))
        if (!state.used) {
          // Whatever it started some other way is ended: nothing would stop it otherwise.
          await iterable[Symbol.asyncIterator]().return?.()
          throw new TypeError('[nuxt-orpc] useRpcSubscription: make the call through the client it passes (rpc => rpc.chat.messages(input)), or the stream cannot be stopped or resumed.')
        }
        return iterable
      },
      {
        onEvent: deliver,
        onStatus: (next, failure) => {
          status.value = next
          if (failure !== undefined) error.value = failure
          else if (next === 'open') error.value = undefined
        },
        retryBaseDelay: reconnectBaseDelay,
        retryMaxDelay: reconnectMaxDelay,
      },
    )
    current = subscription
    onCleanup(() => subscription.stop())
  })

  result.stop = () => {
    stopEffect()
    current?.stop()
  }
  if (getCurrentScope()) onScopeDispose(result.stop)
  return result
}
