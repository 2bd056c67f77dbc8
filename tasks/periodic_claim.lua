-- One run per period of a periodic job, whichever scheduler process asks. One atomic decision.
--
-- Returns 1 when the claim (or the release) took effect, else 0.

local last_key = KEYS[1]              -- the job's last claimed run, ms since the epoch
local verb = ARGV[1]                  -- claim | release
-- claim: the run being claimed (now); release: the ms a claim returned (only that claim is
-- undone). Kept as the caller's text: it is stored and compared as sent.
local run_ms = ARGV[2]
local min_gap_ms = tonumber(ARGV[3])  -- claim only: minimum gap between runs, ms
local ttl_ms = tonumber(ARGV[4])      -- claim only: the key's lifetime, ms

if verb == 'claim' then
  local now_ms = tonumber(run_ms)
  local raw = redis.call('GET', last_key)
  local last_ms = raw and tonumber(raw)
  -- Keyed on the last run, not on floor(now / period): two schedulers whose phases straddle a
  -- period boundary would each own a different bucket. A claim "from the future" (a clock
  -- ahead of ours) also counts as recent; the ttl bounds how long a bad clock can block.
  if last_ms and now_ms - last_ms < min_gap_ms then
    return 0
  end
  redis.call('SET', last_key, run_ms, 'PX', ttl_ms)
  return 1
elseif verb == 'release' then
  -- The publish after a claim failed: let another scheduler run this period after all.
  if redis.call('GET', last_key) == run_ms then
    redis.call('DEL', last_key)
    return 1
  end
  return 0
end
return redis.error_reply('unknown verb ' .. tostring(verb))
