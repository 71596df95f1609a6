-- release_failed: give up the lease of a failed attempt that will be retried, and keep its
-- error (ControlScripts.release_failed).
--
-- The lease goes as in release.lua, and the error joins the item's history (lib/history) in
-- the same round trip; the success path never comes here.
--
-- KEYS[1] = meta: the batch's hash
-- KEYS[2] = leases: job id -> lease deadline (ms) of each running item
-- KEYS[3] = queue: arq's queue
-- KEYS[4] = errors: the batch's hash of failed attempts per item
-- KEYS[5] = prior: the batch's hash of attempts of earlier runs per item
-- KEYS[6] = open: unfinished batches -> last progress (ms)
-- ARGV[1] = job id
-- ARGV[2] = the queue score to make the job due at again
-- ARGV[3] = item index
-- ARGV[4] = attempt number
-- ARGV[5] = error type
-- ARGV[6] = error message
-- ARGV[7] = HTTP status code, or ''
-- ARGV[8] = now (ms)
-- ARGV[9] = how many failed attempts to keep per item
-- Returns: 1.
--- @include "lib/finalize"
--- @include "lib/history"

release(KEYS[1], KEYS[2], ARGV[1])
-- Back to the score arq claimed it at, which arq's retry arithmetic expects.
redis.call('ZADD', KEYS[3], 'XX', ARGV[2], ARGV[1])
push_error(KEYS[4], KEYS[5], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8],
           tonumber(ARGV[9]))
-- The batch's count of attempts sent again (`batchq status --watch`).
redis.call('HINCRBY', KEYS[1], 'retried', 1)
return 1
