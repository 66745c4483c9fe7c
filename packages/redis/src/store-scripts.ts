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

-- Drops the oldest retained messages past the retention. oldestT is the timestamp of the message at
-- first ('' when none is retained or it is unknown): while nothing is over the count or the bytes
-- and that message has not expired, nothing is read. Returns the new first, bytes and oldestT.
local function trim(stream, first, top, bytes, oldestT, now, maxCount, maxAge, maxBytes)
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
    first = first + drop
    redis.call('XTRIM', stream, 'MINID', tostring(first))
  end
  return first, b, keptT
end
`

/**
 * KEYS: meta, stream, identity, dedup key, cursors.
 * ARGV: 1 epoch suffix, 2 identity candidate, 3 now, 4 max count, 5 max age, 6 max bytes ('' none),
 * 7 size, 8 message JSON, 9 timestamp, 10 '1' when an idempotency key is given, 11 dedup window ms,
 * 12 slim message JSON, 13 how long Redis keeps the idempotency key (ms, >= 1).
 * Returns { 0, epoch, offset } or, for a duplicate, { 1, epoch, offset, message JSON or '', slim JSON }.
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
      if tonumber(o) >= first then
        local entry = redis.call('XRANGE', KEYS[2], o, o)
        if entry[1] then held = entry[1][2][2] end
      end
      return { 1, epoch, tonumber(o), held, s }
    end
  end
end
local offset = top + 1
local size = tonumber(ARGV[7])
redis.call('XADD', KEYS[2], tostring(offset) .. '-0', 'm', ARGV[8], 't', ARGV[9], 'z', ARGV[7])
local maxBytes = nil
if ARGV[6] ~= '' then maxBytes = tonumber(ARGV[6]) end
if first == offset then oldestT = ARGV[9] end
first, bytes, oldestT = trim(KEYS[2], first, offset, bytes + size, oldestT, now, tonumber(ARGV[4]), tonumber(ARGV[5]), maxBytes)
redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', tostring(offset), 'first', tostring(first), 'bytes', tostring(bytes), 'ot', oldestT, 'mc', ARGV[4], 'ma', ARGV[5], 'mb', ARGV[6])
if ARGV[10] == '1' then
  redis.call('SET', KEYS[4], epoch .. '|' .. tostring(offset) .. '|' .. ARGV[3] .. '|' .. ARGV[12], 'PX', ARGV[13])
end
return { 0, epoch, offset }
`

/**
 * KEYS: meta, stream, identity. ARGV: 1 after, 2 limit, 3 now, 4 epoch suffix, 5 identity candidate.
 * Returns { epoch, top, complete (0/1), entries }. Drops what expired by `now` (it never creates).
 */
export const READ = `${COMMON}
local m = redis.call('HMGET', KEYS[1], 'epoch', 'top', 'first', 'bytes', 'mc', 'ma', 'mb', 'ot')
if not m[1] then
  return { identity(KEYS[3], ARGV[5]) .. '.' .. ARGV[4], 0, 1, {} }
end
local epoch = m[1]
local top = tonumber(m[2])
local first = tonumber(m[3])
local bytes = tonumber(m[4])
local maxBytes = nil
if m[7] and m[7] ~= '' then maxBytes = tonumber(m[7]) end
local newFirst, newBytes, newT = trim(KEYS[2], first, top, bytes, m[8] or '', tonumber(ARGV[3]), tonumber(m[5]), tonumber(m[6]), maxBytes)
if newFirst ~= first then
  redis.call('HSET', KEYS[1], 'first', tostring(newFirst), 'bytes', tostring(newBytes), 'ot', newT)
  first = newFirst
end
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
return { epoch, top, complete, entries }
`

/** KEYS: meta, identity. ARGV: 1 epoch suffix, 2 identity candidate. Returns { epoch, top }. */
export const POSITION = `${COMMON}
local m = redis.call('HMGET', KEYS[1], 'epoch', 'top')
if not m[1] then
  return { identity(KEYS[2], ARGV[2]) .. '.' .. ARGV[1], 0 }
end
return { m[1], tonumber(m[2]) }
`

/**
 * KEYS: meta, cursors. ARGV: 1 consumer, 2 offset. Moves the cursor forward within the current
 * epoch; a cursor of an earlier epoch is replaced (dropped when the new offset is 0). Creates
 * nothing for a channel that has no log.
 */
export const COMMIT = `
local m = redis.call('HMGET', KEYS[1], 'epoch', 'top')
if not m[1] then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
local epoch = m[1]
local top = tonumber(m[2])
local current = 0
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
if offset > current then
  redis.call('HSET', KEYS[2], ARGV[1], epoch .. '|' .. tostring(offset))
end
return 1
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
