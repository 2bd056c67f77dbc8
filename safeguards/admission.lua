-- One guarded call's admission, atomic and in one round trip: the circuit's decision, then
-- (if it allows) the limiter's, and if the limiter refuses, the half-open trial the circuit
-- just reserved given back. Earlier successful calls of the same scope whose outcome the
-- caller deferred are counted first, in both safeguards (the circuit's ARGV[22], the limiter's
-- ARGV[18..]). Runs the circuit_breaker and check scripts, included as functions.
--
-- KEYS: the circuit's 4 keys, then the limiter's 6 (one store's, so one Cluster slot).
-- ARGV: mode ('hit' consumes, 'test' only reads), the count of circuit arguments, the
-- circuit's arguments (op 'allow' or 'peek'), then the limiter's.
-- Returns {circuit reply, limiter reply or {} when the circuit refused, give-back reply or {}}.
local mode = ARGV[1]
local n_circuit = tonumber(ARGV[2])
local circuit_keys = {KEYS[1], KEYS[2], KEYS[3], KEYS[4]}
local limiter_keys = {unpack(KEYS, 5, 10)}
local circuit_args = {unpack(ARGV, 3, 2 + n_circuit)}
local limiter_args = {unpack(ARGV, 3 + n_circuit)}

local c = circuit_breaker(circuit_keys, circuit_args)
if mode == 'hit' and c[1] == 0 then
    -- Refused before the limiter ran: the deferred outcomes are still given to it.
    local settled = tonumber(limiter_args[18] or '0')
    local leases = {unpack(limiter_args, 19)}
    if #leases > 0 then redis.call('ZREM', limiter_keys[4], unpack(leases)) end
    if settled > 0 then redis.call('HINCRBY', limiter_keys[6], 'success', settled) end
    return {c, {}, {}}
end
local r = check(limiter_keys, limiter_args)
local token = c[3]
if mode == 'hit' and r[1] == 0 and token ~= '' then
    -- This call never happens: its trial is given back as an ignored outcome (the deferred
    -- successes were counted by the first run).
    circuit_args[1] = 'ignored'
    circuit_args[16] = token
    circuit_args[22] = '0'
    return {c, r, circuit_breaker(circuit_keys, circuit_args)}
end
return {c, r, {}}
