-- join: ready a batch for dispatch at its level's smallest pass (Scripts.join; lib/stride).
--
-- KEYS[1] = ready: the levels of ready batches
-- KEYS[2] = meta: the batch's hash
-- ARGV[1] = batch id
-- Returns: 1 if the batch joined its level, 0 if it was ready already.
--- @include "lib/stride"

return join(KEYS[1], KEYS[2], ARGV[1], false)
