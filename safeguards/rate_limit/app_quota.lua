-- Lease blocks of one provider app's quota (Gmail project, Graph app in a tenant) to workers.
--
-- Touches only the app's own keys (hash tag {app}): one Cluster slot, never a store's.
-- Every input is bound to a name here; nothing below reads KEYS or ARGV. Times are integer ms.
local zset = KEYS[1]   -- sorted set of live grant buckets (score = bucket index)
local hash = KEYS[2]   -- hash {bucket index -> units granted less returned, "t" -> their sum}
local stats = KEYS[3]  -- hash {clock, granted, returned, refused, limit, window, horizon}

local mode = ARGV[1]                 -- "grant" | "peek"
local now = tonumber(ARGV[2])        -- the caller's clock, ms
local want = tonumber(ARGV[3])       -- units asked for (a block, at least `need`)
local need = tonumber(ARGV[4])       -- fewest units worth granting (the call's cost)
local limit = tonumber(ARGV[5])      -- units per window
local window = tonumber(ARGV[6])     -- the provider's window W, ms
local validity = tonumber(ARGV[7])   -- V: a grant may be spent until its time + V, ms
local bucket = tonumber(ARGV[8])     -- width of a grant bucket, ms
local back_idx = tonumber(ARGV[9])   -- bucket of the units given back, -1 = none
local back = tonumber(ARGV[10])      -- units given back (never spent)
--
-- A grant at effective time g is counted, whole bucket, for W + V: every unit of it is spent in
-- [g, g + V], so it lies in a provider window (s - W, s] only if g > s - W - V. The proof that
-- no window of length W holds more than `limit` spent units is in app_quota.py.
local horizon = window + validity

-- Effective time never runs backwards for an app, whatever the callers' clock skew.
local last_clock = tonumber(redis.call('HGET', stats, 'clock') or '0')
if last_clock > now then now = last_clock end
local from = math.floor((now - horizon + 1) / bucket)

local function purge()
    while true do
        local old = redis.call('ZRANGEBYSCORE', zset, '-inf', '(' .. from, 'LIMIT', 0, 500)
        if #old == 0 then return end
        local units = redis.call('HMGET', hash, unpack(old))
        local freed = 0
        for _, u in ipairs(units) do freed = freed + tonumber(u or '0') end
        redis.call('HDEL', hash, unpack(old))
        redis.call('ZREM', zset, unpack(old))
        if freed ~= 0 then redis.call('HINCRBY', hash, 't', -freed) end
    end
end

-- Milliseconds until the oldest live buckets have freed `excess` units.
local function wait_for(excess)
    local freed, offset = 0, 0
    while true do
        local idxs = redis.call('ZRANGEBYSCORE', zset, from, '+inf', 'LIMIT', offset, 500)
        if #idxs == 0 then return horizon end
        local units = redis.call('HMGET', hash, unpack(idxs))
        for i, idx in ipairs(idxs) do
            freed = freed + tonumber(units[i] or '0')
            if freed >= excess then return (tonumber(idx) + 1) * bucket + horizon - 1 - now end
        end
        offset = offset + #idxs
    end
end

purge()
-- Units given back were never spent: they leave their bucket if it is still live (a purged
-- bucket already left the count).
if back_idx >= from and back > 0 then
    local held = tonumber(redis.call('HGET', hash, back_idx) or '0')
    local freed = math.min(back, held)
    if freed > 0 then
        redis.call('HINCRBY', hash, back_idx, -freed)
        redis.call('HINCRBY', hash, 't', -freed)
        redis.call('HINCRBY', stats, 'returned', freed)
    end
end
local used = tonumber(redis.call('HGET', hash, 't') or '0')

local granted, wait, reason, idx = 0, 0, '', math.floor(now / bucket)
if mode == 'grant' then
    if need > limit then
        wait, reason = horizon, 'cost_exceeds_limit'
    elseif used + need > limit then
        wait, reason = wait_for(used + need - limit), 'app_quota'
    else
        granted = math.min(want, limit - used)
        used = redis.call('HINCRBY', hash, 't', granted)
        redis.call('HINCRBY', hash, idx, granted)
        if redis.call('ZADD', zset, idx, idx) == 1 then
            redis.call('PEXPIRE', zset, horizon + bucket)
            redis.call('PEXPIRE', hash, horizon + bucket)
        end
        redis.call('HINCRBY', stats, 'granted', granted)
    end
    if granted == 0 then redis.call('HINCRBY', stats, 'refused', 1) end
    redis.call('HSET', stats, 'limit', limit, 'window', window, 'horizon', horizon)
end
redis.call('HSET', stats, 'clock', now)
redis.call('PEXPIRE', stats, 86400000)

local s = redis.call('HMGET', stats, 'granted', 'returned', 'refused', 'limit', 'window')
return {granted, idx, now, wait, reason, used, tonumber(s[1] or '0'), tonumber(s[2] or '0'),
        tonumber(s[3] or '0'), tonumber(s[4] or '0'), tonumber(s[5] or '0')}
