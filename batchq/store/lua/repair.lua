-- repair: re-queue the lost items among a range of a batch's indices (Scripts.repair_range).
--
-- An item is lost when it is neither final, queued, running nor claimed: its arq job expired
-- or arq dropped it.
--
-- KEYS[1] = meta: the batch's hash
-- KEYS[2] = results: the batch's results hash
-- KEYS[3] = redo: the batch's list of indices to dispatch again
-- KEYS[4] = queue: arq's queue
-- KEYS[5] = leases: job id -> lease deadline (ms) of each running item
-- KEYS[6] = ready: the levels of ready batches (lib/stride)
-- KEYS[7] = open: unfinished batches -> last progress (ms)
-- ARGV[1] = batch id
-- ARGV[2] = first index
-- ARGV[3] = end index (exclusive)
-- ARGV[4] = now (ms)
-- ARGV[5] = arq's in-progress key prefix
-- ARGV[6] = arq's job key prefix
-- ARGV[7] = the result a cancelled item gets (JSON)
-- Returns: how many items it found lost; -1 if there is no such batch.
--- @include "lib/finalize"
--- @include "lib/models"

local m = redis.call('HMGET', KEYS[1], 'state', 'next', 'cancel_from', 'expire_from')
if not m[1] then return -1 end
local bid = ARGV[1]
-- Only dispatched items can be lost; after a cancel, the rest have no result by design, and
-- past a deadline the expiry is still writing theirs.
local limit = tonumber(m[2])
if tonumber(m[3] or '-1') >= 0 then limit = tonumber(m[3]) end
if tonumber(m[4] or '-1') >= 0 then limit = math.min(limit, tonumber(m[4])) end
local last = math.min(tonumber(ARGV[3]), limit) - 1
local waiting = {}
for _, list in ipairs({KEYS[3], unpack(park_keys(KEYS[1]))}) do
  -- The redo list, and what a batch of several models parked (lib/models): owed a dispatch.
  for _, idx in ipairs(redis.call('LRANGE', list, 0, -1)) do waiting[idx] = true end
end
local n = 0
for i = tonumber(ARGV[2]), last do
  local idx = tostring(i)
  local jid = bid .. ':' .. idx
  if redis.call('HEXISTS', KEYS[2], idx) == 0 and not waiting[idx]
     and not redis.call('ZSCORE', KEYS[4], jid) and not redis.call('ZSCORE', KEYS[5], jid)
     and redis.call('EXISTS', ARGV[5] .. jid) == 0 then
    -- Neither final, queued, running nor claimed: lost (its arq job expired or arq dropped it).
    if m[1] == 'cancelled' then
      finalize(KEYS[1], KEYS[2], KEYS[5], KEYS[6], bid, idx, jid, 'cancelled', ARGV[7], ARGV[4])
    else
      redis.call('DEL', ARGV[6] .. jid)
      redis.call('RPUSH', KEYS[3], idx)
    end
    n = n + 1
  end
end
if n > 0 and m[1] ~= 'cancelled' then join(KEYS[6], KEYS[1], bid, false) end
return n
