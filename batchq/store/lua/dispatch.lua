-- dispatch: move items from the ready batches into arq's queue (batchq.dispatch).
--
-- Fills the window, the live workers' slots times a factor, one item at a time: the highest
-- priority level first and within it the batch with the smallest pass (lib/stride).
-- Given models (the ones the calling worker's hosts serve), only batches of those models and
-- the wildcards (lib/models) are dispatched, and the window counts only their jobs: each model
-- served has its own window, so jobs of a model no host serves now cannot crowd it out.
--
-- KEYS[1] = ready: the levels of ready batches
-- KEYS[2] = queue: arq's queue
-- KEYS[3] = workers: worker id -> heartbeat deadline (ms)
-- KEYS[4] = worker-slots: worker id -> its concurrency
-- KEYS[5] = legacy: the round-robin list of ready batches from before priorities
-- ARGV[1] = now (ms)
-- ARGV[2] = the batch key prefix (a batch's hash is this .. batch id)
-- ARGV[3] = the job keys' TTL (ms)
-- ARGV[4] = the arq function the jobs run
-- ARGV[5] = most items to send
-- ARGV[6] = window factor
-- ARGV[7] = minimum window
-- ARGV[8] = arq's job key prefix
-- ARGV[9] = arq's result key prefix
-- ARGV[10] = n: how many models follow (0: every model, one window for all)
-- ARGV[11 .. 10 + n] = the models to dispatch
-- Returns: {items sent, jobs now in arq's queue, the window, ready batches}.
--- @include "lib/stride"
--- @include "lib/models"

local now = tonumber(ARGV[1])
local bprefix = ARGV[2]
local ttl = ARGV[3]
local fn = ARGV[4]
local max_items = tonumber(ARGV[5])
local factor = tonumber(ARGV[6])
local min_window = tonumber(ARGV[7])
local job_prefix = ARGV[8]
local result_prefix = ARGV[9]
local wanted = model_set(ARGV, 11, tonumber(ARGV[10]))
local cache = {}

-- Per batch of several models: the codes of its models to dispatch now (lib/models).
local want = {}
local function codes_of(bid, info)
  if want[bid] == nil then want[bid] = wanted_codes(info, wanted) end
  return want[bid]
end

local function eligible(bid)
  if not wanted then return true end
  local info = batch_info(cache, bprefix, bid)
  if info[4] then return next(codes_of(bid, info)) ~= nil end
  return info[1] == '' or wanted[info[1]]
end

-- Batches readied by a batchq from before priorities (a round-robin list) join their level.
if redis.call('EXISTS', KEYS[5]) == 1 then
  for _, bid in ipairs(redis.call('LRANGE', KEYS[5], 0, -1)) do
    if redis.call('EXISTS', bprefix .. bid) == 1 then join(KEYS[1], bprefix .. bid, bid, true) end
  end
  redis.call('DEL', KEYS[5])
end

local slots = 0
for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], now, '+inf')) do
  slots = slots + tonumber(redis.call('HGET', KEYS[4], w) or '0')
end
local window = math.max(math.ceil(slots * factor), min_window)
local queued = redis.call('ZCARD', KEYS[2])
local mine = queued
if wanted then
  mine = 0
  for _, jid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    local model = job_model(cache, bprefix, jid)
    if model == '' or wanted[model] then mine = mine + 1 end
  end
end
local room = math.min(window - mine, max_items)

-- Batches of several models with nothing of the models given left to dispatch in this call.
local skip = {}

-- The highest level with a batch to look at, and its batch of smallest pass: with models
-- given, the first whose model is among them, read a page at a time (most levels hold one
-- model's batches, so the first page decides). An empty level goes.
local function next_batch()
  for _, prio in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1, 'REV')) do
    local lvl = level_key(KEYS[1], prio)
    if redis.call('EXISTS', lvl) == 0 then
      redis.call('ZREM', KEYS[1], prio)
    else
      local start = 0
      while true do
        local page = redis.call('ZRANGE', lvl, start, start + 31)
        if #page == 0 then break end
        for _, bid in ipairs(page) do
          if not skip[bid] and eligible(bid) then return prio, lvl, bid end
        end
        start = start + 32
      end
    end
  end
  return nil
end

local sent = 0
-- Each turn either moves a batch's cursor or takes a dry batch out of its level: it ends.
while sent < room do
  local prio, lvl, bid = next_batch()
  if not prio then break end
  local meta = bprefix .. bid
  local m = redis.call('HMGET', meta, 'state', 'next', 'total', 'weight')
  local info = batch_info(cache, bprefix, bid)
  local idx = false
  local live = m[1] == 'queued' or m[1] == 'running'
  if live and info[4] then
    idx = mixed_take(meta, codes_of(bid, info), tonumber(m[2]), tonumber(m[3]), 4096) or false
    if not idx then
      local nxt = tonumber(redis.call('HGET', meta, 'next'))
      -- Only other models' items left (or the look-ahead ran out): another call's.
      if not mixed_dry(meta, info, nxt, tonumber(m[3])) then skip[bid] = 'skip' end
    end
  elseif live then
    idx = redis.call('LPOP', meta .. ':redo')
    if not idx then
      local nxt = tonumber(m[2])
      if nxt < tonumber(m[3]) then
        redis.call('HSET', meta, 'next', nxt + 1)
        idx = tostring(nxt)
      end
    end
  end
  if skip[bid] then
    -- Neither sent nor dry: left in its level for a call for its other models.
  elseif idx then
    -- The stride: the smallest pass goes next, so shares follow the weights.
    redis.call('ZINCRBY', lvl, 1 / tonumber(m[4] or '1'), bid)
    local jid = bid .. ':' .. idx
    if redis.call('HEXISTS', meta .. ':results', idx) == 0
       and redis.call('EXISTS', job_prefix .. jid, result_prefix .. jid) == 0 then
      -- arq's invariants: the job key is written with (before) its queue entry, carries the
      -- worker's serializer (JSON), and an existing id is never overwritten.
      local payload = '{"t":1,"f":"' .. fn .. '","a":["' .. bid .. '",' .. idx
        .. '],"k":{},"et":' .. ARGV[1] .. '}'
      redis.call('SET', job_prefix .. jid, payload, 'PX', ttl)
      redis.call('ZADD', KEYS[2], now, jid)
      sent = sent + 1
    end
  else
    leave_level(KEYS[1], prio, bid)
    if m[1] then redis.call('HSET', meta, 'active', 0) end
  end
end
return {sent, queued + sent, window, ready_count(KEYS[1])}
