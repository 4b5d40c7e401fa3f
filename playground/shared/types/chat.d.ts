/** A message of the playground's chat rooms. */
export interface ChatMessage {
  author: string
  text: string
  /** Which server instance published it (pid): shows that messages cross instances. */
  via: string
  sentAt: Date
}

declare module '#nuxt-orpc' {
  interface RpcChannels {
    [room: `chat:${string}`]: ChatMessage
  }
}
