-- One atomic rate-limit decision for one (provider, store): three bucketed sliding windows,
-- a provider throttle and concurrency leases, checked together and consumed all or nothing.
--
-- Every input is bound to a name here, at the top; nothing below reads KEYS or ARGV.
-- Times are integer milliseconds.
--
-- Per window (minute, hour, day): a sorted set of live bucket indexes (score = index) and a
-- hash {index -> cost, "t" -> total cost of the live buckets}.
local window_keys = {
    {zset = KEYS[1], hash = KEYS[2]},  -- minute
    {zset = KEYS[3], hash = KEYS[4]},  -- hour
    {zset = KEYS[5], hash = KEYS[6]},  -- day
}
local leases = KEYS[7]     -- sorted set {lease_id -> expiry_ms}
local throttle = KEYS[8]   -- hash {until, strikes, last}
local stats = KEYS[9]      -- hash {clock, hits, denied, denied_unflushed, success, failure,
                           --       last_request}
local dirty = KEYS[10]     -- set while the store awaits a flush to PostgreSQL

local mode = ARGV[1]                  -- "hit" | "test" | "peek" | "flush"
local now = tonumber(ARGV[2])         -- the caller's clock, ms
local cost = tonumber(ARGV[3])        -- units this operation spends
local lease_id = ARGV[4]              -- "" = take no lease
local lease_ttl = tonumber(ARGV[5])   -- ms a lease lives unless released
local concurrency = tonumber(ARGV[6]) -- lease slots, 0 = unlimited
local dirty_ttl = tonumber(ARGV[7])   -- ms the dirty flag lives
local window_args = {                 -- length_ms, bucket_ms, limit of each window
    {length = tonumber(ARGV[8]), bucket = tonumber(ARGV[9]), limit = tonumber(ARGV[10])},
    {length = tonumber(ARGV[11]), bucket = tonumber(ARGV[12]), limit = tonumber(ARGV[13])},
    {length = tonumber(ARGV[14]), bucket = tonumber(ARGV[15]), limit = tonumber(ARGV[16])},
}
local concurrency_wait = tonumber(ARGV[17]) -- longest wait, ms, suggested for a busy lease slot
local stats_ttl = 2 * window_args[3].length -- the stats outlive the longest (day) window
--
-- A hit at ms t lies in the window ending at `now` iff t > now - length. Bucket j holds hits
-- at ms jb .. (j+1)b-1 and is counted whole while any of them lies in the window, so the count
-- never under-states the window (see limits.py).
--
-- Returns (decoded by reply.py, in this order): allowed, retry_after_ms, reason, used per
-- window (minute, hour, day), leases_in_use, throttled_until_ms, first_touch, denied,
-- denied_unflushed, last_request_ms, successes, failures, now_ms.

local NAMES = {'minute', 'hour', 'day'}

-- Effective time never runs backwards for a key, whatever the callers' clock skew: the
-- guarantee's proof needs hits recorded in time order.
local last_clock = tonumber(redis.call('HGET', stats, 'clock') or '0')
if last_clock > now then now = last_clock end

local function first_live(length, bucket)
    return math.floor((now - length + 1) / bucket)
end

local function purge(zkey, hkey, from)
    while true do
        local old = redis.call('ZRANGEBYSCORE', zkey, '-inf', '(' .. from, 'LIMIT', 0, 500)
        if #old == 0 then return end
        local costs = redis.call('HMGET', hkey, unpack(old))
        local freed = 0
        for _, c in ipairs(costs) do freed = freed + tonumber(c or '0') end
        redis.call('HDEL', hkey, unpack(old))
        redis.call('ZREM', zkey, unpack(old))
        -- Lua renders -0 as "-0", which HINCRBY refuses: skip buckets that freed nothing.
        if freed ~= 0 then redis.call('HINCRBY', hkey, 't', -freed) end
    end
end

-- Milliseconds until the oldest live buckets have freed `excess` units.
local function wait_for(zkey, hkey, from, excess, length, bucket)
    local freed, offset = 0, 0
    while true do
        local idxs = redis.call('ZRANGEBYSCORE', zkey, from, '+inf', 'LIMIT', offset, 500)
        if #idxs == 0 then return length end
        local costs = redis.call('HMGET', hkey, unpack(idxs))
        for i, idx in ipairs(idxs) do
            freed = freed + tonumber(costs[i] or '0')
            if freed >= excess then return (tonumber(idx) + 1) * bucket + length - 1 - now end
        end
        offset = offset + #idxs
    end
end

local wait, reason = 0, false
local function refuse(ms, why)
    if ms > wait or not reason then wait, reason = math.max(ms, wait), why end
end

local used, windows = {}, {}
for w = 1, 3 do
    local length, bucket, limit = window_args[w].length, window_args[w].bucket, window_args[w].limit
    local zkey, hkey = window_keys[w].zset, window_keys[w].hash
    local from = first_live(length, bucket)
    purge(zkey, hkey, from)
    used[w] = tonumber(redis.call('HGET', hkey, 't') or '0')
    windows[w] = {zkey, hkey, length, bucket}
    if cost > limit then
        refuse(length, 'cost_exceeds_limit:' .. NAMES[w])
    elseif used[w] + cost > limit then
        refuse(wait_for(zkey, hkey, from, used[w] + cost - limit, length, bucket), NAMES[w])
    end
end

redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
local in_use = redis.call('ZCARD', leases)
if concurrency > 0 and in_use >= concurrency and mode ~= 'peek' and mode ~= 'flush' then
    local first = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')
    -- A lease is usually released long before it expires: suggest a short wait, not the TTL.
    refuse(math.min(tonumber(first[2]) - now, concurrency_wait), 'concurrency')
end

local blocked_until = tonumber(redis.call('HGET', throttle, 'until') or '0')
if blocked_until > now then refuse(blocked_until - now, 'throttled') end

local allowed = (not reason) and 1 or 0
if mode == 'peek' or mode == 'flush' then allowed = 0 end
local first_touch = 0
if mode == 'hit' then
    if allowed == 1 then
        -- A free operation (a token refresh) takes a lease but occupies no window.
        for w = 1, (cost > 0) and 3 or 0 do
            local zkey, hkey, length, bucket = unpack(windows[w])
            local idx = math.floor(now / bucket)
            used[w] = redis.call('HINCRBY', hkey, 't', cost)
            redis.call('HINCRBY', hkey, idx, cost)
            -- A bucket's keys must outlive it: set when it opens (now >= idx * bucket), the
            -- expiry already covers every later hit in the same bucket.
            if redis.call('ZADD', zkey, idx, idx) == 1 then
                redis.call('PEXPIRE', zkey, length + bucket)
                redis.call('PEXPIRE', hkey, length + bucket)
            end
        end
        if lease_id ~= '' then
            redis.call('ZADD', leases, now + lease_ttl, lease_id)
            local last = redis.call('ZRANGE', leases, -1, -1, 'WITHSCORES')
            -- Relative TTL: the callers' clock need not agree with the Redis server's.
            redis.call('PEXPIRE', leases, tonumber(last[2]) - now)
            in_use = in_use + 1
        end
        redis.call('HINCRBY', stats, 'hits', 1)
        redis.call('HSET', stats, 'last_request', now)
    else
        redis.call('HINCRBY', stats, 'denied', 1)
        redis.call('HINCRBY', stats, 'denied_unflushed', 1)
    end
    if redis.call('SET', dirty, '1', 'NX', 'PX', dirty_ttl) then first_touch = 1 end
end
redis.call('HSET', stats, 'clock', now)
redis.call('PEXPIRE', stats, stats_ttl)

local s = redis.call('HMGET', stats, 'denied', 'denied_unflushed', 'last_request', 'success', 'failure')
if mode == 'flush' then
    redis.call('HSET', stats, 'denied_unflushed', 0)
    redis.call('DEL', dirty)
end
return {allowed, wait, reason or '', used[1], used[2], used[3], in_use, blocked_until, first_touch,
        tonumber(s[1] or '0'), tonumber(s[2] or '0'), tonumber(s[3] or '0'),
        tonumber(s[4] or '0'), tonumber(s[5] or '0'), now}
