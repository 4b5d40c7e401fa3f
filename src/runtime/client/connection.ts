import type { ClientContext, ClientLink, ClientOptions } from '@orpc/client'
import { getEventMeta, ORPCError } from '@orpc/client'
import { RPCLink as HTTPLink } from '@orpc/client/fetch'
import type { StandardLinkOptions, StandardLinkPlugin } from '@orpc/client/standard'
import { CompositeStandardLinkPlugin } from '@orpc/client/standard'
import { RPCLink } from '@orpc/client/websocket'
import { intercept, isAsyncIteratorObject } from '@orpc/shared'
import type { RpcClientTimers } from '../shared/options'
import { clientTimerDefaults } from '../shared/options'
import { heartbeatFrame, httpProbeHeader, httpProbePath, readySubprotocol, refusalOf, restartFrame, RpcCloseCode, rpcSubprotocols } from '../shared/protocol'
import type { StreamSink, StreamWrapper } from './plain-calls'
import { listenToStream, PlainCallClient, PlainStream } from './plain-calls'

/** Where the browser's socket is in its life. */
export type RpcConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'

/** How calls travel: over the socket, or over HTTP (server-sent events for streams) while it cannot open. */
export type RpcTransportName = 'websocket' | 'http'

export interface RpcConnectionStatus {
  state: RpcConnectionState
  /** The transport calls take now. */
  transport: RpcTransportName
  /** Code of the last close, if the socket has closed once. */
  closeCode: number | undefined
  /** Reason of the last close ('' when the server gave none). */
  closeReason: string | undefined
}

/** Error codes the client adds to the server's own (UNAUTHORIZED, BAD_REQUEST, ...). */
export const RpcClientErrorCode = {
  /** The socket closed while the call was in flight. The call was not retried: it may or may not have run. */
  ConnectionClosed: 'CONNECTION_CLOSED',
  /** The call waited `connectTimeout` ms for the socket to open and was never sent. */
  ConnectionTimeout: 'CONNECTION_TIMEOUT',
} as const

export interface RpcConnectionOptions extends Partial<RpcClientTimers> {
  /** The `ws:`/`wss:` URL of the route, or a function returning it (read on every connect). */
  url: string | (() => string)
  /**
   * Silence (ms) after which the socket counts as dead and is replaced. The server sends a heartbeat frame
   * every `heartbeatInterval`, so this should exceed it (nuxt-orpc passes the server's
   * `heartbeatInterval + heartbeatTimeout`); after two thirds of it in silence the client pings, and the
   * server's answer counts (on Cloudflare, where the server sends no beats, that is what keeps it alive).
   * @default 45000
   */
  heartbeatTimeout?: number
  /**
   * `'websocket'`: calls wait for the socket. `'http'`: every call is an HTTP request (streams: server-sent
   * events). `'auto'`: the socket; while it cannot be opened but nuxt-orpc's HTTP route answers (a proxy or
   * host without WebSockets), calls go over HTTP, and the socket is tried again with the usual backoff. A call
   * takes one transport and is never sent again on the other.
   * @default 'auto'
   */
  transport?: 'websocket' | 'http' | 'auto'
  /** The `http:`/`https:` URL calls go to over HTTP. @default `url` with `ws` replaced by `http` */
  httpUrl?: string | (() => string)
  /** The WebSocket constructor. @default globalThis.WebSocket */
  WebSocket?: new (url: string, protocols?: string[]) => WebSocket
  /** Called on every status change. */
  onStatus?: (status: RpcConnectionStatus) => void
  /**
   * oRPC link plugins, as `RPCLink` takes them: `ClientRetryPlugin`, `DedupeRequestsPlugin`, your own. What they
   * add to `interceptors` runs around every call; what they add to `clientInterceptors` makes calls take oRPC's
   * link (see there).
   */
  plugins?: StandardLinkPlugin<ClientContext>[]
  /**
   * oRPC's call interceptors (`{ path, input, context, signal, lastEventId, next }`): they run around every call,
   * over the socket (nuxt-orpc's hot path included) and over HTTP. A stream that resumes after a dropped socket
   * goes on inside the call they saw, without running them again.
   */
  interceptors?: NonNullable<StandardLinkOptions<ClientContext>['interceptors']>
  /**
   * oRPC's request interceptors, which see the encoded request (`request: StandardRequest`). With any, every
   * call takes oRPC's `RPCLink` on the socket instead of nuxt-orpc's hot path, so that there is a request to
   * show them: that costs the client about what oRPC's stock client costs per call (docs/benchmarks.md).
   */
  clientInterceptors?: NonNullable<StandardLinkOptions<ClientContext>['clientInterceptors']>
}

const urlOf = (url: string | (() => string)) => typeof url === 'function' ? url() : url

/**
 * The error of a call over HTTP: the server's typed error as it is; a request or response cut off (the network,
 * a restart) as CONNECTION_CLOSED, as a socket that closes under a call. It is not sent again.
 */
function httpCallError(error: unknown, signal: AbortSignal | undefined): unknown {
  if (error instanceof ORPCError || signal?.aborted) return error
  return new ORPCError(RpcClientErrorCode.ConnectionClosed, {
    status: 503,
    message: `The HTTP request failed before its answer arrived (${error instanceof Error ? error.message : String(error)}); it was not retried.`,
    cause: error,
  })
}

/**
 * The wait before reconnect attempt `attempt` (0-based): exponential up to `maxDelay`, drawn at random
 * between half and all of it, afresh every time, so clients dropped together do not come back together.
 */
export function reconnectDelay(attempt: number, baseDelay: number, maxDelay: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxDelay, baseDelay * 2 ** attempt)
  return ceiling / 2 + random() * (ceiling / 2)
}

/** Close codes by which the server refused the connection: reconnecting by itself would only repeat that. */
export function isRefusalCloseCode(code: number): boolean {
  return code === RpcCloseCode.PolicyViolation || (code >= 4000 && code < 5000)
}

/** The typed error a call in flight gets when its socket closes with `code`. */
export function errorForClose(code: number, reason: string): ORPCError<string, { closeCode: number, closeReason: string }> {
  const data = { closeCode: code, closeReason: reason }
  if (code === RpcCloseCode.Unauthorized) return new ORPCError('UNAUTHORIZED', { status: 401, message: reason || 'Unauthorized', data })
  if (code === RpcCloseCode.Forbidden || code === RpcCloseCode.PolicyViolation) return new ORPCError('FORBIDDEN', { status: 403, message: reason || 'Forbidden', data })
  return new ORPCError(RpcClientErrorCode.ConnectionClosed, {
    status: 503,
    message: `The connection closed (code ${code}${reason ? `: ${reason}` : ''}) before the call finished; it was not retried.`,
    data,
  })
}

type SocketListener = (event: Event) => void
type LinkSocket = ConstructorParameters<typeof RPCLink>[0]['websocket']
type CallInterceptors = NonNullable<RpcConnectionOptions['interceptors']>
type LinkInterceptors = NonNullable<RpcConnectionOptions['clientInterceptors']>

/**
 * One WebSocket, and oRPC's link on it once a call needs one. The link sees the socket through a facade whose
 * `close` listeners this session fires itself: Node's WebSocket fires `error` but never `close` after a failed
 * handshake, and the link would wait forever.
 */
class Session {
  private rpcLink: RPCLink<ClientContext> | undefined
  private readonly makeLink: () => RPCLink<ClientContext>
  /** nuxt-orpc's hot path for calls with plain input; the link takes the rest on the same socket. */
  readonly plainCalls: PlainCallClient
  closed: { code: number, reason: string } | undefined
  /** Calls on oRPC's link waiting for their answer. */
  linkCalls = 0
  /**
   * When the last frame arrived (ms), for the connection's watchdog. A field, not a closure's variable: V8
   * stores a number field in place, a closure's variable gets a new heap number per frame.
   */
  lastFrameAt = Date.now()
  private readonly closeListeners = new Set<SocketListener>()

  /** `onFrame` hears of every frame that arrives, before it is handled; it may take the frame (true). */
  constructor(readonly socket: WebSocket, onFrame: (data: unknown) => boolean, wrapStream: StreamWrapper, clientInterceptors: LinkInterceptors) {
    const closeListeners = this.closeListeners
    const plainCalls = this.plainCalls = new PlainCallClient((frame) => {
      if (socket.readyState === 1) socket.send(frame)
    }, wrapStream)
    // One listener on the socket for every frame: ws (on Node) decodes a text frame again and makes a new
    // event for each listener. The link hears only the frames that are not answers to plain calls.
    const messageListeners = new Set<SocketListener>()
    socket.addEventListener('message', (event) => {
      this.lastFrameAt = Date.now()
      if (onFrame(event.data) || plainCalls.receive(event.data)) return
      for (const listener of messageListeners) listener(event)
    })
    const facade = {
      // Once past CONNECTING the link may always "send": a frame for a socket that is closing is dropped here,
      // and the call it belonged to rejects with CONNECTION_CLOSED when the session ends. Throwing instead
      // (what the link does when readyState is not OPEN) escapes as an unhandled rejection from oRPC 1.16's
      // client peer, whose abort listener awaits `send` without a catch.
      get readyState() {
        return socket.readyState === 0 ? 0 : 1
      },
      send: (data: string | ArrayBufferLike | Blob | ArrayBufferView) => {
        if (socket.readyState === 1) socket.send(data)
      },
      addEventListener: (type: string, listener: SocketListener) => {
        if (type === 'close') {
          closeListeners.add(listener)
        }
        else if (type === 'message') {
          messageListeners.add(listener)
        }
        else {
          socket.addEventListener(type, listener)
        }
      },
      removeEventListener: (type: string, listener: SocketListener) => {
        if (type === 'close') closeListeners.delete(listener)
        else if (type === 'message') messageListeners.delete(listener)
        else socket.removeEventListener(type, listener)
      },
    }
    this.makeLink = () => new RPCLink({ websocket: facade as unknown as LinkSocket, clientInterceptors })
  }

  /**
   * oRPC's link on this socket, made for the first call the plain path does not take (files, streamed input):
   * most sockets never need one, and each holds several KB of queues and plugins.
   */
  get link(): RPCLink<ClientContext> {
    if (!this.rpcLink && this.closed) throw errorForClose(this.closed.code, this.closed.reason)
    return this.rpcLink ??= this.makeLink()
  }

  /** Whether a call on it still waits for its answer. */
  get busy(): boolean {
    return this.linkCalls > 0 || this.plainCalls.callsInFlight > 0
  }

  end(code: number, reason: string) {
    if (this.closed) return false
    this.closed = { code, reason }
    this.plainCalls.close(() => errorForClose(code, reason))
    const event = new Event('close')
    for (const listener of this.closeListeners) listener(event)
    this.closeListeners.clear()
    return true
  }

  /**
   * Errors of a call on this session: a socket that closed (or is closing: the link refuses to send on it
   * before the close event arrives) turns them into the typed close error.
   */
  async callError(error: unknown, signal: AbortSignal | undefined): Promise<unknown> {
    if (signal?.aborted || error instanceof ORPCError) return error
    if (!this.closed && this.socket.readyState === 1) return error
    const closed = this.closed ?? await this.waitForEnd()
    const typed = errorForClose(closed.code, closed.reason)
    ;(typed as { cause?: unknown }).cause = error
    return typed
  }

  private waitForEnd(): Promise<{ code: number, reason: string }> {
    return new Promise((resolve) => {
      const fallback = setTimeout(() => resolve(this.closed ?? { code: 1006, reason: '' }), 1000)
      this.closeListeners.add(() => {
        clearTimeout(fallback)
        resolve(this.closed!)
      })
    })
  }
}

const ignore = () => {}

/** What a stream returned while it waited to resume goes on with: nothing. */
const endedStream: AsyncIterator<unknown> = {
  next: () => Promise.resolve({ done: true, value: undefined }),
  return: () => Promise.resolve({ done: true, value: undefined }),
}

/** How many times in a row a stream is called again when each new call ends with its socket. */
const maxResumeAttempts = 3

/** `Symbol.asyncDispose`, or the symbol oRPC's iterators use where the runtime has none. */
const asyncDispose: symbol = (Symbol as { asyncDispose?: symbol }).asyncDispose ?? Symbol.for('asyncDispose')

/**
 * The iterator `RpcConnection.resumableStream` returns. It reads the call's stream and notes event ids; when
 * the stream fails, `resume` either gives a new stream that goes on after the last id (the socket dropped)
 * or throws the error the caller gets. Written out instead of built on oRPC's `AsyncIteratorClass`: around a
 * bare generator, that took 0.48 us per event and this takes 0.18 (Node 22).
 * A stream of the socket's plain calls (`PlainStream`, nearly all of them) is read without a layer: the read
 * is the caller's, the stream notes the ids itself, and hands a failure to `failed` (the signal's abort
 * included). Any other stream (HTTP) is read through `onResult` and `onError`.
 * Like oRPC's iterators, it takes `next` calls one at a time (one never reads a stream another is replacing),
 * and it is done once its stream ends, fails or is returned.
 */
class ResumableStream implements AsyncIterator<unknown>, AsyncIterable<unknown> {
  private done = false
  /**
   * The read under way on a stream that is not a plain stream, or the read a plain stream failed under while
   * it resumes: until it has answered, a `next` waits for it.
   */
  private reading: Promise<IteratorResult<unknown>> | undefined

  constructor(
    private iterator: AsyncIterator<unknown>,
    private lastEventId: string | undefined,
    /** Gets the new stream, or throws the caller's error; `returned` tells whether the reader stopped meanwhile. */
    private readonly resume: (error: unknown, lastEventId: string | undefined, returned: () => boolean) => Promise<AsyncIterator<unknown>>,
    /** The call's signal: once it aborts, reading rejects with its reason, even an event that had arrived. */
    private readonly signal: AbortSignal | undefined,
  ) {
    this.follow(iterator)
  }

  next(): Promise<IteratorResult<unknown>> {
    if (this.done) return Promise.resolve({ done: true, value: undefined })
    if (this.reading) return this.reading.then(() => this.next(), () => this.next())
    const iterator = this.iterator
    if (iterator instanceof PlainStream) {
      // Another read waits on it: this one goes after it, here, for that read may fail and resume the stream
      // on a new call.
      const pending = iterator.pendingRead
      return pending ? pending.then(() => this.next(), () => this.next()) : iterator.next()
    }
    const reading = iterator.next().then(this.onResult, this.onError)
    this.reading = reading
    return reading
  }

  /** Starts reading `iterator`: a plain stream tells this one of its failure instead of throwing it. */
  private follow(iterator: AsyncIterator<unknown>) {
    this.iterator = iterator
    if (iterator instanceof PlainStream) iterator.onFailure = this.failed
  }

  private readonly onResult = (result: IteratorResult<unknown>) => {
    this.reading = undefined
    if (this.signal?.aborted && !this.done) {
      this.done = true
      throw this.signal.reason
    }
    if (result.done) {
      this.done = true
    }
    else {
      const id = getEventMeta(result.value)?.id
      if (id !== undefined) this.lastEventId = id
    }
    return result
  }

  private readonly onError = (error: unknown): Promise<IteratorResult<unknown>> => {
    if (this.done) {
      // Returned meanwhile: the error is the stream's own ending.
      this.reading = undefined
      throw error
    }
    return this.resume(error, this.lastEventId, this.returned).then((next) => {
      this.follow(next)
      this.reading = undefined
      if (!this.done) return this.next()
      // Returned while the new call was on its way: stop that one too.
      void next.return?.()?.catch(ignore)
      return { done: true, value: undefined }
    }, (typed: unknown) => {
      this.done = true
      this.reading = undefined
      throw typed
    })
  }

  private readonly returned = () => this.done

  /** A plain stream failed under a read: the read gets what resuming gives (or its typed error). */
  private readonly failed = (error: unknown, read: Promise<IteratorResult<unknown>> | undefined): Promise<IteratorResult<unknown>> => {
    this.lastEventId = (this.iterator as PlainStream).lastEventId
    if (this.done) return Promise.reject(error)
    if (this.signal?.aborted) {
      this.done = true
      return Promise.reject(this.signal.reason)
    }
    const resuming = this.onError(error)
    // Reads made meanwhile wait for the failed read itself, as those made before did: they keep their order.
    this.reading = read ?? resuming
    return resuming
  }

  /**
   * Gives the events to `sink` as they arrive instead of to reads: a plain stream calls it from the frame, with
   * no promise per event (startResumableSubscription reads so). Resuming works as for reads. Any other stream,
   * or one a read already waits on, is read here and given to it. An exception from `sink.event` stops the
   * stream and fails it with that exception.
   */
  [listenToStream](sink: StreamSink): void {
    // The sink hears of one ending, whichever comes first.
    let open = true
    this.listen({
      event: (value, id) => {
        if (open) sink.event(value, id)
      },
      end: (value) => {
        if (!open) return
        open = false
        sink.end(value)
      },
      fail: (error) => {
        if (!open) return
        open = false
        sink.fail(error)
      },
    })
  }

  private listen(sink: StreamSink): void {
    if (this.done) {
      sink.end(undefined)
      return
    }
    const iterator = this.iterator
    if (!(iterator instanceof PlainStream) || iterator.pendingRead || this.reading) {
      void this.pump(sink)
      return
    }
    iterator.listen({
      event: (value, id) => {
        try {
          sink.event(value, id)
        }
        catch (error) {
          sink.fail(error)
          void this.return().catch(ignore)
        }
      },
      end: (value) => {
        this.done = true
        sink.end(value)
      },
      fail: (error) => {
        this.lastEventId = iterator.lastEventId
        const aborted = this.signal?.aborted
        if (this.done || aborted) {
          this.done = true
          sink.fail(aborted ? this.signal!.reason : error)
          return
        }
        this.resume(error, this.lastEventId, this.returned).then((next) => {
          this.follow(next)
          if (!this.done) return this.listen(sink)
          // Returned while the new call was on its way: stop that one too.
          void next.return?.()?.catch(ignore)
          sink.end(undefined)
        }, (typed: unknown) => {
          this.done = true
          sink.fail(typed)
        })
      },
    })
  }

  /** `listenToStream` by reads. */
  private async pump(sink: StreamSink) {
    let result: IteratorResult<unknown>
    try {
      while (!(result = await this.next()).done) {
        try {
          sink.event(result.value, getEventMeta(result.value)?.id)
        }
        catch (error) {
          sink.fail(error)
          void this.return().catch(ignore)
          return
        }
      }
    }
    catch (error) {
      sink.fail(error)
      return
    }
    sink.end(result.value)
  }

  async return(value?: unknown): Promise<IteratorResult<unknown>> {
    await this.end()
    return { done: true, value }
  }

  async throw(error?: unknown): Promise<IteratorResult<unknown>> {
    await this.end()
    throw error
  }

  [Symbol.asyncIterator]() {
    return this
  }

  /** Stops the stream (the server's procedure sees the abort), unless it has ended already. */
  private async end() {
    if (this.done) return
    this.done = true
    await this.iterator.return?.()
  }
}

// `await using` support, as oRPC's iterators have it.
Object.defineProperty(ResumableStream.prototype, asyncDispose, {
  async value(this: ResumableStream) {
    await this.return()
  },
})

interface Waiter {
  /** An open socket, or `'http'`: the socket cannot be opened but the server answers HTTP. */
  resolve: (session: Session | 'http') => void
  reject: (error: unknown) => void
}

/**
 * The browser's one shared socket, as an oRPC link. It opens on the first call, reconnects with backoff, and
 * never sends a frame twice: a call waits (up to `connectTimeout`) for an open socket, goes out once on it,
 * and if that socket closes first, rejects with a typed error instead of being replayed.
 */
export class RpcConnection implements ClientLink<ClientContext> {
  status: RpcConnectionStatus

  private readonly options: Required<Omit<RpcConnectionOptions, 'onStatus' | 'plugins' | 'interceptors' | 'clientInterceptors'>> & Pick<RpcConnectionOptions, 'onStatus'>
  /** Call interceptors: the app's, then those its plugins added. */
  private readonly interceptors: CallInterceptors
  /** Request interceptors: with any, calls take oRPC's link (there is no request on the hot path). */
  private readonly clientInterceptors: LinkInterceptors
  private session: Session | undefined
  /** oRPC's HTTP link, made on the first call over HTTP. */
  private httpLink: HTTPLink<ClientContext> | undefined
  private attempt = 0
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined
  private readonly waiters = new Set<Waiter>()

  constructor(options: RpcConnectionOptions) {
    this.options = {
      ...clientTimerDefaults,
      heartbeatTimeout: 45_000,
      WebSocket: globalThis.WebSocket,
      transport: 'auto',
      httpUrl: () => urlOf(options.url).replace(/^ws/, 'http'),
      ...options,
    }
    // Plugins add their interceptors here, in their order, as oRPC's StandardLink has them do.
    const linkOptions: StandardLinkOptions<ClientContext> = { interceptors: [...options.interceptors ?? []], clientInterceptors: [...options.clientInterceptors ?? []] }
    new CompositeStandardLinkPlugin(options.plugins).init(linkOptions)
    this.interceptors = linkOptions.interceptors!
    this.clientInterceptors = linkOptions.clientInterceptors!
    this.status = { state: 'idle', transport: this.options.transport === 'http' ? 'http' : 'websocket', closeCode: undefined, closeReason: undefined }
  }

  call(path: readonly string[], input: unknown, options: ClientOptions<ClientContext>): Promise<unknown> {
    if (this.interceptors.length === 0) return this.send(path, input, options)
    return intercept(this.interceptors, { ...options, path, input }, ({ path: at, input: given, ...rest }) => this.send(at, given, rest))
  }

  /** A call, past the interceptors: over the socket (once open) or over HTTP. */
  private send(path: readonly string[], input: unknown, options: ClientOptions<ClientContext>): Promise<unknown> {
    try {
      if (this.status.transport === 'http') return this.callOverHttp(path, input, options)
      const session = this.status.state === 'open' ? this.session : undefined
      return session
        ? this.callOn(session, path, input, options)
        : this.ready(options.signal).then(ready => ready === 'http' ? this.callOverHttp(path, input, options) : this.callOn(ready, path, input, options))
    }
    catch (error) {
      // Input the serializer cannot take (a cycle, say): a call rejects, it never throws.
      return Promise.reject(error)
    }
  }

  /**
   * A plain call returns its own promise, with no layer around it (it settles with the final output or typed
   * error itself); the others go through oRPC's link on the same socket.
   */
  private callOn(session: Session, path: readonly string[], input: unknown, options: ClientOptions<ClientContext>): Promise<unknown> {
    return this.plainCallOn(session, path, input, options) ?? this.callOnLink(session, path, input, options)
  }

  /** The call on nuxt-orpc's hot path, or undefined when it takes oRPC's link (see `PlainCallClient.call`). */
  private plainCallOn(session: Session, path: readonly string[], input: unknown, options: ClientOptions<ClientContext>, wrap?: boolean): Promise<unknown> | undefined {
    return this.clientInterceptors.length === 0 ? session.plainCalls.call(path, input, options, wrap) : undefined
  }

  private async callOnLink(session: Session, path: readonly string[], input: unknown, options: ClientOptions<ClientContext>): Promise<unknown> {
    let output: unknown
    session.linkCalls++
    try {
      output = await session.link.call(path, input, options)
    }
    catch (error) {
      throw await session.callError(error, options.signal)
    }
    finally {
      session.linkCalls--
    }
    return isAsyncIteratorObject(output) ? this.resumableStream(path, input, options, session, output as AsyncIterator<unknown>) : output
  }

  /**
   * One call as one HTTP request (a stream: server-sent events), with oRPC's HTTP link. A request that fails
   * before its answer arrives is not sent again: it may or may not have run, as with a socket that closes.
   */
  private async callOverHttp(path: readonly string[], input: unknown, options: ClientOptions<ClientContext>): Promise<unknown> {
    if (this.status.state !== 'open') this.setStatus('open', this.status.closeCode, this.status.closeReason, 'http')
    // Cookies go with calls to another origin too (a page of the server's `allowedOrigins`), as on the socket.
    this.httpLink ??= new HTTPLink({
      url: () => urlOf(this.options.httpUrl),
      fetch: (request, init) => fetch(request, { ...init, credentials: 'include' }),
      clientInterceptors: this.clientInterceptors,
    })
    let output: unknown
    try {
      output = await this.httpLink.call(path, input, options)
    }
    catch (error) {
      throw httpCallError(error, options.signal)
    }
    return isAsyncIteratorObject(output) ? this.resumableHttpStream(path, input, options, output as AsyncIterator<unknown>) : output
  }

  /**
   * A stream over HTTP whose events carry ids survives a cut response: it is called again with `lastEventId`,
   * over whichever transport calls take by then (the socket, once it opens).
   */
  private resumableHttpStream(path: readonly string[], input: unknown, options: ClientOptions<ClientContext>, first: AsyncIterator<unknown>) {
    return new ResumableStream(first, options.lastEventId, async (error, lastEventId) => {
      const typed = httpCallError(error, options.signal)
      const resumable = lastEventId !== undefined && typed instanceof ORPCError && typed.code === RpcClientErrorCode.ConnectionClosed
      if (!resumable) throw typed
      return await this.send(path, input, { ...options, lastEventId }) as AsyncIterator<unknown>
    }, options.signal)
  }

  /**
   * With `transport: 'auto'`, after a socket that could not be opened: whether nuxt-orpc's HTTP route answers
   * its probe (a proxy or host that refuses upgrades, in front of a server that is up). Then calls go over HTTP
   * until a socket opens. A server that is down, or any other server (a stock oRPC one), does not answer it,
   * and calls keep waiting for the socket.
   */
  private async fallBackToHttp() {
    if (this.status.transport === 'http') return
    let reachable = false
    try {
      const answer = await fetch(`${urlOf(this.options.httpUrl)}/${httpProbePath}`, { method: 'GET', credentials: 'include', signal: AbortSignal.timeout(this.options.connectTimeout) })
      reachable = answer.headers.get(httpProbeHeader) === 'http'
      void answer.body?.cancel()
    }
    catch {
      // Not reachable.
    }
    // Read again: meanwhile a socket may have opened, the app closed the connection, or another probe switched.
    const { state, transport } = this.status as RpcConnectionStatus
    if (!reachable || transport === 'http' || state === 'open' || state === 'closed') return
    this.setStatus('open', this.status.closeCode, this.status.closeReason, 'http')
    for (const waiter of [...this.waiters]) waiter.resolve('http')
  }

  /**
   * A stream whose events carry ids (`withEventMeta(value, { id })`) survives a dropped socket: once a new one
   * is open, the procedure is called again with `lastEventId` (a new call, not a replay of the old frame) and
   * the stream goes on from there; the procedure decides what to send after that id. A stream without ids
   * ends with `CONNECTION_CLOSED`, as a plain call does.
   */
  private resumableStream(path: readonly string[], input: unknown, options: ClientOptions<ClientContext>, firstSession: Session, firstIterator: AsyncIterator<unknown>) {
    let session = firstSession
    return new ResumableStream(firstIterator, options.lastEventId, async (error, lastEventId, returned) => {
      let typed = await session.callError(error, options.signal)
      // A resume whose own socket closes first (a server that woke without the connection's record closes it
      // with 1012) is tried again on the next socket, a few times at most.
      for (let attempt = 0; ; attempt++) {
        const resumable = lastEventId !== undefined && typed instanceof ORPCError && typed.code === RpcClientErrorCode.ConnectionClosed
        // `close()` ends the connection's streams: they do not open the socket again.
        if (!resumable || attempt === maxResumeAttempts || this.status.state === 'closed') throw typed
        // The same socket when it stayed open (the server restarted the stream), else the next one.
        const open = this.status.state === 'open' && this.status.transport === 'websocket' && this.session && !this.session.closed ? this.session : undefined
        const next = open ?? await this.ready(options.signal)
        // Returned while waiting for a socket: no new call (the reader gets its end).
        if (returned()) return endedStream
        // The socket cannot be opened again but HTTP answers: the stream goes on there.
        if (next === 'http') return await this.callOverHttp(path, input, { ...options, lastEventId }) as AsyncIterator<unknown>
        session = next
        const resumed = { ...options, lastEventId }
        try {
          // Not wrapped again: this stream goes on with it.
          return await (this.plainCallOn(session, path, input, resumed, false) ?? session.link.call(path, input, resumed)) as AsyncIterator<unknown>
        }
        catch (callError) {
          typed = await session.callError(callError, options.signal)
        }
      }
    }, options.signal)
  }

  /**
   * Moves to a new socket, whose handshake carries the cookies of now (the new session's context): call it after
   * a login, a logout or a token refresh. New calls wait for the new socket. Calls in flight finish on the old
   * one (for at most `heartbeatTimeout`). Its streams end at once: those whose events carry ids resume on the
   * new socket after their last event, the others end with `CONNECTION_CLOSED`. The old socket closes once no
   * call is left on it.
   *
   * If the server refuses the new socket (the context function rejects the new session), the old socket's
   * streams end with the refusal's typed error (`UNAUTHORIZED`, ...), new calls get it too, and `status` is
   * `'closed'` with its close code. Calls in flight still finish on the old socket.
   *
   * Resolves once the new socket is open or refused (the old one drains meanwhile). Over HTTP, or with no socket
   * open, there is nothing to do: each request (or the next socket) carries the cookies of its time.
   */
  async refresh(): Promise<void> {
    const old = this.session
    if (!old || this.status.transport === 'http') return
    this.session = undefined
    clearTimeout(this.reconnectTimer)
    this.attempt = 0
    this.connect()
    let makeError = () => errorForClose(1000, 'The session changed')
    try {
      await this.ready(undefined)
    }
    catch (error) {
      if (error instanceof ORPCError && error.code !== RpcClientErrorCode.ConnectionTimeout) makeError = () => error
    }
    old.plainCalls.cutStreams(makeError)
    void this.drain(old)
  }

  /** Closes a session left by `refresh` once no call waits on it. */
  private async drain(old: Session) {
    // A call that never gets its answer does not keep the old session's socket open for good: past the
    // heartbeat timeout it ends with CONNECTION_CLOSED, as if the socket had dropped.
    const drainedBy = Date.now() + this.options.heartbeatTimeout
    while (old.busy && !old.closed && Date.now() < drainedBy) await new Promise(resolve => setTimeout(resolve, 50))
    try {
      old.socket.close(1000, 'Session changed')
    }
    catch {
      // Closed already.
    }
    old.end(1000, 'Session changed')
  }

  /** Closes the socket (code 1000) and stays closed until the next call; its streams end with CONNECTION_CLOSED. */
  close() {
    clearTimeout(this.reconnectTimer)
    const session = this.session
    this.session = undefined
    if (session) {
      session.socket.close(1000, 'Client closed')
      session.end(1000, 'Client closed')
    }
    this.setStatus('closed', 1000, 'Client closed', this.options.transport === 'http' ? 'http' : 'websocket')
  }

  private ready(signal: AbortSignal | undefined): Promise<Session | 'http'> {
    if (signal?.aborted) return Promise.reject(signal.reason)
    if (this.status.state === 'idle' || this.status.state === 'closed') this.connect()
    return new Promise<Session | 'http'>((resolve, reject) => {
      const timeout = setTimeout(() => finish(new ORPCError(RpcClientErrorCode.ConnectionTimeout, {
        status: 503,
        message: `The WebSocket did not open within ${this.options.connectTimeout} ms; the call was not sent.`,
      })), this.options.connectTimeout)
      const onAbort = () => finish(signal!.reason)
      const finish = (error: unknown, session?: Session | 'http') => {
        clearTimeout(timeout)
        signal?.removeEventListener('abort', onAbort)
        this.waiters.delete(waiter)
        if (session) resolve(session)
        else reject(error)
      }
      const waiter: Waiter = { resolve: session => finish(undefined, session), reject: finish }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.waiters.add(waiter)
    })
  }

  private connect() {
    clearTimeout(this.reconnectTimer)
    const url = urlOf(this.options.url)
    // `orpc` first: a server that takes the first offer speaks plain oRPC. nuxt-orpc's server picks
    // `nuxt-orpc` and sends a ready frame once it accepted the connection (see rpcSubprotocols).
    const socket = new this.options.WebSocket(url, [...rpcSubprotocols])
    // ArrayBuffers arrive in order; Blobs would be read asynchronously and could overtake each other.
    socket.binaryType = 'arraybuffer'
    let ready = false
    const onReady = () => {
      if (ready || this.session !== session) return
      ready = true
      this.attempt = 0
      this.setStatus('open', this.status.closeCode, this.status.closeReason, 'websocket')
      for (const waiter of [...this.waiters]) waiter.resolve(session)
    }
    const session: Session = new Session(socket, (data) => {
      if (data === restartFrame) {
        // The server woke up without the streams it ran for this socket: they resume (or end) now.
        session.plainCalls.cutStreams(() => errorForClose(RpcCloseCode.ServiceRestart, 'The server restarted the stream'))
        return true
      }
      if (ready) return false
      // Instead of the ready frame, a server that cannot close the socket yet says why it refused it.
      const refusal = refusalOf(data)
      if (!refusal) {
        onReady()
        return false
      }
      socket.close(1000)
      onEnd(refusal.code, refusal.reason)
      return true
    }, (iterator, path, input, options) => this.resumableStream(path, input, options, session, iterator), this.clientInterceptors)
    this.session = session
    // Over HTTP meanwhile, the socket's attempts do not change what the app sees.
    if (this.status.transport !== 'http') this.setStatus(this.attempt === 0 && this.status.state !== 'reconnecting' ? 'connecting' : 'reconnecting')

    // A server that froze or vanished without closing sends nothing, not even heartbeats: replace the socket.
    // After two thirds of the timeout in silence the client pings (the heartbeat frame; nuxt-orpc's server
    // answers with the same): where the server beats on a timer its beat comes first, and where it cannot
    // (a Cloudflare Durable Object, which answers pings without waking) the ping's answer keeps the socket
    // alive.
    let pingedAt = 0
    /** Pings sent since the last frame arrived. */
    let pings = 0
    const checkEvery = Math.max(100, this.options.heartbeatTimeout / 4)
    const watchdog = setInterval(() => {
      const silence = Date.now() - session.lastFrameAt
      if (pingedAt < session.lastFrameAt) pings = 0
      const canPing = ready && socket.protocol === readySubprotocol && socket.readyState === 1
      const ping = () => {
        pingedAt = Date.now()
        pings++
        socket.send(heartbeatFrame)
      }
      if (silence <= this.options.heartbeatTimeout) {
        if (canPing && silence > this.options.heartbeatTimeout * 2 / 3 && pings === 0) ping()
        return
      }
      // Past the timeout with one ping unanswered: one more, and one more check. A ping may be lost without the
      // socket being dead (workerd now and then neither answers nor delivers one that reaches a Durable Object
      // as it goes to sleep).
      if (canPing && pings === 1) {
        ping()
        return
      }
      try {
        socket.close(4000, 'No heartbeat')
      }
      catch {
        // Already closing.
      }
      onEnd(1006, 'No heartbeat from the server')
    }, checkEvery)
    ;(watchdog as { unref?: () => void }).unref?.()

    let opened = false
    socket.addEventListener('open', () => {
      opened = true
      session.lastFrameAt = Date.now()
      // Plain oRPC servers send nothing first; nuxt-orpc's sends its ready frame once it accepted us.
      if (socket.protocol !== readySubprotocol) onReady()
    })
    const onEnd = (code: number, reason: string) => {
      clearInterval(watchdog)
      if (!session.end(code, reason) || this.session !== session) return
      this.session = undefined
      if (isRefusalCloseCode(code)) {
        this.setStatus('closed', code, reason)
        for (const waiter of [...this.waiters]) waiter.reject(errorForClose(code, reason))
        return
      }
      if (this.status.transport !== 'http') this.setStatus('reconnecting', code, reason)
      if (!opened && this.options.transport === 'auto') void this.fallBackToHttp()
      const delay = reconnectDelay(this.attempt++, this.options.reconnectBaseDelay, this.options.reconnectMaxDelay)
      this.reconnectTimer = setTimeout(() => this.connect(), delay)
    }
    socket.addEventListener('close', event => onEnd(event.code, event.reason))
    socket.addEventListener('error', () => onEnd(1006, ''))
  }

  private setStatus(state: RpcConnectionState, closeCode = this.status.closeCode, closeReason = this.status.closeReason, transport = this.status.transport) {
    this.status = { state, transport, closeCode, closeReason }
    this.options.onStatus?.(this.status)
  }
}

export { createRpcClient } from './client'

/** A connection to `url` as an oRPC link; give it to `createRpcClient` (or oRPC's `createORPCClient`). */
export function createRpcConnection(options: RpcConnectionOptions): RpcConnection {
  return new RpcConnection(options)
}
