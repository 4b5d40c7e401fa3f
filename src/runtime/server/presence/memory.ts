import { onDurableObjectWake } from '../transports/cloudflare'
import type { RpcPresenceMember, PresenceChange, PresenceStore } from './core'
import { createVersionClock } from './core'

interface MemoryMember {
  data: object
  entries: Set<string>
}

interface MemoryChannel {
  /** Member keys in the order they joined. */
  members: Map<string, MemoryMember>
  /** Join entry to member key. */
  entries: Map<string, string>
  version: number
}

/**
 * The one-process store: who is present lives in this process's memory, and leaves with it. No time to live and
 * no timer (a process that dies takes its members and their streams with it).
 */
export function createMemoryPresenceStore(): PresenceStore {
  const channels = new Map<string, MemoryChannel>()
  const nextVersion = createVersionClock()
  // A Durable Object that woke from hibernation forgets the members it had (as the publisher forgets its
  // subscribers): their streams resume on the woken object, and join again.
  onDurableObjectWake(() => channels.clear())

  /** The channel, member key and member of a join entry, if it is there. */
  const joinOf = (name: string, entry: string) => {
    const channel = channels.get(name)
    const key = channel?.entries.get(entry)
    const member = key === undefined ? undefined : channel!.members.get(key)
    return member && { channel: channel!, key: key!, member }
  }

  const change = (channel: MemoryChannel, type: PresenceChange['type'], key: string, member: MemoryMember): PresenceChange => {
    channel.version = nextVersion()
    return { type, key, data: member.data, connections: member.entries.size, version: channel.version }
  }

  return {
    async join(name, entry, key, data) {
      let channel = channels.get(name)
      if (!channel) channels.set(name, channel = { members: new Map(), entries: new Map(), version: 0 })
      let member = channel.members.get(key)
      const type = member ? 'update' : 'join'
      if (!member) channel.members.set(key, member = { data, entries: new Set() })
      member.data = data
      member.entries.add(entry)
      channel.entries.set(entry, key)
      return [change(channel, type, key, member)]
    },

    async update(name, entry, data) {
      const joined = joinOf(name, entry)
      if (!joined) return []
      joined.member.data = data
      return [change(joined.channel, 'update', joined.key, joined.member)]
    },

    async leave(name, entry) {
      const joined = joinOf(name, entry)
      if (!joined) return []
      const { channel, key, member } = joined
      channel.entries.delete(entry)
      member.entries.delete(entry)
      if (member.entries.size) return [change(channel, 'update', key, member)]
      channel.members.delete(key)
      if (!channel.members.size) channels.delete(name)
      return [change(channel, 'leave', key, member)]
    },

    async list(name) {
      const channel = channels.get(name)
      const members: RpcPresenceMember[] = []
      for (const [key, member] of channel?.members ?? []) members.push({ key, data: member.data, connections: member.entries.size })
      // An empty channel has no entry left: its version is now, which no change already made can exceed.
      return { members, version: channel?.version ?? nextVersion(), expired: [] }
    },

    async close() {
      channels.clear()
    },
  }
}
