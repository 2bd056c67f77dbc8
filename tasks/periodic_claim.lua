-- One run per period of a periodic job, whichever scheduler process asks. One atomic decision.
-- KEYS[1] the job's last claimed run, ms since the epoch
-- ARGV[1] verb: claim | release
-- claim:   ARGV[2] now ms, ARGV[3] minimum gap between runs ms, ARGV[4] key ttl ms
-- release: ARGV[2] the ms a claim returned (only that claim is undone)
local last_key, verb = KEYS[1], ARGV[1]

if verb == 'claim' then
  local now_ms, min_gap_ms, ttl_ms = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local raw = redis.call('GET', last_key)
  local last_ms = raw and tonumber(raw)
  -- Keyed on the last run, not on floor(now / period): two schedulers whose phases straddle a
  -- period boundary would each own a different bucket. A claim "from the future" (a clock
  -- ahead of ours) also counts as recent; the ttl bounds how long a bad clock can block.
  if last_ms and now_ms - last_ms < min_gap_ms then
    return 0
  end
  redis.call('SET', last_key, ARGV[2], 'PX', ttl_ms)
  return 1
elseif verb == 'release' then
  -- The publish after a claim failed: let another scheduler run this period after all.
  if redis.call('GET', last_key) == ARGV[2] then
    redis.call('DEL', last_key)
    return 1
  end
  return 0
end
return redis.error_reply('unknown verb ' .. tostring(verb))
