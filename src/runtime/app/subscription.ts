import type { ClientContext, ClientLink } from '@orpc/client'
import { getEventMeta } from '@orpc/client'
import type { RouterClient } from '@orpc/server'
import { getCurrentInstance, getCurrentScope, onScopeDispose, onServerPrefetch, shallowReadonly, shallowRef, watchEffect } from 'vue'
import type { Ref } from 'vue'
import { useNuxtApp, useRuntimeConfig, useState } from '#imports'
import type { RpcRouter } from '../types'
import type { RpcPresenceEvent, RpcPresenceMember } from '../shared/presence'
import { applyPresenceEvent } from '../shared/presence'
import { createRpcClient } from '../client/client'
import type { RpcConnection } from '../client/connection'
import type { ResumableSubscription, RpcSubscriptionCallOptions, RpcSubscriptionStatus } from '../client/resumable'
import { startResumableSubscription } from '../client/resumable'
import { useRpc, useRpcConnection } from './composables'

export type { RpcSubscriptionStatus } from '../client/resumable'
export type { RpcPresenceEvent, RpcPresenceMember } from '../shared/presence'

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
  /**
   * Render it on the server too. During SSR the stream is called in-process and read for what it has now (a
   * procedure with `history` sends its retained events at once), up to `accumulate` events, until no event
   * came for `ssrWait` ms (1 s at most); then the call is stopped, and `data` and the last event id go to
   * the page's payload. The browser shows that data at hydration and resumes the stream after that id: no
   * second fetch of what was rendered, and every event published since comes once, in order. A stream whose
   * events carry no ids starts afresh in the browser instead, and its first event replaces the rendered
   * data. The page's payload is keyed by where the composable is called (Nuxt adds the key); pass `key` when
   * one component renders several of them.
   * @default false
   */
  ssr?: boolean
  /**
   * With `ssr`, how long the server waits for the next event before it renders what it has (ms).
   * @default 20
   */
  ssrWait?: number
}

/** What the server rendered of a subscription, for the browser to go on from. */
interface RenderedSubscription<T> {
  data: T | T[] | undefined
  lastEventId: string | undefined
}

/** The longest the server reads a stream for the page (ms), whatever `ssrWait` is. */
const ssrReadLimit = 1000

/**
 * A client of the app's router in-process (SSR) whose calls carry `signal`: the server's `useRpc()` client is
 * oRPC's router client, whose procedures are reached by path.
 */
function inProcessClient(signal: AbortSignal) {
  const server = useRpc() as unknown as Record<string, unknown>
  const link: ClientLink<ClientContext> = {
    call(path, input, options) {
      let procedure: unknown = server
      for (const key of path) procedure = (procedure as Record<string, unknown>)[key]
      return (procedure as (input: unknown, options: object) => Promise<unknown>)(input, { ...options, signal })
    },
  }
  return createRpcClient<RouterClient<RpcRouter>>(link)
}

/**
 * Reads what `start`'s stream has now, in-process (see the `ssr` option): until it is quiet for `wait` ms (or
 * the read limit), keeping the last `accumulate` events (the last one without it), as the browser would.
 */
async function readNow<T>(start: RpcSubscriptionStart<T>, accumulate: number | undefined, wait: number): Promise<RenderedSubscription<T>> {
  const controller = new AbortController()
  const keep = accumulate === undefined ? 1 : Math.max(accumulate, 1)
  let events: T[] = []
  let lastEventId: string | undefined
  const deadline = Date.now() + ssrReadLimit
  const iterator = (await start(inProcessClient(controller.signal)))[Symbol.asyncIterator]()
  try {
    while (Date.now() < deadline) {
      let timer: ReturnType<typeof setTimeout> | undefined
      const quiet = new Promise<'quiet'>((resolve) => {
        timer = setTimeout(() => resolve('quiet'), Math.max(0, Math.min(wait, deadline - Date.now())))
      })
      const next = iterator.next()
      const result = await Promise.race([next, quiet])
      clearTimeout(timer)
      if (result === 'quiet') {
        // Settles when the call is stopped below.
        next.catch(() => {})
        break
      }
      if (result.done) break
      events.push(result.value)
      if (events.length > keep * 2) events = events.slice(-keep)
      lastEventId = getEventMeta(result.value)?.id
    }
  }
  finally {
    // Both: the signal stops the procedure, `return` ends a generator paused at a `yield`.
    controller.abort()
    void iterator.return?.()?.catch(() => {})
  }
  events = events.slice(-keep)
  return { data: accumulate === undefined ? events.at(-1) : events, lastEventId }
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
export function useRpcSubscription<S extends RpcSubscriptionStart<unknown>>(start: S, options: UseRpcSubscriptionOptions<EventOf<S>> & { accumulate: number }, key?: string): RpcSubscription<EventOf<S>[]>
export function useRpcSubscription<S extends RpcSubscriptionStart<unknown>>(start: S, options?: UseRpcSubscriptionOptions<EventOf<S>>, key?: string): RpcSubscription<EventOf<S> | undefined>
export function useRpcSubscription<T>(start: RpcSubscriptionStart<T>, givenOptions: UseRpcSubscriptionOptions<T> | string = {}, givenKey?: string): RpcSubscription<T | T[] | undefined> {
  // Nuxt appends its key after the arguments given: the second one when there are no options.
  const options = typeof givenOptions === 'string' ? {} : givenOptions
  const key = typeof givenOptions === 'string' ? givenOptions : givenKey
  const accumulate = options.accumulate
  const emptyData = () => accumulate === undefined ? undefined : []
  const data = shallowRef<T | T[] | undefined>(emptyData())
  const status = shallowRef<RpcSubscriptionStatus>(options.ssr ? 'connecting' : 'idle')
  const error = shallowRef<unknown>()
  const lastEventId = shallowRef<string>()
  const result = {
    data: shallowReadonly(data),
    status: shallowReadonly(status),
    error: shallowReadonly(error),
    lastEventId: shallowReadonly(lastEventId),
    stop: () => {},
  }
  // Nuxt adds the key where the composable is called (see the module's keyedComposables).
  const rendered = options.ssr && key ? useState<RenderedSubscription<T> | undefined>(`nuxt-orpc:subscription:${key}`) : undefined
  if (import.meta.server) {
    if (rendered && getCurrentInstance()) {
      onServerPrefetch(async () => {
        if (rendered.value !== undefined) {
          console.warn(`[nuxt-orpc] useRpcSubscription: two subscriptions of this page share the key "${key}" (a composable that wraps it, or a component rendered twice): pass each a key of its own, or the browser may go on from the other one's events.`)
        }
        try {
          rendered.value = await readNow(start, accumulate, options.ssrWait ?? 20)
        }
        catch (failure) {
          // The browser starts it as if it had not been rendered, and shows its error there.
          console.warn('[nuxt-orpc] useRpcSubscription: the stream could not be read for the server render:', failure)
          return
        }
        data.value = rendered.value.data
        lastEventId.value = rendered.value.lastEventId
      })
    }
    return result
  }

  const nuxtApp = useNuxtApp()
  // What the server rendered, once: the first start goes on from it (a later mount starts live).
  let continued = nuxtApp.isHydrating ? rendered?.value : undefined
  if (rendered) rendered.value = undefined
  if (continued) {
    data.value = continued.data
    lastEventId.value = continued.lastEventId
  }
  // Without an event id the stream starts afresh: its first event replaces what was rendered.
  let replaceRendered = continued !== undefined && continued.lastEventId === undefined
  const connection = useRpcConnection()!
  const { reconnectBaseDelay, reconnectMaxDelay } = useRuntimeConfig().public.orpc
  let current: ResumableSubscription | undefined

  const deliver = (value: T, id: string | undefined) => {
    lastEventId.value = id
    if (replaceRendered) {
      replaceRendered = false
      data.value = emptyData()
    }
    if (accumulate === undefined) data.value = value
    else data.value = [...(data.value as T[]), value].slice(-Math.max(accumulate, 1))
    options.onEvent?.(value)
  }

  // The effect calls the source, so it tracks the reactive values the source reads: when one changes, the
  // old stream is stopped and a new one starts. Retries call the source again outside the effect.
  const stopEffect = watchEffect((onCleanup) => {
    const from = continued
    continued = undefined
    if (!from) {
      data.value = emptyData()
      lastEventId.value = undefined
      replaceRendered = false
    }
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
        lastEventId: from?.lastEventId,
        continues: from !== undefined,
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

type PresenceDataOf<S> = EventOf<S> extends RpcPresenceEvent<infer T> ? T : never

export interface RpcPresenceState<T> extends Omit<RpcSubscription<unknown>, 'data'> {
  /** The members present, in the order they joined; empty until the stream's first `sync`. */
  members: Readonly<Ref<RpcPresenceMember<T>[]>>
}

/**
 * Follows a presence stream (a procedure that yields `usePresence().subscribe(...)`) as the list of members
 * present, kept up to date from its `sync`, `join`, `update` and `leave` events:
 *
 * ```ts
 * const { members } = useRpcPresence(rpc => rpc.chat.presence({ room: room.value }))
 * ```
 *
 * A `useRpcSubscription` underneath: browser only, resumed after a reconnect, restarted (with a new `sync`)
 * when a reactive value the source reads changes.
 */
export function useRpcPresence<S extends RpcSubscriptionStart<RpcPresenceEvent<unknown>>>(start: S): RpcPresenceState<PresenceDataOf<S>> {
  const members = shallowRef<RpcPresenceMember<PresenceDataOf<S>>[]>([])
  const { data: _data, ...subscription } = useRpcSubscription(start as RpcSubscriptionStart<RpcPresenceEvent<PresenceDataOf<S>>>, {
    onEvent: (event) => {
      members.value = applyPresenceEvent(members.value, event)
    },
  })
  return { ...subscription, members: shallowReadonly(members) as Readonly<Ref<RpcPresenceMember<PresenceDataOf<S>>[]>> }
}
