-- One guarded call's outcome, atomic and in one round trip: the limiter's lease released and
-- the outcome counted, then the circuit's record. Runs the release and circuit_breaker scripts,
-- included as functions.
--
-- KEYS: the circuit's 4 keys, then the limiter's leases and stats (one store's slot).
-- ARGV: the count of circuit arguments, the circuit's (op success|failure|ignored), then
-- release's (lease id, outcome).
-- Returns {circuit reply, leases still in use}.
local n_circuit = tonumber(ARGV[1])
local circuit_args = {unpack(ARGV, 2, 1 + n_circuit)}
local release_args = {unpack(ARGV, 2 + n_circuit)}
local in_use = release({KEYS[5], KEYS[6]}, release_args)
return {circuit_breaker({KEYS[1], KEYS[2], KEYS[3], KEYS[4]}, circuit_args), in_use}
