-- lib/history: each item's failed attempts, the latest ones.
--
-- One entry is [attempt, type, message, status code or null, epoch ms]; attempts are counted
-- across runs (the item's earlier runs are in the prior hash).
-- Uses no KEYS or ARGV of its own: the keys come as parameters.
-- Defines: clip, push_error.

-- At most n bytes of s, cut at a character boundary (s is UTF-8).
local function clip(s, n)
  if string.len(s) <= n then return s end
  local b = string.byte(s, n + 1)
  while n > 0 and b >= 128 and b < 192 do
    n = n - 1
    b = string.byte(s, n + 1)
  end
  return string.sub(s, 1, n)
end

local function push_error(errors, prior, idx, attempt, etype, message, code, at, cap)
  if type(message) ~= 'string' then message = '' end
  if type(etype) ~= 'string' then etype = 'unknown' end
  local list = {}
  local raw = redis.call('HGET', errors, idx)
  if raw then list = cjson.decode(raw) end
  local c = cjson.null
  if code ~= nil and code ~= '' and code ~= cjson.null then c = tonumber(code) end
  local n = tonumber(attempt) + tonumber(redis.call('HGET', prior, idx) or '0')
  table.insert(list, {n, etype, clip(message, 1200), c, tonumber(at)})
  while #list > cap do table.remove(list, 1) end
  redis.call('HSET', errors, idx, cjson.encode(list))
end
