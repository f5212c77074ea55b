-- The shared hunting budget of one tenant: a sliding-window log (sorted set of call instants,
-- in microseconds) checked against two tiers in one atomic step.
--
-- KEYS[1] the tenant's log, KEYS[2] the generation the log was written under,
-- KEYS[3] the deployment's generation marker (hash: id, lost_at).
-- ARGV: 1 now (us; '' = Redis server time), 2 per_minute, 3 per_hour, 4 minute (us),
--       5 hour (us), 6 mode (spend | peek | absorb), 7 generation the caller last saw ('' if
--       none), 8 a fresh generation id, 9 a member nonce, 10.. instants to absorb (us).
-- Returns {granted (1/0), wait (us), remaining per minute, remaining per hour, generation}.
--
-- Lost data: the marker is never expired, so it disappears or changes only when Redis lost its
-- data. A caller that saw generation G and finds no marker, or a different marker without
-- lost_at (created by a caller that had never seen one), starts a new generation stamped
-- lost_at = now. A tenant whose log predates the current generation then gets its windows
-- filled (per_hour calls at lost_at): the calls made before the loss are unknown, so the
-- current windows count as spent.

local function s(x) return string.format('%.0f', x) end

local log, log_gen, marker = KEYS[1], KEYS[2], KEYS[3]
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local per_min, per_hour = tonumber(ARGV[2]), tonumber(ARGV[3])
local min_w, hour_w = tonumber(ARGV[4]), tonumber(ARGV[5])
local mode, known = ARGV[6], ARGV[7]
local ttl_ms = s(math.ceil(hour_w / 1000) + 1000)

local gen = redis.call('HGET', marker, 'id')
if (not gen and known ~= '') or
   (gen and known ~= '' and known ~= gen and not redis.call('HGET', marker, 'lost_at')) then
  gen = ARGV[8]
  redis.call('HSET', marker, 'id', gen, 'lost_at', s(now))
elseif not gen then
  gen = ARGV[8]
  redis.call('HSET', marker, 'id', gen)
end

if redis.call('GET', log_gen) ~= gen then
  local lost_at = redis.call('HGET', marker, 'lost_at')
  if lost_at and now - tonumber(lost_at) < hour_w then
    for i = 1, per_hour do
      redis.call('ZADD', log, lost_at, 'lost:' .. gen .. ':' .. i)
    end
  end
  redis.call('SET', log_gen, gen, 'PX', ttl_ms)
end

if mode == 'absorb' then
  for i = 10, #ARGV do
    redis.call('ZADD', log, ARGV[i], ARGV[i] .. ':' .. ARGV[9] .. ':' .. i)
  end
  redis.call('PEXPIRE', log, ttl_ms)
  redis.call('PEXPIRE', log_gen, ttl_ms)
  return {0, 0, 0, 0, gen}
end

-- A caller whose clock lags is stamped at the newest entry, so the log stays in order.
local t = now
local newest = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
if newest[2] and tonumber(newest[2]) > t then t = tonumber(newest[2]) end

redis.call('ZREMRANGEBYSCORE', log, '-inf', s(t - hour_w))
local n = redis.call('ZCARD', log)
local in_min = redis.call('ZCOUNT', log, '(' .. s(t - min_w), '+inf')

-- A tier is full when its limit-th newest call is still inside its window; the wait lasts
-- until that call leaves it.
local function tier_wait(limit, window)
  if limit <= 0 then return window end
  if n < limit then return 0 end
  local e = tonumber(redis.call('ZRANGE', log, n - limit, n - limit, 'WITHSCORES')[2])
  if e <= t - window then return 0 end
  return math.max(e + window - now, 1)
end

local wait = math.max(tier_wait(per_min, min_w), tier_wait(per_hour, hour_w))
local rem_min, rem_hour = math.max(per_min - in_min, 0), math.max(per_hour - n, 0)
if mode ~= 'spend' or wait > 0 then
  return {0, wait, rem_min, rem_hour, gen}
end
redis.call('ZADD', log, s(t), s(t) .. ':' .. ARGV[9])
redis.call('PEXPIRE', log, ttl_ms)
redis.call('PEXPIRE', log_gen, ttl_ms)
return {1, 0, rem_min - 1, rem_hour - 1, gen}
