-- Block one (provider, store) for every worker: until now + Retry-After when the provider
-- sent one, else an escalating backoff (base * 2^(strikes-1), capped) whose strike count
-- starts again after a quiet period without throttling.
--
-- KEYS[1] throttle hash {until, strikes, last}; KEYS[2] stats hash; KEYS[3] dirty flag
-- ARGV    now_ms, retry_after_ms (-1 = none), base_ms, cap_ms, quiet_ms, dirty_ttl_ms

local throttle, stats, dirty = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
local retry_after = tonumber(ARGV[2])
local base, cap, quiet = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])

local last_clock = tonumber(redis.call('HGET', stats, 'clock') or '0')
if last_clock > now then now = last_clock end

local t = redis.call('HMGET', throttle, 'until', 'strikes', 'last')
local old_until = tonumber(t[1] or '0')
local strikes = tonumber(t[2] or '0')
local last = tonumber(t[3] or '0')
if strikes > 0 and now - last < quiet then strikes = strikes + 1 else strikes = 1 end

local wait = retry_after
if wait < 0 then wait = math.min(cap, base * 2 ^ (strikes - 1)) end
local blocked_until = math.max(old_until, now + wait)

redis.call('HSET', throttle, 'until', blocked_until, 'strikes', strikes, 'last', now)
redis.call('PEXPIRE', throttle, blocked_until - now + quiet)
redis.call('HINCRBY', stats, 'throttles', 1)
redis.call('HSET', stats, 'clock', now)
local first_touch = 0
if redis.call('SET', dirty, '1', 'NX', 'PX', tonumber(ARGV[6])) then first_touch = 1 end
return {blocked_until, strikes, first_touch}
