-- Give back a concurrency lease and count the call's outcome.
--
-- KEYS[1] leases sorted set; KEYS[2] stats hash
-- ARGV    lease_id ("" = none), outcome ("success" | "failure" | "")

if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
if ARGV[2] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[2], 1) end
return redis.call('ZCARD', KEYS[1])
