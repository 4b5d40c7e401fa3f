import type { Redis } from 'ioredis'
import type { PresenceChange, PresenceStore, RpcPresenceMember } from './core'
import { decodePayload, encodePayload } from '../publisher/redis'

/**
 * One script for every change, so a change and the version it gets are one step in Redis, whichever instance
 * makes it. Keys of a channel: E (hash: join entry to member key), X (sorted set: join entry by the time it
 * expires, in ms), M (hash: member key to data), C (hash: member key to its number of joins), O (sorted set:
 * member key by the version it joined at, for the order of `list`), V (the channel's last version: microseconds
 * of Redis's clock, one more than the last at least, so versions keep increasing when the keys expired or Redis
 * restarted). Every key lives `keep` ms past the last change or refresh.
 *
 * ARGV: the operation, the time to live of a join (ms), `keep`, then the operation's own: join (entry, member
 * key, data), update (entry, data), leave (entry), list, refresh ((entry, member key, data)...). Times are Redis's clock, so
 * instances whose clocks differ agree on what expired. Every operation first removes the joins that expired
 * (their instance stopped refreshing them), and answers with the changes made, each { type, key, data,
 * connections, version }, then for `list` the version and the members as { key, data, connections }.
 */
const script = `
local E, X, M, C, O, V = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local op, ttl, keep = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local changes = {}

local function version()
  local last = tonumber(redis.call('GET', V) or '0')
  local v = math.max(tonumber(time[1]) * 1000000 + tonumber(time[2]), last + 1)
  redis.call('SET', V, string.format('%.0f', v))
  return string.format('%.0f', v)
end

local function change(kind, key, data, connections)
  changes[#changes + 1] = { kind, key, data, connections, version() }
end

local function leave(entry)
  local key = redis.call('HGET', E, entry)
  redis.call('ZREM', X, entry)
  if not key then return end
  redis.call('HDEL', E, entry)
  local connections = redis.call('HINCRBY', C, key, -1)
  local data = redis.call('HGET', M, key) or '{"json":{}}'
  if connections > 0 then
    change('update', key, data, connections)
  else
    redis.call('HDEL', C, key)
    redis.call('HDEL', M, key)
    redis.call('ZREM', O, key)
    change('leave', key, data, 0)
  end
end

for _, entry in ipairs(redis.call('ZRANGEBYSCORE', X, '-inf', now)) do leave(entry) end

local function add(entry, key, data)
  redis.call('HSET', E, entry, key)
  redis.call('ZADD', X, now + ttl, entry)
  local connections = redis.call('HINCRBY', C, key, 1)
  redis.call('HSET', M, key, data)
  if connections == 1 then
    change('join', key, data, 1)
    redis.call('ZADD', O, tonumber(changes[#changes][5]), key)
  else
    change('update', key, data, connections)
  end
end

if op == 'join' then
  add(ARGV[4], ARGV[5], ARGV[6])
elseif op == 'update' then
  local key = redis.call('HGET', E, ARGV[4])
  if key then
    redis.call('HSET', M, key, ARGV[5])
    change('update', key, ARGV[5], tonumber(redis.call('HGET', C, key) or '1'))
  end
elseif op == 'leave' then
  leave(ARGV[4])
elseif op == 'refresh' then
  -- A join the store lost (expired during an outage longer than its time to live, or Redis restarted empty)
  -- is made again: its connection is still there.
  for i = 4, #ARGV, 3 do
    if redis.call('HGET', E, ARGV[i]) then redis.call('ZADD', X, now + ttl, ARGV[i]) else add(ARGV[i], ARGV[i + 1], ARGV[i + 2]) end
  end
end

-- Before the keys get their lifetime: SET (in version()) would clear it.
local listed = op == 'list' and version() or nil
for _, key in ipairs({ E, X, M, C, O, V }) do redis.call('PEXPIRE', key, keep) end

if op ~= 'list' then return { changes } end
local members = {}
for _, key in ipairs(redis.call('ZRANGE', O, 0, -1)) do
  members[#members + 1] = { key, redis.call('HGET', M, key) or '{"json":{}}', tonumber(redis.call('HGET', C, key) or '0') }
end
-- A version of its own, above every change made so far (also of a channel that has no keys left).
return { changes, listed, members }
`

type Reply = [changes: Array<[type: PresenceChange['type'], key: string, data: string, connections: number, version: string]>, version?: string, members?: Array<[key: string, data: string, connections: number]>]

interface PresenceClient extends Redis {
  nuxtOrpcPresence: (...args: Array<string | number>) => Promise<Reply>
}

/**
 * The multi-instance store, on the Redis connection the publisher commands with. Each join has an expiry that
 * its instance pushes back every third of `ttl`; a join whose instance stopped (killed, cut off) expires, and
 * the next operation or refresh on its channel removes it, and publishes its leave.
 */
export function createRedisPresenceStore(client: () => Promise<Redis>, prefix: string, ttlSeconds: number): PresenceStore {
  const ttlMs = ttlSeconds * 1000
  // A channel's keys outlive its last refresh by a few lifetimes, then go: nothing is left of a channel that
  // every instance stopped following.
  const keepMs = String(ttlMs * 4)
  const keysOf = (channel: string) => {
    // One hash tag for the six: a Redis Cluster keeps them in one slot, as a script needs.
    const base = `${prefix}presence:{${channel}}:`
    return ['e', 'x', 'm', 'c', 'o', 'v'].map(part => base + part)
  }

  const run = async (channel: string, op: string, ...args: Array<string | number>) => {
    const redis = await client() as PresenceClient
    if (!redis.nuxtOrpcPresence) redis.defineCommand('nuxtOrpcPresence', { numberOfKeys: 6, lua: script })
    return redis.nuxtOrpcPresence(...keysOf(channel), op, ttlMs, keepMs, ...args)
  }

  const changesOf = ([changes]: Reply): PresenceChange[] => changes.map(([type, key, data, connections, version]) => ({
    type,
    key,
    data: decodePayload(data),
    connections: Number(connections),
    version: Number(version),
  }))

  return {
    async join(channel, entry, key, data) {
      return changesOf(await run(channel, 'join', entry, key, encodePayload(data)))
    },
    async update(channel, entry, data) {
      return changesOf(await run(channel, 'update', entry, encodePayload(data)))
    },
    async leave(channel, entry) {
      return changesOf(await run(channel, 'leave', entry))
    },
    async list(channel) {
      const reply = await run(channel, 'list')
      const members: RpcPresenceMember[] = (reply[2] ?? []).map(([key, data, connections]) => ({ key, data: decodePayload(data), connections: Number(connections) }))
      return { members, version: Number(reply[1]), expired: changesOf(reply) }
    },
    async refresh(channel, joins) {
      return changesOf(await run(channel, 'refresh', ...joins.flatMap(join => [join.entry, join.key, encodePayload(join.data)])))
    },
    async close() {},
  }
}
