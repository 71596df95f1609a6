-- reap: give back the items whose worker died (Scripts.reap).
--
-- Lapsed leases are released and their items re-queued; arq claims that never got a lease
-- are dropped; workers whose heartbeat stopped leave the dispatch window's count.
--
-- KEYS[1] = leases: job id -> lease deadline (ms) of each running item
-- KEYS[2] = queue: arq's queue
-- KEYS[3] = ready: the levels of ready batches (lib/stride)
-- KEYS[4] = workers: worker id -> heartbeat deadline (ms)
-- KEYS[5] = worker-slots: worker id -> its concurrency
-- KEYS[6] = open: unfinished batches -> last progress (ms)
-- ARGV[1] = now (ms)
-- ARGV[2] = the batch key prefix (a batch's hash is this .. batch id)
-- ARGV[3] = most leases to reap
-- ARGV[4] = the TTL arq gives a claim (ms)
-- ARGV[5] = grace (ms): how old a claim without a lease may be
-- ARGV[6] = arq's in-progress key prefix
-- ARGV[7] = arq's job key prefix
-- ARGV[8] = the result a cancelled item gets (JSON)
-- Returns: how many claims and leases it took back.
--- @include "lib/finalize"

local now = tonumber(ARGV[1])
local n = 0
-- A worker killed after arq claimed a job but before batchq's start script took its lease
-- (or after a retry gave the lease back but before arq released the claim) leaves a claim
-- that nothing renews. A live claim gets its lease within milliseconds; one older than the
-- grace period without a lease is dead. The queue is only the dispatch window: cheap to scan.
local claim_ttl = tonumber(ARGV[4])
for _, jid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if not redis.call('ZSCORE', KEYS[1], jid) then
    local ttl = redis.call('PTTL', ARGV[6] .. jid)
    if ttl > 0 and claim_ttl - ttl > tonumber(ARGV[5]) then
      redis.call('DEL', ARGV[6] .. jid)
      redis.call('ZADD', KEYS[2], now, jid)
      n = n + 1
    end
  end
end
-- Workers that died without saying goodbye.
for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - 60000)) do
  redis.call('ZREM', KEYS[4], w)
  redis.call('HDEL', KEYS[5], w)
end
for _, jid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])) do
  local bid, idx = string.match(jid, '^(.*):(%d+)$')
  local meta = ARGV[2] .. bid
  release(meta, KEYS[1], jid)
  -- The worker that held the lease is gone: drop arq's claim, which would otherwise block a
  -- re-run until arq's own lock expires (the job timeout + 10 s: minutes).
  redis.call('DEL', ARGV[6] .. jid)
  local state = redis.call('HGET', meta, 'state')
  if state and redis.call('HEXISTS', meta .. ':results', idx) == 0 then
    if state == 'cancelled' then
      finalize(meta, meta .. ':results', KEYS[1], KEYS[3], bid, idx, jid, 'cancelled', ARGV[8],
               ARGV[1])
    elseif redis.call('EXISTS', ARGV[7] .. jid) == 1 then
      -- Running jobs stay in arq's queue; make it due now.
      redis.call('ZADD', KEYS[2], ARGV[1], jid)
    else
      redis.call('RPUSH', meta .. ':redo', idx)
      join(KEYS[3], meta, bid, false)
    end
  end
  n = n + 1
end
return n
