-- Stores one result and keeps the newest-first indexes in step, atomically.
-- KEYS[1] the result hash, KEYS[2] the global index, KEYS[3] the tenant's index.
-- ARGV: 1 bytes, 2 meta (JSON), 3 index member, 4 tenant.
-- Returns {0, ''} new, {1, ''} unchanged, {2, previous bytes} changed.
local old = redis.call('HMGET', KEYS[1], 'bytes', 'idx', 'tenant')
if old[3] and old[3] ~= ARGV[4] then
  return redis.error_reply('result stored under tenant ' .. old[3] .. ', not ' .. ARGV[4])
end
if old[2] then
  redis.call('ZREM', KEYS[2], old[2])
  redis.call('ZREM', KEYS[3], old[2])
end
redis.call('HSET', KEYS[1], 'bytes', ARGV[1], 'meta', ARGV[2], 'idx', ARGV[3], 'tenant', ARGV[4])
redis.call('ZADD', KEYS[2], 0, ARGV[3])
redis.call('ZADD', KEYS[3], 0, ARGV[3])
if not old[1] then return {0, ''} end
if old[1] == ARGV[1] then return {1, ''} end
return {2, old[1]}
