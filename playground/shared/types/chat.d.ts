/** A message of the playground's chat rooms. */
export interface ChatMessage {
  author: string
  text: string
  /** Which server instance published it (pid): shows that messages cross instances. */
  via: string
  sentAt: Date
}

/** Who is in a chat room: `usePresence()`'s member data. */
export interface ChatMember {
  name: string
  /** Which server instance the member is connected to. */
  via: string
}

declare module '#nuxt-orpc' {
  interface RpcChannels {
    [room: `chat:${string}`]: ChatMessage
  }
  interface RpcPresenceChannels {
    [room: `chat:${string}`]: ChatMember
  }
}
