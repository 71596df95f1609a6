-- lib/models: the model a batch's jobs ask for (batchq.store.models says how hosts use it).
--
-- A batch whose items all name one model has it in its hash ('model'). A batch whose items
-- name several, or one stored before models were recorded, has none: its jobs are wildcards,
-- dispatched and claimed for whatever model a host serves, as before models were known.
-- Uses no KEYS or ARGV of its own: the arguments come as parameters.
-- Defines: batch_of, batch_info, model_set.

-- The batch id of a job id (`<batch id>:<index>`).
local function batch_of(jid)
  return string.match(jid, '^(.*):[^:]*$') or jid
end

-- {model ('' for a wildcard), priority, state} of a batch, read once per script run.
local function batch_info(cache, bprefix, bid)
  local info = cache[bid]
  if info == nil then
    local m = redis.call('HMGET', bprefix .. bid, 'model', 'priority', 'state')
    info = {m[1] or '', tonumber(m[2] or '0'), m[3]}
    cache[bid] = info
  end
  return info
end

-- The models in args[first .. first + n - 1] as a set; nil when n is 0 (every model).
local function model_set(args, first, n)
  if n == 0 then return nil end
  local set = {}
  for i = first, first + n - 1 do set[args[i]] = true end
  return set
end
