/**
 * The Lua scripts of the Redis presence store. Each runs atomically on the keys of one slot:
 *
 * - the channel script on a channel's two hashes (one hash tag): the entries and, per user, the
 *   order of its connections (last joined or updated last), which gives the user-level edge and
 *   the member's tie-break;
 * - the node scripts on the node-level keys (their own hash tag, `{nodes}`): the index of the
 *   entries each node holds, the newest activity of nodes that hold entries, heartbeats;
 * - the last-seen script on the sorted set of last-seen times (bounded by count).
 *
 * Scripts never encode numbers or data: times travel as the decimal strings the caller gave and
 * data as the caller's JSON, so nothing is rounded by Lua's number formatting.
 */

/**
 * KEYS[1] entries hash: field `<f>:<connectionId>` for f in u (user), n (node), s (state),
 *   d (data, JSON), j (joinedAt), t (updatedAt).
 * KEYS[2] users hash: userId → JSON array of its connection ids, the last joined or updated last.
 * ARGV[1] the operation:
 *   join conn user node state data joinedAt updatedAt → {edge, replacedNode, rows}
 *   update conn hasState state hasData data now      → {node, rows} or nil (no such entry)
 *   leave conn onlyNode                              → {edge, node, rows} or nil (none, or held by another node)
 *   read                                             → rows of every user
 * rows: flat, 7 per entry: conn, user, node, state, data, joinedAt, updatedAt; for a leave edge
 * the rows are those of the removed entry (the member as it was), else the user's remaining ones.
 */
export const CHANNEL_SCRIPT = `
local E, U = KEYS[1], KEYS[2]
local op = ARGV[1]

local function list(user)
  local raw = redis.call('HGET', U, user)
  if not raw then return {} end
  return cjson.decode(raw)
end
local function save(user, l)
  if #l == 0 then redis.call('HDEL', U, user) else redis.call('HSET', U, user, cjson.encode(l)) end
end
local function without(l, c)
  local out = {}
  for _, x in ipairs(l) do if x ~= c then out[#out + 1] = x end end
  return out
end
local function rows(l, out)
  for _, c in ipairs(l) do
    local v = redis.call('HMGET', E, 'u:' .. c, 'n:' .. c, 's:' .. c, 'd:' .. c, 'j:' .. c, 't:' .. c)
    if v[1] then
      out[#out + 1] = c
      for i = 1, 6 do out[#out + 1] = v[i] end
    end
  end
  return out
end

if op == 'join' then
  local conn, user, node = ARGV[2], ARGV[3], ARGV[4]
  local oldUser = redis.call('HGET', E, 'u:' .. conn)
  local oldNode = redis.call('HGET', E, 'n:' .. conn) or ''
  if oldUser and oldUser ~= user then save(oldUser, without(list(oldUser), conn)) end
  local l = without(list(user), conn)
  local edge = 0
  if #l == 0 and oldUser ~= user then edge = 1 end
  l[#l + 1] = conn
  save(user, l)
  redis.call('HSET', E, 'u:' .. conn, user, 'n:' .. conn, node, 's:' .. conn, ARGV[5], 'd:' .. conn, ARGV[6], 'j:' .. conn, ARGV[7], 't:' .. conn, ARGV[8])
  return {edge, oldNode, rows(l, {})}
elseif op == 'update' then
  local conn = ARGV[2]
  local user = redis.call('HGET', E, 'u:' .. conn)
  if not user then return false end
  if ARGV[3] == '1' then redis.call('HSET', E, 's:' .. conn, ARGV[4]) end
  if ARGV[5] == '1' then redis.call('HSET', E, 'd:' .. conn, ARGV[6]) end
  redis.call('HSET', E, 't:' .. conn, ARGV[7])
  local l = without(list(user), conn)
  l[#l + 1] = conn
  save(user, l)
  return {redis.call('HGET', E, 'n:' .. conn), rows(l, {})}
elseif op == 'leave' then
  local conn, only = ARGV[2], ARGV[3]
  local user = redis.call('HGET', E, 'u:' .. conn)
  if not user then return false end
  local node = redis.call('HGET', E, 'n:' .. conn)
  if only ~= '' and node ~= only then return false end
  local before = rows({conn}, {})
  redis.call('HDEL', E, 'u:' .. conn, 'n:' .. conn, 's:' .. conn, 'd:' .. conn, 'j:' .. conn, 't:' .. conn)
  local rest = without(list(user), conn)
  save(user, rest)
  if #rest == 0 then return {1, node, before} end
  return {0, node, rows(rest, {})}
elseif op == 'read' then
  local users = redis.call('HGETALL', U)
  local out = {}
  for i = 2, #users, 2 do rows(cjson.decode(users[i]), out) end
  return out
end
return redis.error_reply('unknown presence operation ' .. tostring(op))
`

/**
 * KEYS[1] heartbeats (zset node → time), KEYS[2] activity (zset: node that holds entries → the
 * newest joinedAt/updatedAt seen), KEYS[3] the node's index (set of JSON [channel, connectionId]).
 * ARGV[1] the operation, ARGV[2] the node:
 *   track time ref…    add refs to the index; activity moves forward to time
 *   untrack ref…       remove refs; a node whose index empties leaves the activity set
 *   touch time         activity moves forward, only for a node that holds entries
 *   beat time          the heartbeat moves forward (never back); answers 1 when the node had one, else 0
 */
export const NODE_SCRIPT = `
local HB, ACT, IDX = KEYS[1], KEYS[2], KEYS[3]
local op, node = ARGV[1], ARGV[2]
local function forward(key, time)
  local s = redis.call('ZSCORE', key, node)
  if (not s) or tonumber(s) < tonumber(time) then redis.call('ZADD', key, time, node) end
  if s then return 1 end
  return 0
end
if op == 'track' then
  for i = 4, #ARGV do redis.call('SADD', IDX, ARGV[i]) end
  forward(ACT, ARGV[3])
elseif op == 'untrack' then
  for i = 3, #ARGV do redis.call('SREM', IDX, ARGV[i]) end
  if redis.call('SCARD', IDX) == 0 then redis.call('ZREM', ACT, node) end
elseif op == 'touch' then
  if redis.call('EXISTS', IDX) == 1 then forward(ACT, ARGV[3]) end
elseif op == 'beat' then
  return forward(HB, ARGV[3])
else
  return redis.error_reply('unknown node operation ' .. tostring(op))
end
return 1
`

/**
 * KEYS[1] heartbeats, KEYS[2] activity. ARGV: now, ttl, now − ttl (as the caller wrote it).
 * Answers the nodes that hold entries and are silent: last heartbeat (or, without one, newest
 * activity) more than ttl before now. Forgets the heartbeats of silent nodes that hold nothing.
 */
export const DEAD_NODES_SCRIPT = `
local HB, ACT = KEYS[1], KEYS[2]
local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local act = redis.call('ZRANGE', ACT, 0, -1, 'WITHSCORES')
local dead = {}
for i = 1, #act, 2 do
  local last = tonumber(act[i + 1])
  local hb = redis.call('ZSCORE', HB, act[i])
  if hb then last = tonumber(hb) end
  if now - last > ttl then dead[#dead + 1] = act[i] end
end
local silent = redis.call('ZRANGEBYSCORE', HB, '-inf', '(' .. ARGV[3])
for _, n in ipairs(silent) do
  if not redis.call('ZSCORE', ACT, n) then redis.call('ZREM', HB, n) end
end
return dead
`

/**
 * KEYS[1] last-seen times (zset user → time). ARGV: max, then user, time pairs. A time never
 * moves back; beyond max users, those seen longest ago are forgotten.
 */
export const SEEN_SCRIPT = `
local LS = KEYS[1]
local max = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local s = redis.call('ZSCORE', LS, ARGV[i])
  if (not s) or tonumber(s) < tonumber(ARGV[i + 1]) then redis.call('ZADD', LS, ARGV[i + 1], ARGV[i]) end
end
local n = redis.call('ZCARD', LS)
if n > max then redis.call('ZREMRANGEBYRANK', LS, 0, n - max - 1) end
return 1
`
