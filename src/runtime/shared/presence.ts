/** A member of a presence channel: one key, however many connections it is present with. */
export interface RpcPresenceMember<T = object> {
  /** What identifies the member: the `key` it joined with (a user id), or one of its own per join. */
  key: string
  /** The member's data, as last joined with or updated to. */
  data: T
  /** How many joins (connections, tabs) hold the member present now; 0 in a `leave` event. */
  connections: number
}

/**
 * What a presence stream yields: first `sync` with every member present (a resumed stream too), then each
 * change. `join`: a key's first connection; `update`: its data or its number of
 * connections changed; `leave`: its last connection left, or its instance stopped refreshing it.
 */
export type RpcPresenceEvent<T = object>
  = | { type: 'sync', members: RpcPresenceMember<T>[] }
    | { type: 'join' | 'update' | 'leave', member: RpcPresenceMember<T> }

/**
 * The members after `event`: a `sync` replaces them, `join` and `update` put the member in (in place when it is
 * there, at the end when not), `leave` takes it out. Returns a new array; `members` is left as it was.
 */
export function applyPresenceEvent<T>(members: readonly RpcPresenceMember<T>[], event: RpcPresenceEvent<T>): RpcPresenceMember<T>[] {
  if (event.type === 'sync') return [...event.members]
  const { member } = event
  if (event.type === 'leave') return members.filter(present => present.key !== member.key)
  const index = members.findIndex(present => present.key === member.key)
  if (index === -1) return [...members, member]
  const next = [...members]
  next[index] = member
  return next
}
