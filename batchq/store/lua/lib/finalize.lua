-- lib/finalize: making an item final, for every script that can.
--
-- A result is written once (HSETNX): the first writer wins and only that write moves a
-- counter, so a job that arq runs twice is counted once. The running counter follows the lease
-- set, which is likewise idempotent.
--
-- KEYS[#KEYS] = open: unfinished batches -> time of their last progress (ms). By convention
--   every script that includes this lib passes the open-batches key last.
-- Defines: OPEN, release, close_if_done, finalize.
--- @include "lib/stride"

local OPEN = KEYS[#KEYS]

local function release(meta, leases, jid)
  if redis.call('ZREM', leases, jid) == 1 then
    redis.call('HINCRBY', meta, 'running', -1)
  end
end

local function close_if_done(meta, ready, bid, now)
  local m = redis.call('HMGET', meta, 'total', 'succeeded', 'failed', 'cancelled', 'state',
                       'expired', 'hooks')
  local expired = tonumber(m[6] or '0')
  local done = tonumber(m[2]) + tonumber(m[3]) + tonumber(m[4]) + expired
  if done >= tonumber(m[1]) and not redis.call('HGET', meta, 'finished_at') then
    redis.call('HSET', meta, 'finished_at', now)
    if m[5] ~= 'cancelled' then
      redis.call('HSET', meta, 'state', expired > 0 and 'expired' or 'completed')
    end
    leave(ready, meta, bid)
    redis.call('ZREM', OPEN, bid)
    -- A completion hook to send (submit --notify): the key travels in the batch's metadata.
    if m[7] then redis.call('ZADD', m[7], now, bid) end
  end
end

local function finalize(meta, results, leases, ready, bid, idx, jid, status, payload, now)
  release(meta, leases, jid)
  if redis.call('HSETNX', results, idx, payload) == 0 then return 0 end
  redis.call('HDEL', meta .. ':tries', idx)
  redis.call('HINCRBY', meta, status, 1)
  -- Progress: what the idle-batch check of the repairer looks at.
  redis.call('ZADD', OPEN, 'XX', now, bid)
  close_if_done(meta, ready, bid, now)
  return 1
end
