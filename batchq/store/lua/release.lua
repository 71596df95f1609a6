-- release: give up an item's lease without a result (Scripts.release).
--
-- KEYS[1] = meta: the batch's hash
-- KEYS[2] = leases: job id -> lease deadline (ms) of each running item
-- KEYS[3] = queue: arq's queue
-- KEYS[4] = open: unfinished batches -> last progress (ms)
-- ARGV[1] = job id
-- ARGV[2] = the queue score to make the job due at again, or '' to leave it
-- ARGV[3] = '1': refund the attempt the job started (it does not count)
-- ARGV[4] = '1': count the job in the batch's retries
-- Returns: 1.
--- @include "lib/finalize"

release(KEYS[1], KEYS[2], ARGV[1])
-- Back to the score arq claimed it at, which arq's retry arithmetic expects.
if ARGV[2] ~= '' then redis.call('ZADD', KEYS[3], 'XX', ARGV[2], ARGV[1]) end
if ARGV[3] == '1' then
  local idx = string.match(ARGV[1], ':(%d+)$')
  if tonumber(redis.call('HGET', KEYS[1] .. ':tries', idx) or '0') > 0 then
    redis.call('HINCRBY', KEYS[1] .. ':tries', idx, -1)
  end
end
-- The batch's count of attempts sent again (`batchq status --watch`), in the same round trip.
if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[1], 'retried', 1) end
return 1
