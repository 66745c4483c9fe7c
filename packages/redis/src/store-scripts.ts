/**
 * The message store's Lua scripts: each append, read, position, commit and cursor listing of a
 * channel is one script, so it is atomic against every other node. Keys of one call share the
 * channel's hash tag (and the identity key one of the same slot), so they run on a Redis Cluster.
 *
 * Keys of a channel (`P` the prefix, `T` the channel's tag):
 * - `P{T}:m` meta hash: `epoch`, `top` (newest offset), `first` (oldest retained offset, top + 1
 *   when none), `bytes` (sizes of the retained messages as measured at append), `ot` (timestamp of
 *   the message at `first`, so an append that drops nothing reads no entry), and the retention
 *   of the last append (`mc` max count, `ma` max age ms, `mb` max bytes, '' for none), which
 *   reads apply by age.
 * - `P{T}:s` stream: one entry per retained message, id `<offset>-0`, fields `m` (the message as
 *   JSON), `t` (its timestamp), `z` (its size); dense from `first` to `top`.
 * - `P{T}:c` cursors hash: consumer → `<epoch>|<offset>`.
 * - `P{T}:r` revisions hash, only once a message was revised: offset → `<version>|J<data JSON>`
 *   (an edit) or `<version>|D` (a deletion). Streams cannot be edited in place, so every read
 *   overlays it; an entry goes with its message when retention trims it (in `trim`, in the same
 *   script), and the whole hash when the log is lost. The meta hash also keeps `la`, the `now` of
 *   the newest append (a channel's last activity).
 * - `P<u>{C}` (C the consumer's tag, see store.ts) sorted set of the channels where a consumer has a
 *   cursor, scored by the time its cursor last moved: a consumer's channel list. Not in the
 *   channel's slot: on a Redis Cluster it is updated by its own script after the commit.
 * - `P{T}:k:<idempotency key>` string `<epoch>|<offset>|<at>|<slim message JSON>`, expiring
 *   after the dedup window.
 * - the identity key of the channel's slot: the store's identity there, created by the first call
 *   that finds none (from ARGV, random per call). An empty channel's epoch is `<identity>.<hash
 *   of the name>`, and its first append keeps it; when Redis loses its data the identity goes
 *   with it, so every channel comes back in a new epoch.
 */

/** Shared by the scripts: the identity of the slot, and trimming by count, age and bytes. */
const COMMON = `
local function identity(key, candidate)
  local id = redis.call('GET', key)
  if not id then
    id = candidate
    redis.call('SET', key, id)
  end
  return id
end

-- Drops the revisions of the messages from offset 'from' to 'to' (trimmed): one HDEL per offset when
-- there are fewer of those than revisions, otherwise the revisions below 'to' + 1.
local function dropRevisions(revisions, from, to)
  local n = redis.call('HLEN', revisions)
  if n == 0 then return end
  local gone = {}
  if to - from + 1 <= n then
    for o = from, to do gone[#gone + 1] = tostring(o) end
  else
    for _, f in ipairs(redis.call('HKEYS', revisions)) do
      if tonumber(f) <= to then gone[#gone + 1] = f end
    end
  end
  for i = 1, #gone, 500 do
    redis.call('HDEL', revisions, unpack(gone, i, math.min(i + 499, #gone)))
  end
end

-- Drops the oldest retained messages past the retention (and their revisions). oldestT is the timestamp of the message at
-- first ('' when none is retained or it is unknown): while nothing is over the count or the bytes
-- and that message has not expired, nothing is read. Returns the new first, bytes and oldestT.
local function trim(stream, revisions, first, top, bytes, oldestT, now, maxCount, maxAge, maxBytes)
  local kept = top - first + 1
  if kept <= 0 then return first, bytes, '' end
  local countDrop = kept - maxCount
  if countDrop < 0 then countDrop = 0 end
  local oldest = now - maxAge
  if countDrop == 0 and not (maxBytes and bytes > maxBytes) and oldestT ~= '' and tonumber(oldestT) >= oldest then
    return first, bytes, oldestT
  end
  local drop = 0
  local b = bytes
  local keptT = ''
  local done = false
  while not done and drop < kept do
    local want = countDrop - drop + 1
    if want < 2 then want = 2 end
    if want > 64 then want = 64 end
    local batch = redis.call('XRANGE', stream, tostring(first + drop), '+', 'COUNT', want)
    if #batch == 0 then break end
    for _, e in ipairs(batch) do
      local f = e[2]
      local ts = tonumber(f[4])
      local z = tonumber(f[6])
      if drop < countDrop or ts < oldest or (maxBytes and b > maxBytes) then
        drop = drop + 1
        b = b - z
      else
        keptT = f[4]
        done = true
        break
      end
    end
  end
  if drop > 0 then
    dropRevisions(revisions, first, first + drop - 1)
    first = first + drop
    redis.call('XTRIM', stream, 'MINID', tostring(first))
  end
  return first, b, keptT
end
`

/**
 * KEYS: meta, stream, identity, dedup key, cursors, revisions.
 * ARGV: 1 epoch suffix, 2 identity candidate, 3 now, 4 max count, 5 max age, 6 max bytes ('' none),
 * 7 size, 8 message JSON, 9 timestamp, 10 '1' when an idempotency key is given, 11 dedup window ms,
 * 12 slim message JSON, 13 how long Redis keeps the idempotency key (ms, >= 1).
 * Returns { 0, epoch, offset } or, for a duplicate, { 1, epoch, offset, message JSON or '', slim JSON, its revision or false }.
 */
export const APPEND = `${COMMON}
local now = tonumber(ARGV[3])
local m = redis.call('HMGET', KEYS[1], 'epoch', 'top', 'first', 'bytes', 'ot')
local epoch, top, first, bytes, oldestT
if not m[1] then
  epoch = identity(KEYS[3], ARGV[2]) .. '.' .. ARGV[1]
  if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[5]) == 1 then
    -- Keys of an earlier history outlived its meta (evicted): that history is lost, so never reuse its epoch.
    epoch = epoch .. '.' .. string.sub(ARGV[2], 1, 6)
    redis.call('DEL', KEYS[2])
  end
  redis.call('DEL', KEYS[6])
  top = 0
  first = 1
  bytes = 0
  oldestT = ''
else
  epoch = m[1]
  top = tonumber(m[2])
  first = tonumber(m[3])
  bytes = tonumber(m[4])
  oldestT = m[5] or ''
end
if ARGV[10] == '1' then
  local v = redis.call('GET', KEYS[4])
  if v then
    local e, o, a, s = string.match(v, '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
    if e == epoch and now - tonumber(a) < tonumber(ARGV[11]) then
      local held = ''
      local rev = false
      if tonumber(o) >= first then
        local entry = redis.call('XRANGE', KEYS[2], o, o)
        if entry[1] then
          held = entry[1][2][2]
          rev = redis.call('HGET', KEYS[6], o)
        end
      end
      return { 1, epoch, tonumber(o), held, s, rev }
    end
  end
end
local offset = top + 1
local size = tonumber(ARGV[7])
redis.call('XADD', KEYS[2], tostring(offset) .. '-0', 'm', ARGV[8], 't', ARGV[9], 'z', ARGV[7])
local maxBytes = nil
if ARGV[6] ~= '' then maxBytes = tonumber(ARGV[6]) end
if first == offset then oldestT = ARGV[9] end
first, bytes, oldestT = trim(KEYS[2], KEYS[6], first, offset, bytes + size, oldestT, now, tonumber(ARGV[4]), tonumber(ARGV[5]), maxBytes)
redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', tostring(offset), 'first', tostring(first), 'bytes', tostring(bytes), 'ot', oldestT, 'mc', ARGV[4], 'ma', ARGV[5], 'mb', ARGV[6], 'la', ARGV[3])
if ARGV[10] == '1' then
  redis.call('SET', KEYS[4], epoch .. '|' .. tostring(offset) .. '|' .. ARGV[3] .. '|' .. ARGV[12], 'PX', ARGV[13])
end
return { 0, epoch, offset }
`

/**
 * Shared by the scripts that read a log (KEYS[1] meta, KEYS[2] stream, KEYS[3] revisions): the meta
 * after dropping what expired by 'now' (nil when the channel has no log), and the revisions of
 * stream entries (false for an entry never revised).
 */
const LOG = `
local function openLog(now)
  local m = redis.call('HMGET', KEYS[1], 'epoch', 'top', 'first', 'bytes', 'mc', 'ma', 'mb', 'ot', 'la')
  if not m[1] then return nil end
  local log = { epoch = m[1], top = tonumber(m[2]), first = tonumber(m[3]), la = m[9] }
  local maxBytes = nil
  if m[7] and m[7] ~= '' then maxBytes = tonumber(m[7]) end
  local newFirst, newBytes, newT = trim(KEYS[2], KEYS[3], log.first, log.top, tonumber(m[4]), m[8] or '', now, tonumber(m[5]), tonumber(m[6]), maxBytes)
  if newFirst ~= log.first then
    redis.call('HSET', KEYS[1], 'first', tostring(newFirst), 'bytes', tostring(newBytes), 'ot', newT)
    log.first = newFirst
  end
  return log
end

local function revisionsOf(entries)
  local revs = {}
  if #entries == 0 or redis.call('EXISTS', KEYS[3]) == 0 then return revs end
  local fields = {}
  for i, e in ipairs(entries) do fields[i] = string.sub(e[1], 1, -3) end
  -- In chunks: Lua's unpack fails beyond a few thousand values.
  for i = 1, #fields, 1000 do
    local got = redis.call('HMGET', KEYS[3], unpack(fields, i, math.min(i + 999, #fields)))
    for j, v in ipairs(got) do revs[i + j - 1] = v end
  end
  return revs
end
`

/**
 * KEYS: meta, stream, revisions, identity. ARGV: 1 after, 2 limit, 3 now, 4 epoch suffix, 5 identity
 * candidate. Returns { epoch, top, complete (0/1), entries, revisions of the entries (false: none) }.
 * Drops what expired by `now` (it never creates).
 */
export const READ = `${COMMON}${LOG}
local log = openLog(tonumber(ARGV[3]))
if not log then
  return { identity(KEYS[4], ARGV[5]) .. '.' .. ARGV[4], 0, 1, {}, {} }
end
local epoch = log.epoch
local top = log.top
local first = log.first
local after = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local complete = 0
if after >= top or after + 1 >= first then complete = 1 end
local start = after + 1
if start < first then start = first end
local entries = {}
if limit > 0 and start <= top then
  entries = redis.call('XRANGE', KEYS[2], tostring(start), '+', 'COUNT', limit)
end
return { epoch, top, complete, entries, revisionsOf(entries) }
`

/** KEYS: meta, identity. ARGV: 1 epoch suffix, 2 identity candidate. Returns { epoch, top }. */
export const POSITION = `${COMMON}
local m = redis.call('HMGET', KEYS[1], 'epoch', 'top')
if not m[1] then
  return { identity(KEYS[2], ARGV[2]) .. '.' .. ARGV[1], 0 }
end
return { m[1], tonumber(m[2]) }
`

/** A consumer's channel list: remembers a channel, keeping the `cap` most recently committed in. */
const REMEMBER = `
local function remember(index, channel, score, cap)
  redis.call('ZADD', index, score, channel)
  if redis.call('ZCARD', index) > cap then redis.call('ZREMRANGEBYRANK', index, 0, -cap - 1) end
end
`

/**
 * KEYS: meta, cursors, and on a standalone Redis the consumer's channel list. ARGV: 1 consumer,
 * 2 offset, 3 channel, 4 score (ms), 5 cap of the list. Moves the cursor forward within the
 * current epoch, creating it (at 0 too) when the consumer has none in it; a cursor of an earlier
 * epoch is replaced. Creates nothing for a channel that has no log. Returns 1 when it wrote the
 * cursor (on a cluster the caller then runs REMEMBER_CHANNEL), 0 otherwise.
 */
export const COMMIT = `${REMEMBER}
local m = redis.call('HMGET', KEYS[1], 'epoch', 'top')
if not m[1] then
  redis.call('HDEL', KEYS[2], ARGV[1])
  if KEYS[3] then redis.call('ZREM', KEYS[3], ARGV[3]) end
  return 0
end
local epoch = m[1]
local top = tonumber(m[2])
local current = nil
local v = redis.call('HGET', KEYS[2], ARGV[1])
if v then
  local e, o = string.match(v, '^(.*)|([^|]*)$')
  if e == epoch then
    current = tonumber(o)
  else
    redis.call('HDEL', KEYS[2], ARGV[1])
  end
end
local offset = tonumber(ARGV[2])
if offset > top then offset = top end
if current == nil or offset > current then
  redis.call('HSET', KEYS[2], ARGV[1], epoch .. '|' .. tostring(offset))
  if KEYS[3] then remember(KEYS[3], ARGV[3], ARGV[4], tonumber(ARGV[5])) end
  return 1
end
return 0
`

/** KEYS: the consumer's channel list. ARGV: 1 channel, 2 score (ms), 3 cap. On a cluster, after a COMMIT that wrote. */
export const REMEMBER_CHANNEL = `${REMEMBER}
remember(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]))
return 1
`

/**
 * KEYS: meta, cursors, stream, and on a standalone Redis the consumer's channel list. ARGV:
 * 1 consumer, 2 channel, 3 how many cursors to count exactly at most. One channel of a consumer's
 * list: { cursor offset, top, unread, last activity ('' unknown), consumers with a cursor }, or
 * false when the entry is stale (no log, no cursor, or one of an earlier epoch; removed from the
 * list here on a standalone Redis). Cursors are counted in the current epoch when there are at
 * most ARGV[3] of them (HLEN beyond that).
 */
export const CHANNEL = `
local m = redis.call('HMGET', KEYS[1], 'epoch', 'top', 'first', 'la')
local v = redis.call('HGET', KEYS[2], ARGV[1])
local offset = nil
if m[1] and v then
  local e, o = string.match(v, '^(.*)|([^|]*)$')
  if e == m[1] then offset = tonumber(o) end
end
if not offset then
  if KEYS[4] then redis.call('ZREM', KEYS[4], ARGV[2]) end
  return false
end
local top = tonumber(m[2])
local first = tonumber(m[3])
local seen = offset
if seen < first - 1 then seen = first - 1 end
local unread = top - seen
if unread < 0 then unread = 0 end
local la = m[4] or ''
if la == '' and top >= first then
  local newest = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
  if newest[1] then la = newest[1][2][4] end
end
if top == 0 then la = '' end
local active = redis.call('HLEN', KEYS[2])
if active <= tonumber(ARGV[3]) then
  local all = redis.call('HVALS', KEYS[2])
  local prefix = m[1] .. '|'
  active = 0
  for _, c in ipairs(all) do
    if string.sub(c, 1, #prefix) == prefix and not string.find(c, '|', #prefix + 1, true) then active = active + 1 end
  end
end
return { offset, top, unread, la, active }
`

/**
 * KEYS: meta, stream, revisions. ARGV: 1 offset, 2 the revision (`J<data JSON>` or `D`), 3 now.
 * Makes the retained, not deleted message at the offset its next version: { version, message JSON },
 * or false when there is none (nothing is created for a channel that has no log).
 */
export const REVISE = `${COMMON}${LOG}
local log = openLog(tonumber(ARGV[3]))
if not log then return false end
local offset = tonumber(ARGV[1])
if offset < log.first or offset > log.top then return false end
local entry = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])
if not entry[1] then return false end
local version = 1
local cur = redis.call('HGET', KEYS[3], ARGV[1])
if cur then
  local v, kind = string.match(cur, '^(%d+)|(.)')
  if kind == 'D' then return false end
  version = tonumber(v)
end
version = version + 1
redis.call('HSET', KEYS[3], ARGV[1], tostring(version) .. '|' .. ARGV[2])
-- More revisions than retained messages: some outlived their message (trimmed by a store of an
-- earlier version, which knew no revisions). Sweep them, so the hash stays bounded by retention.
if redis.call('HLEN', KEYS[3]) > log.top - log.first + 1 then dropRevisions(KEYS[3], 1, log.first - 1) end
return { version, entry[1][2][2] }
`

/**
 * KEYS: meta, stream, revisions. ARGV: 1 highest offset wanted ('' for the newest), 2 count, 3 now.
 * One page of a search, newest first: { oldest retained offset, entries, their revisions }, or
 * false when the channel has no log. Drops what expired by `now`.
 */
export const SEARCH_PAGE = `${COMMON}${LOG}
local log = openLog(tonumber(ARGV[3]))
if not log then return false end
local hi = log.top
if ARGV[1] ~= '' and tonumber(ARGV[1]) < hi then hi = tonumber(ARGV[1]) end
if hi < log.first then return { log.first, {}, {} } end
local entries = redis.call('XREVRANGE', KEYS[2], tostring(hi), tostring(log.first), 'COUNT', tonumber(ARGV[2]))
return { log.first, entries, revisionsOf(entries) }
`

/** KEYS: meta, cursors. Returns the flat list consumer, offset of the cursors in the current epoch. */
export const CURSORS = `
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {} end
local all = redis.call('HGETALL', KEYS[2])
local out = {}
for i = 1, #all, 2 do
  local e, o = string.match(all[i + 1], '^(.*)|([^|]*)$')
  if e == epoch then
    out[#out + 1] = all[i]
    out[#out + 1] = o
  end
end
return out
`
