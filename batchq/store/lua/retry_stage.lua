-- retry_stage: take final items out of the results to run them again, the first of two steps
-- (ControlScripts.retry_stage; retry_commit.lua is the second).
--
-- Re-run final items under the same job ids, in two steps so that a retry spread over many
-- calls cannot let the batch finish half-way (and notify, and satisfy a waiter) between them:
--
-- 1. stage (this script, per chunk of indices): each chosen item's result goes (its error
--    into the history, its attempts into the prior count), its counter moves back to queued,
--    and its index joins the retrying list: not final, not dispatchable. A finished batch is
--    running again.
-- 2. commit (once): the retrying list joins the redo list and the batch is dispatched again.
--
-- A retry that dies between the two leaves items that are neither final nor queued: the idle
-- repairer finds them like any lost item (the batch is open again), so nothing is stranded.
-- Each index taken out is also appended to the reruns log, which a reader of results as they
-- land (batchq.completed) follows to learn that a result it yielded is gone and another is due.
--
-- KEYS[1] = meta: the batch's hash
-- KEYS[2] = results: the batch's results hash
-- KEYS[3] = retrying: the batch's list of indices taken out by a retry in progress
-- KEYS[4] = errors: the batch's hash of failed attempts per item
-- KEYS[5] = prior: the batch's hash of attempts of earlier runs per item
-- KEYS[6] = tries: the batch's hash of attempts so far per item
-- KEYS[7] = open: unfinished batches -> last progress (ms)
-- KEYS[8] = reruns: the batch's log of indices taken out of the results
-- ARGV[1] = batch id
-- ARGV[2] = now (ms)
-- ARGV[3] = the statuses to take, comma-separated ('failed,expired'); '*': any
-- ARGV[4] = how many failed attempts to keep per item
-- ARGV[5] = 'range' (ARGV[6] and ARGV[7] follow) or 'list' (indices follow, from ARGV[6])
-- ARGV[6] = range: first index; list: the first of the indices, up to ARGV[#ARGV]
-- ARGV[7] = range: end index (exclusive)
-- Returns: how many items it took; -1 if there is no such batch; -2 if it is cancelled.
--- @include "lib/history"

-- A stored result's status and attempts: all of it, or of a deflated one the JSON head
-- before the first newline (see batchq.collect).
local function result_head(raw)
  return cjson.decode(string.match(raw, '^[^\n]*'))
end

local m = redis.call('HMGET', KEYS[1], 'state', 'total', 'started_at')
if not m[1] then return -1 end
if m[1] == 'cancelled' then return -2 end
local want = {}
for st in string.gmatch(ARGV[3], '[^,]+') do want[st] = true end
local picked = {}
if ARGV[5] == 'range' then
  for i = tonumber(ARGV[6]), math.min(tonumber(ARGV[7]), tonumber(m[2])) - 1 do
    table.insert(picked, tostring(i))
  end
else
  for i = 6, #ARGV do table.insert(picked, ARGV[i]) end
end
local n = 0
for _, idx in ipairs(picked) do
  local raw = redis.call('HGET', KEYS[2], idx)
  if raw then
    -- Results are written with the status first; decode only the ones to move.
    local st = string.match(raw, '^{"s":"(%a+)"')
    local d = nil
    if not st then
      d = result_head(raw)
      st = d.s
    end
    if want['*'] or want[st] then
      if not d then d = result_head(raw) end
      local a = tonumber(d.a) or 0
      -- Expiry is no attempt: only failures join the history.
      if st == 'failed' and type(d.e) == 'table' then
        push_error(KEYS[4], KEYS[5], idx, a, d.e.type, d.e.message, d.e.status_code, ARGV[2],
                   tonumber(ARGV[4]))
      end
      if a > 0 then redis.call('HINCRBY', KEYS[5], idx, a) end
      redis.call('HDEL', KEYS[2], idx)
      redis.call('HDEL', KEYS[6], idx)
      redis.call('HINCRBY', KEYS[1], st, -1)
      redis.call('RPUSH', KEYS[3], idx)
      redis.call('RPUSH', KEYS[8], idx)
      n = n + 1
    end
  end
end
if n > 0 then
  -- Readers add the prior attempts only for batches that have any.
  redis.call('HSET', KEYS[1], 'rerun', 1)
  if m[1] == 'completed' or m[1] == 'expired' then
    local state = 'queued'
    if m[3] then state = 'running' end
    redis.call('HSET', KEYS[1], 'state', state)
    redis.call('HDEL', KEYS[1], 'finished_at')
  end
  if m[1] ~= 'paused' then redis.call('ZADD', KEYS[7], ARGV[2], ARGV[1]) end
end
return n
