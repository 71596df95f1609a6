-- lib/models: the model each job asks for (batchq.store.models says how hosts use it).
--
-- A batch whose items all name one model has it in its hash ('model'). A batch of several has
-- their names in 'models' (a JSON array) and one byte per item in its ':codes' string, the
-- item's model by its place in that array (0-based); its cursor parks the items of models not
-- being dispatched in one list per model (':park:<code>'), in order, and counts in 'n:<code>'
-- the items of each model it has not passed yet. A batch with neither (stored before models
-- were recorded, or of more than 255 models) is a wildcard: its jobs go to any host.
-- Uses no KEYS or ARGV of its own: the arguments come as parameters.
-- Defines: batch_of, batch_info, job_model, model_set, wanted_codes, mixed_work, mixed_take, mixed_dry, park_keys, serves.

-- The batch id of a job id (`<batch id>:<index>`), and the index.
local function batch_of(jid)
  local bid, idx = string.match(jid, '^(.*):([^:]*)$')
  return bid or jid, idx
end

-- {model ('' for a wildcard or a batch of several), priority, state, names of a batch of
-- several (or nil), name -> code}, read once per script run.
local function batch_info(cache, bprefix, bid)
  local info = cache[bid]
  if info == nil then
    local m = redis.call('HMGET', bprefix .. bid, 'model', 'priority', 'state', 'models')
    local names, codes = nil, {}
    if m[4] then
      names = cjson.decode(m[4])
      for c, name in ipairs(names) do codes[name] = c - 1 end
    end
    info = {m[1] or '', tonumber(m[2] or '0'), m[3], names, codes}
    cache[bid] = info
  end
  return info
end

-- The model of one job ('' for a wildcard's).
local function job_model(cache, bprefix, jid)
  local bid, idx = batch_of(jid)
  local info = batch_info(cache, bprefix, bid)
  if not info[4] or not idx then return info[1] end
  local byte = redis.call('GETRANGE', bprefix .. bid .. ':codes', idx, idx)
  return info[4][(string.byte(byte) or 255) + 1] or ''
end

-- The models in args[first .. first + n - 1] as a set; nil when n is 0 (every model).
local function model_set(args, first, n)
  if n == 0 then return nil end
  local set = {}
  for i = first, first + n - 1 do set[args[i]] = true end
  return set
end

-- A batch of several: the codes of its models in `wanted` (a set of names; nil: all).
local function wanted_codes(info, wanted)
  local out = {}
  for c, name in ipairs(info[4]) do
    if not wanted or wanted[name] then out[c - 1] = true end
  end
  return out
end

-- A batch of several: the names of the models it has items of still to dispatch.
local function mixed_work(meta, info)
  local out = {}
  for c, name in ipairs(info[4]) do
    local code = c - 1
    if tonumber(redis.call('HGET', meta, 'n:' .. code) or '0') > 0
       or redis.call('LLEN', meta .. ':park:' .. code) > 0 then
      out[#out + 1] = name
    end
  end
  for _, idx in ipairs(redis.call('LRANGE', meta .. ':redo', 0, 99)) do
    local byte = redis.call('GETRANGE', meta .. ':codes', idx, idx)
    local name = info[4][(string.byte(byte) or 255) + 1]
    if name then out[#out + 1] = name end
  end
  return out
end

-- A batch of several: nothing left to dispatch, of any model.
local function mixed_dry(meta, info, nxt, total)
  if nxt < total or redis.call('LLEN', meta .. ':redo') > 0 then return false end
  for c = 0, #info[4] - 1 do
    if redis.call('LLEN', meta .. ':park:' .. c) > 0 then return false end
  end
  return true
end

-- A batch of several: the index of the next item of a model in `wanted` (code -> true), or
-- nil. Parked items first, then the redo list, then the cursor; the items of other models the
-- redo list and the cursor pass are parked. The cursor looks at `budget` items at most.
local function mixed_take(meta, wanted, nxt, total, budget)
  for code, _ in pairs(wanted) do
    local idx = redis.call('LPOP', meta .. ':park:' .. code)
    if idx then return idx end
  end
  local codes = meta .. ':codes'
  while true do
    local idx = redis.call('LPOP', meta .. ':redo')
    if not idx then break end
    local code = string.byte(redis.call('GETRANGE', codes, idx, idx)) or 255
    if wanted[code] then return idx end
    redis.call('RPUSH', meta .. ':park:' .. code, idx)
  end
  local found = nil
  while nxt < total and budget > 0 and not found do
    local len = math.min(256, total - nxt, budget)
    local chunk = redis.call('GETRANGE', codes, nxt, nxt + len - 1)
    if #chunk == 0 then break end  -- codes shorter than the batch: never written so
    local parked, passed = {}, {}
    local upto = #chunk
    for i = 1, #chunk do
      local code = string.byte(chunk, i)
      passed[code] = (passed[code] or 0) + 1
      if wanted[code] then
        found = nxt + i - 1
        upto = i
        break
      end
      parked[code] = parked[code] or {}
      table.insert(parked[code], nxt + i - 1)
    end
    for code, list in pairs(parked) do
      redis.call('RPUSH', meta .. ':park:' .. code, unpack(list))
    end
    for code, n in pairs(passed) do redis.call('HINCRBY', meta, 'n:' .. code, -n) end
    nxt = nxt + upto
    budget = budget - upto
  end
  redis.call('HSET', meta, 'next', nxt)
  if found then return tostring(found) end
  return nil
end

-- The park lists a batch may have (one per model of a batch of several; none otherwise).
local function park_keys(meta)
  local names = redis.call('HGET', meta, 'models')
  local out = {}
  if names then
    for c = 0, #cjson.decode(names) - 1 do out[#out + 1] = meta .. ':park:' .. c end
  end
  return out
end

-- Whether a host's entry in the serving hash ('model|ms|loads|others', pick.lua) names
-- `model`: the model it serves, or one of the others it holds at once.
local function serves(said, model)
  local first, rest = string.match(said, '^(.-)|%d+|%d+|?(.*)$')
  if first == nil or first == model then return true end
  for other in string.gmatch(rest, '%S+') do
    if other == model then return true end
  end
  return false
end
