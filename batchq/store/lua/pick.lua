-- pick: the model an Ollama host serves next (batchq.store.models says why this rule).
--
-- A host keeps its model while that model has ready work at the highest priority any model
-- has, unless another model at that priority, served by no other host, has waited longer than
-- the switch bound. Otherwise it takes a model at the highest priority: one no other host
-- serves first (so several hosts spread the models), then one it has loaded (no load to pay),
-- then the one that has waited longest. With no model's work to do it keeps its model.
-- "Waited" is since a host last served the model, or since its work was first seen.
--
-- KEYS[1] = ready: the levels of ready batches (lib/stride)
-- KEYS[2] = queue: arq's queue
-- KEYS[3] = serving: endpoint id -> 'model|ms|loads': the model each host serves, when a
--   worker last said so, and how many models it was given that it did not have loaded; then,
--   after a '|', the other models it serves: those it holds at once with that one
-- KEYS[4] = models: model with work -> when a host last served it (ms)
-- ARGV[1] = now (ms)
-- ARGV[2] = the batch key prefix (a batch's hash is this .. batch id)
-- ARGV[3] = this host's endpoint id
-- ARGV[4] = the switch bound (ms)
-- ARGV[5] = how long a host's word holds (ms): a host that stops saying is serving nothing
-- ARGV[6] = most batches of a level, and most due jobs, to look at
-- ARGV[7] = 1 if this host holds several models at once (its /api/ps), else 0
-- ARGV[8] .. ARGV[#ARGV] = the models loaded on this host (its /api/ps), if known
-- Returns: {the model this host serves ('' none yet), 1 if it just changed, else 0, the
--   others it serves (space-separated), then model, top priority, waited (ms) for each model
--   with work}.
--- @include "lib/stride"
--- @include "lib/models"

local now = tonumber(ARGV[1])
local bprefix = ARGV[2]
local me = ARGV[3]
local bound = tonumber(ARGV[4])
local hold = tonumber(ARGV[5])
local scan = tonumber(ARGV[6])
local cache = {}
local work = {}  -- model -> the highest priority of its ready work

local function note(model, prio)
  if model ~= '' and (work[model] == nil or work[model] < prio) then work[model] = prio end
end

-- Ready work: the batches in the levels that still have items to dispatch.
for _, prio in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  for _, bid in ipairs(redis.call('ZRANGE', level_key(KEYS[1], prio), 0, scan - 1)) do
    local info = batch_info(cache, bprefix, bid)
    local meta = bprefix .. bid
    if (info[3] == 'queued' or info[3] == 'running') and info[4] then
      for _, model in ipairs(mixed_work(meta, info)) do note(model, tonumber(prio)) end
    elseif info[3] == 'queued' or info[3] == 'running' then
      local m = redis.call('HMGET', meta, 'next', 'total')
      if tonumber(m[1]) < tonumber(m[2]) or redis.call('LLEN', meta .. ':redo') > 0 then
        note(info[1], tonumber(prio))
      end
    end
  end
end
-- And the jobs dispatched but not taken yet.
for _, jid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, scan)) do
  local info = batch_info(cache, bprefix, batch_of(jid))
  if info[3] == 'queued' or info[3] == 'running' then
    note(job_model(cache, bprefix, jid), info[2])
  end
end

local current = ''
local loads = 0
local elsewhere = {}  -- model -> served by another live host
local said = redis.call('HGETALL', KEYS[3])
for i = 1, #said, 2 do
  local model, at, n = string.match(said[i + 1], '^(.-)|(%d+)|(%d+)')
  if said[i] == me then
    current = model or ''
    loads = tonumber(n or '0')
  elseif model and tonumber(at) + hold >= now then
    elsewhere[model] = true
  end
end

local since = {}
local seen = redis.call('HGETALL', KEYS[4])
for i = 1, #seen, 2 do since[seen[i]] = tonumber(seen[i + 1]) end
for model, _ in pairs(since) do
  if work[model] == nil then redis.call('HDEL', KEYS[4], model) end
end
local best = nil
for model, prio in pairs(work) do
  if since[model] == nil then
    since[model] = now
    redis.call('HSET', KEYS[4], model, now)
  end
  if best == nil or prio > best then best = prio end
end

local loaded = {}
for i = 8, #ARGV do loaded[ARGV[i]] = true end

-- Lower is better: {served elsewhere, not loaded here, since}.
local function better(a, b)
  local ka = {elsewhere[a] and 1 or 0, loaded[a] and 0 or 1, since[a]}
  local kb = {elsewhere[b] and 1 or 0, loaded[b] and 0 or 1, since[b]}
  for i = 1, 3 do
    if ka[i] ~= kb[i] then return ka[i] < kb[i] end
  end
  return a < b
end

local choice = current
if best ~= nil then
  if current ~= '' and work[current] == best then
    -- Keep it, unless a model no other host serves has waited past the bound.
    for model, prio in pairs(work) do
      if model ~= current and prio == best and not elsewhere[model]
         and now - since[model] > bound and (choice == current or since[model] < since[choice]) then
        choice = model
      end
    end
  else
    choice = nil
    for model, prio in pairs(work) do
      if prio == best and (choice == nil or better(model, choice)) then choice = model end
    end
  end
end

-- A host that holds several models at once serves the others it holds too: no load to pay.
local others = {}
if ARGV[7] == '1' then
  for i = 8, #ARGV do
    local model = ARGV[i]
    if model ~= choice and work[model] ~= nil then
      others[#others + 1] = model
      since[model] = now
      redis.call('HSET', KEYS[4], model, now)
    end
  end
end
local also = table.concat(others, ' ')
if choice ~= '' then
  -- The first model a host serves is a load too (unless it had it loaded): counted.
  if choice ~= current and not loaded[choice] then loads = loads + 1 end
  redis.call('HSET', KEYS[3], me, choice .. '|' .. now .. '|' .. loads .. '|' .. also)
  if work[choice] ~= nil then
    since[choice] = now
    redis.call('HSET', KEYS[4], choice, now)
  end
end
local out = {choice, choice ~= current and 1 or 0, also}
for model, prio in pairs(work) do
  out[#out + 1] = model
  out[#out + 1] = prio
  out[#out + 1] = now - since[model]
end
return out
