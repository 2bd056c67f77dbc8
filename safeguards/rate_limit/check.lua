-- One atomic rate-limit decision for one (provider, store): three sliding windows, a provider
-- throttle and concurrency leases, checked together and consumed all or nothing.
--
-- Every input is bound to a name here, at the top; nothing below reads KEYS or ARGV.
-- Times are integer milliseconds.
--
-- Layout, chosen so the common hit is ~6 Redis commands (one HMGET and one HSET of the store's
-- stats hash carry every counter, total and clock):
-- * a window with 1 ms buckets (the minute) is an exact sliding log: a list of "ms:cost"
--   entries, oldest first (effective times never decrease, so RPUSH keeps it in order);
-- * a window with wider buckets (hour, day) is a hash {bucket index -> cost}; the live buckets
--   are the indexes from its first live one ("lo") to the newest written ("cur").
-- Each window's total of live costs is a field of the stats hash, kept equal to the sum of its
-- live entries by every purge (see limits.py for the guarantee this gives).
local window_keys = {KEYS[1], KEYS[2], KEYS[3]}  -- minute, hour, day
local leases = KEYS[4]     -- sorted set {lease_id -> expiry_ms}
local throttle = KEYS[5]   -- hash {until, strikes, last} (throttle.lua's; copied into stats.tu)
local stats = KEYS[6]      -- hash: counters, window totals/bounds, the key's clock, flush mark

local mode = ARGV[1]                  -- "hit" | "test" | "peek" | "flush"
local now = tonumber(ARGV[2])         -- the caller's clock, ms
local cost = tonumber(ARGV[3])        -- units this operation spends
local lease_id = ARGV[4]              -- "" = take no lease
local lease_ttl = tonumber(ARGV[5])   -- ms a lease lives unless released
local concurrency = tonumber(ARGV[6]) -- lease slots, 0 = unlimited
local dirty_ttl = tonumber(ARGV[7])   -- ms a store stays marked touched without a flush
local window_args = {                 -- length_ms, bucket_ms, limit of each window
    {length = tonumber(ARGV[8]), bucket = tonumber(ARGV[9]), limit = tonumber(ARGV[10])},
    {length = tonumber(ARGV[11]), bucket = tonumber(ARGV[12]), limit = tonumber(ARGV[13])},
    {length = tonumber(ARGV[14]), bucket = tonumber(ARGV[15]), limit = tonumber(ARGV[16])},
}
local concurrency_wait = tonumber(ARGV[17]) -- longest wait, ms, suggested for a busy lease slot
local settled = tonumber(ARGV[18] or '0')   -- successes of earlier calls counted now (deferred)
local released = {unpack(ARGV, 19)}         -- leases of earlier calls given back now
-- The stats hash outlives the longest bucket hash (day + one bucket) by a wide margin.
local stats_ttl = 3 * window_args[3].length
--
-- A hit at ms t lies in the window ending at `now` iff t > now - length. Bucket j holds hits
-- at ms jb .. (j+1)b-1 and is counted whole while any of them lies in the window, so the count
-- never under-states the window (see limits.py).
--
-- Returns (decoded by reply.py, in this order): allowed, retry_after_ms, reason, used per
-- window (minute, hour, day), leases_in_use, throttled_until_ms, first_touch, denied,
-- denied_unflushed, last_request_ms, successes, failures, now_ms.

local NAMES = {'minute', 'hour', 'day'}
local FIELDS = {'clock', 'tu', 'hits', 'denied', 'denied_unflushed', 'last_request', 'success',
    'failure', 'dirty_until', 'exp', 't1', 't2', 't3', 'lo2', 'lo3', 'cur2', 'cur3', 'exp1'}
local st, changed = {}, {}
local raw = redis.call('HMGET', stats, unpack(FIELDS))
for i, name in ipairs(FIELDS) do st[name] = tonumber(raw[i] or '0') or 0 end
local function put(name, value)
    if st[name] ~= value then st[name], changed[name] = value, true end
end

-- Effective time never runs backwards for a key, whatever the callers' clock skew: the
-- guarantee's proof needs hits recorded in time order.
if st.clock > now then now = st.clock end

-- Milliseconds until the oldest live entries have freed `excess` units (refusals only).
local function wait_for(w, k, from, excess, a)
    local freed = 0
    if a.bucket == 1 then
        local offset = 0
        while true do
            local es = redis.call('LRANGE', k, offset, offset + 199)
            if #es == 0 then return a.length end
            for _, e in ipairs(es) do
                local sep = string.find(e, ':', 1, true)
                freed = freed + tonumber(string.sub(e, sep + 1))
                if freed >= excess then
                    return tonumber(string.sub(e, 1, sep - 1)) + a.length - now
                end
            end
            offset = offset + #es
        end
    end
    local i, cur = from, st['cur' .. w]
    while i <= cur do
        local idxs = {}
        for j = i, math.min(cur, i + 199) do idxs[#idxs + 1] = j end
        local costs = redis.call('HMGET', k, unpack(idxs))
        for n, c in ipairs(costs) do
            freed = freed + tonumber(c or '0')
            if freed >= excess then return (idxs[n] + 1) * a.bucket + a.length - 1 - now end
        end
        i = idxs[#idxs] + 1
    end
    return a.length
end

local wait, reason = 0, false
local function refuse(ms, why)
    if ms > wait or not reason then wait, reason = math.max(ms, wait), why end
end

local used = {}
for w = 1, 3 do
    local a, k = window_args[w], window_keys[w]
    local from = math.floor((now - a.length + 1) / a.bucket)  -- first live bucket
    local t = st['t' .. w]
    if a.bucket == 1 then
        -- Log window: drop the entries that left it (a gone list: every entry has left).
        while true do
            local head = redis.call('LRANGE', k, 0, 15)
            if #head == 0 then t = 0 break end
            local dead = 0
            for _, e in ipairs(head) do
                local sep = string.find(e, ':', 1, true)
                if tonumber(string.sub(e, 1, sep - 1)) >= from then break end
                dead, t = dead + 1, t - tonumber(string.sub(e, sep + 1))
            end
            if dead > 0 then redis.call('LTRIM', k, dead, -1) end
            if dead < #head then break end
        end
    else
        -- Bucket window: drop the buckets below `from` (all of them once the newest is).
        local lo, cur = st['lo' .. w], st['cur' .. w]
        if cur < from then
            if t ~= 0 then redis.call('DEL', k) end
            t = 0
        elseif lo < from then
            local idxs = {}
            local span = math.ceil(a.length / a.bucket) + 1
            for i = math.max(lo, from - span), from - 1 do idxs[#idxs + 1] = i end
            local costs = redis.call('HMGET', k, unpack(idxs))
            for _, c in ipairs(costs) do t = t - tonumber(c or '0') end
            redis.call('HDEL', k, unpack(idxs))
        end
        put('lo' .. w, from)
    end
    put('t' .. w, t)
    used[w] = t
    if cost > a.limit then
        refuse(a.length, 'cost_exceeds_limit:' .. NAMES[w])
    elseif t + cost > a.limit then
        refuse(wait_for(w, k, from, t + cost - a.limit, a), NAMES[w])
    end
end

if #released > 0 then redis.call('ZREM', leases, unpack(released)) end
local in_use = 0
-- Without a concurrency limit no lease is ever taken: nothing to count unless reporting.
if concurrency > 0 or mode == 'peek' or mode == 'flush' then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
    in_use = redis.call('ZCARD', leases)
    if concurrency > 0 and in_use >= concurrency and mode ~= 'peek' and mode ~= 'flush' then
        local first = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')
        -- A lease is usually released long before it expires: suggest a short wait, not the TTL.
        refuse(math.min(tonumber(first[2]) - now, concurrency_wait), 'concurrency')
    end
end

local blocked_until = st.tu
if blocked_until > now then refuse(blocked_until - now, 'throttled') end

local allowed = (not reason) and 1 or 0
if mode == 'peek' or mode == 'flush' then allowed = 0 end
local first_touch = 0
if mode == 'hit' then
    if allowed == 1 then
        -- A free operation (a token refresh) takes a lease but occupies no window.
        for w = 1, (cost > 0) and 3 or 0 do
            local a, k = window_args[w], window_keys[w]
            if a.bucket == 1 then
                redis.call('RPUSH', k, now .. ':' .. cost)
                -- The log must outlive its newest entry's stay in the window: refreshed when
                -- less than one window length of its last expiry is left (relative, so the
                -- callers' clock need not agree with the server's).
                if st['exp' .. w] < now + a.length then
                    redis.call('PEXPIRE', k, 2 * a.length)
                    put('exp' .. w, now + 2 * a.length)
                end
            else
                local idx = math.floor(now / a.bucket)
                redis.call('HINCRBY', k, idx, cost)
                -- A bucket's hash must outlive it: set when it opens (now >= idx * bucket), the
                -- expiry already covers every later hit in the same bucket.
                if idx > st['cur' .. w] then
                    redis.call('PEXPIRE', k, a.length + a.bucket)
                    put('cur' .. w, idx)
                end
            end
            used[w] = used[w] + cost
            put('t' .. w, used[w])
        end
        if lease_id ~= '' then
            redis.call('ZADD', leases, now + lease_ttl, lease_id)
            -- Effective time never decreases, so this lease is the last to expire.
            redis.call('PEXPIRE', leases, lease_ttl)
            in_use = in_use + 1
        end
        put('hits', st.hits + 1)
        put('last_request', now)
    else
        put('denied', st.denied + 1)
        put('denied_unflushed', st.denied_unflushed + 1)
    end
    -- The first touch since the last flush: the caller announces the store for the next one.
    if now >= st.dirty_until then
        first_touch = 1
        put('dirty_until', now + dirty_ttl)
    end
end
if settled > 0 then put('success', st.success + settled) end
put('clock', now)
local denied_unflushed = st.denied_unflushed
if mode == 'flush' then
    put('denied_unflushed', 0)
    put('dirty_until', 0)
end
if st.exp < now + 2 * window_args[3].length then
    put('exp', now + stats_ttl)
    changed.__expire = true
end
local pairs_out = {}
for name in pairs(changed) do
    if name ~= '__expire' then
        pairs_out[#pairs_out + 1] = name
        pairs_out[#pairs_out + 1] = st[name]
    end
end
if #pairs_out > 0 then redis.call('HSET', stats, unpack(pairs_out)) end
if changed.__expire then redis.call('PEXPIRE', stats, stats_ttl) end

return {allowed, wait, reason or '', used[1], used[2], used[3], in_use, blocked_until, first_touch,
        st.denied, denied_unflushed, st.last_request, st.success, st.failure, now}
