-- Outcomes of guarded calls, atomic and in one round trip: the limiter's leases given back and
-- the outcomes counted, then the circuit's record. Used for an outcome that cannot wait (a
-- failure, an ignored call, a half-open trial) and to flush deferred successes (circuit op
-- 'settle'); the earlier deferred successes of the scope ride along (circuit ARGV[22]).
--
-- KEYS: the circuit's 4 keys, then the limiter's leases and stats (one store's slot).
-- ARGV: the count of circuit arguments, the circuit's, then the limiter's part: deferred
-- successes, this call's outcome ('success' | 'failure' | ''), the lease ids to give back.
-- Returns {circuit reply}.
local n_circuit = tonumber(ARGV[1])
local circuit_args = {unpack(ARGV, 2, 1 + n_circuit)}
local settled = tonumber(ARGV[2 + n_circuit])
local outcome = ARGV[3 + n_circuit]
local leases = {unpack(ARGV, 4 + n_circuit)}
if #leases > 0 then redis.call('ZREM', KEYS[5], unpack(leases)) end
if settled > 0 then redis.call('HINCRBY', KEYS[6], 'success', settled) end
if outcome ~= '' then redis.call('HINCRBY', KEYS[6], outcome, 1) end
return {circuit_breaker({KEYS[1], KEYS[2], KEYS[3], KEYS[4]}, circuit_args)}
