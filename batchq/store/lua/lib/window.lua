-- lib/window: the batch's jobs in arq's queue (the dispatch window), for the control scripts.
--
-- A job some worker has claimed (it has arq's in-progress key) is at that worker already,
-- which runs it or sees the change at start; these functions leave it alone. The queue is only
-- the dispatch window: cheap to scan.
-- Uses no KEYS or ARGV of its own: keys and arq's key prefixes come as parameters.
-- Defines: unclaimed, drop_job.

-- The batch's unclaimed jobs in `queue`, as {job id, item index} pairs; `claimed_prefix` is
-- arq's in-progress key prefix.
local function unclaimed(queue, bid, claimed_prefix)
  local plen = string.len(bid) + 1
  local found = {}
  for _, jid in ipairs(redis.call('ZRANGE', queue, 0, -1)) do
    if string.sub(jid, 1, plen) == bid .. ':'
       and redis.call('EXISTS', claimed_prefix .. jid) == 0 then
      table.insert(found, {jid, string.sub(jid, plen + 1)})
    end
  end
  return found
end

-- Out of arq's queue, with its job key (`job_prefix`: arq's job key prefix).
local function drop_job(queue, jid, job_prefix)
  redis.call('ZREM', queue, jid)
  redis.call('DEL', job_prefix .. jid)
end
