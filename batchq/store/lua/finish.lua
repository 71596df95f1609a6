-- finish: record an item's result once and move the batch's counters (Scripts.finish).
--
-- KEYS[1] = meta: the batch's hash
-- KEYS[2] = results: the batch's results hash
-- KEYS[3] = leases: job id -> lease deadline (ms) of each running item
-- KEYS[4] = ready: the levels of ready batches (lib/stride)
-- KEYS[5] = queue: arq's queue
-- KEYS[6] = open: unfinished batches -> last progress (ms)
-- ARGV[1] = batch id
-- ARGV[2] = item index
-- ARGV[3] = job id
-- ARGV[4] = status: the counter to move ('succeeded' | 'failed' | ...)
-- ARGV[5] = the result (JSON, or a deflated one: batchq.collect)
-- ARGV[6] = now (ms)
-- ARGV[7] = prompt tokens
-- ARGV[8] = output tokens
-- ARGV[9] = arq's in-progress key prefix
-- ARGV[10] = arq's retry key prefix
-- ARGV[11] = arq's job key prefix
-- Returns: 1 if this call wrote the result, 0 if the item had one already.
--- @include "lib/finalize"

-- The job is over whichever write wins: retire arq's keys for it here, as arq's own
-- finish_job would (the worker then skips that round trip; see BatchqWorker.finish_job).
redis.call('DEL', ARGV[9] .. ARGV[3], ARGV[10] .. ARGV[3], ARGV[11] .. ARGV[3])
redis.call('ZREM', KEYS[5], ARGV[3])
local n = finalize(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
                   ARGV[6])
-- Counted with the result, so once per item: the token rates of `batchq status --watch`.
if n == 1 and (ARGV[7] ~= '0' or ARGV[8] ~= '0') then
  redis.call('HINCRBY', KEYS[1], 'tokens_in', ARGV[7])
  redis.call('HINCRBY', KEYS[1], 'tokens_out', ARGV[8])
end
return n
