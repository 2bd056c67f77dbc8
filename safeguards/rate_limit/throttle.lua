-- Block one (provider, store) for every worker: until now + Retry-After when the provider
-- sent one, else an escalating backoff (base * 2^(strikes-1), capped) whose strike count
-- starts again after a quiet period without throttling.
--
-- Returns {blocked_until_ms, strikes, first_touch} (decoded by reply.py).

local throttle = KEYS[1]              -- hash {until, strikes, last}
local stats = KEYS[2]                 -- check.lua's stats hash: counters, clock, 'tu', flush mark
local now = tonumber(ARGV[1])         -- the caller's clock, ms
local retry_after = tonumber(ARGV[2]) -- the provider's Retry-After, ms; -1 = none sent
local base = tonumber(ARGV[3])        -- first backoff, ms
local cap = tonumber(ARGV[4])         -- longest backoff, ms
local quiet = tonumber(ARGV[5])       -- ms without a throttle after which strikes start over
local dirty_ttl = tonumber(ARGV[6])   -- ms the dirty flag lives

local s = redis.call('HMGET', stats, 'clock', 'dirty_until')
local last_clock = tonumber(s[1] or '0')
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
-- check.lua reads the block from its stats hash ('tu'): no extra command on every decision.
local first_touch = 0
if now >= tonumber(s[2] or '0') then
  first_touch = 1
  redis.call('HSET', stats, 'clock', now, 'tu', blocked_until, 'dirty_until', now + dirty_ttl)
else
  redis.call('HSET', stats, 'clock', now, 'tu', blocked_until)
end
return {blocked_until, strikes, first_touch}
