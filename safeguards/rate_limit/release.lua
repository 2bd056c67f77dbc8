-- Give back a concurrency lease and count the call's outcome.
--
-- Returns nothing (the guard never needed the count back).

local leases = KEYS[1]     -- sorted set {lease_id -> expiry_ms}
local stats = KEYS[2]      -- hash of counters
local lease_id = ARGV[1]   -- "" = none
local outcome = ARGV[2]    -- "success" | "failure" | "" (not known)

if lease_id ~= '' then redis.call('ZREM', leases, lease_id) end
if outcome ~= '' then redis.call('HINCRBY', stats, outcome, 1) end
