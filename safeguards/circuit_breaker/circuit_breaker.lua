-- One circuit's every decision, atomic across all workers and hosts (one round trip each).
-- Every input is bound to a name here, at the top; nothing below reads KEYS or ARGV.
-- Times are epoch seconds (floats).
--
-- The state hash is read once (HMGET of the fields the hot path needs) and written once (one
-- HSET of the fields that changed): a decision in a closed circuit is 1 command, an outcome 2.
-- A count-based window is a string of '0'/'1' (newest last) in the hash's 'count_window'.
local h = KEYS[1]        -- state hash: state, counters, times, window, identity, dirty flag
local win = KEYS[2]      -- time-based sliding window (zset); unused by a count-based window
local wfail = KEYS[3]    -- failures of a time-based window (zset)
local trials = KEYS[4]   -- half-open trial reservations (zset, score = expiry)

local op = ARGV[1]      -- allow|success|failure|ignored|reset|snapshot|peek|settle (settled only)
local now = tonumber(ARGV[2])               -- the caller's clock
local rate_threshold = tonumber(ARGV[3])    -- failure-rate threshold, %; 0 = off
local window_type = ARGV[4]                 -- count | time
local window_size = tonumber(ARGV[5])       -- calls, or seconds
local min_calls = tonumber(ARGV[6])         -- calls before the failure rate counts
local consecutive_threshold = tonumber(ARGV[7]) -- consecutive failures that trip; 0 = off
local base_wait = tonumber(ARGV[8])         -- first open wait, s
local multiplier = tonumber(ARGV[9])        -- open-wait growth per repeated trip
local max_wait = tonumber(ARGV[10])         -- longest open wait, s
local permitted = tonumber(ARGV[11])        -- trial calls permitted in half-open
local to_close = tonumber(ARGV[12])         -- trial successes that close the circuit
local trial_timeout = tonumber(ARGV[13])    -- s a trial reservation lives
local reset_after = tonumber(ARGV[14])      -- s closed that start the wait growth over
local ttl = tonumber(ARGV[15])              -- s an untouched circuit's keys live
local token = ARGV[16]                      -- the trial token being settled; '' = none
local reason = ARGV[17]                     -- the failure's reason; '' = none
local store_id = ARGV[18]                   -- '' for a business-wide circuit
local business_id = ARGV[19]                -- '' when unknown
local circuit_name = ARGV[20]
local brief = ARGV[21] == '1'               -- reply without the hash unless a transition
-- Successes of earlier non-trial calls, deferred by their process and counted now, before op.
local settled = tonumber(ARGV[22] or '0')

-- Returns (decoded by states.parse_reply): allowed, retry_after_s, trial_token,
-- previous_state ('' = no transition), window_calls, window_failures, then the state
-- hash's field/value pairs ('state' first; only that pair when brief and no transition).

-- Fast path, before any function is defined (each would be a closure made per run): a
-- closed circuit with a count window asked to allow a call and/or count deferred successes.
-- Does exactly what the general path below does in that case; hands over to it (having
-- written nothing) when a success would complete the minimum calls at a failure rate that
-- trips the circuit.
if (op == 'allow' or op == 'settle') and window_type == 'count' and brief then
  local v = redis.call('HMGET', h, 'state', 'count_window', 'count_window_failures',
    'total_calls', 'success_count', 'circuit_name', 'dirty', 'touched_at')
  if not v[1] or v[1] == 'closed' then
    local window = v[2] or ''
    local failures = v[2] and tonumber(v[3] or '0') or 0
    local fits = true
    for _ = 1, settled do
      window = window .. '0'
      while #window > window_size do  -- a loop: the configured size may have shrunk
        if string.sub(window, 1, 1) == '1' then failures = failures - 1 end
        window = string.sub(window, 2)
      end
      if rate_threshold > 0 and #window >= min_calls
          and failures * 100 >= rate_threshold * #window then
        fits = false
        break
      end
    end
    if fits then
      if settled > 0 then
        local out = {'total_calls', tonumber(v[4] or '0') + settled,
          'success_count', tonumber(v[5] or '0') + settled, 'last_success_at', now,
          'consecutive_failures', 0, 'count_window', window,
          'count_window_failures', failures}
        if v[6] ~= circuit_name then
          for _, x in ipairs({'store_id', store_id, 'business_id', business_id,
              'circuit_name', circuit_name}) do out[#out + 1] = x end
        end
        if v[7] ~= '1' then out[#out + 1] = 'dirty'; out[#out + 1] = 1 end
        local touched = tonumber(v[8] or '0')
        local refresh = now - touched >= 3600 or now < touched
        if refresh then out[#out + 1] = 'touched_at'; out[#out + 1] = now end
        redis.call('HSET', h, unpack(out))
        if refresh then redis.call('EXPIRE', h, ttl) end
      end
      local allowed = op == 'allow' and 1 or 0
      return {allowed, '0', '', '', #window, failures, 'state', 'closed'}
    end
  end
end

local HOT = {'state', 'consecutive_failures', 'count_window', 'count_window_failures',
  'total_calls', 'success_count', 'dirty', 'touched_at', 'circuit_name', 'next_attempt_at',
  'half_open_successes'}
local f, changed = {}, {}
local got = redis.call('HMGET', h, unpack(HOT))
for i, name in ipairs(HOT) do f[name] = got[i] end  -- false when absent
-- A hash from before the window moved into it (a list then) starts its window empty.
if window_type ~= 'time' and not f.count_window then f.count_window_failures = '0' end
local refresh_expiry = false

local function get(field)  -- a field's value (read once), false when absent
  if f[field] == nil then f[field] = redis.call('HGET', h, field) end
  return f[field]
end
local function num(field) return tonumber(get(field) or '0') or 0 end
local function put(field, value) f[field], changed[field] = value, true end
local function incr(field, n) local v = num(field) + n; put(field, v); return v end

local state = get('state') or 'closed'
local previous = ''
local allowed, retry_after, granted = 0, 0, ''
local window = get('count_window') or ''

local function window_counts()
  if window_type == 'time' then
    redis.call('ZREMRANGEBYSCORE', win, '-inf', now - window_size)
    redis.call('ZREMRANGEBYSCORE', wfail, '-inf', now - window_size)
    return redis.call('ZCARD', win), redis.call('ZCARD', wfail)
  end
  return #window, num('count_window_failures')
end

local function window_push(failed)
  if window_type == 'time' then
    local id = incr('window_seq', 1)
    redis.call('ZADD', win, now, id)
    redis.call('EXPIRE', win, ttl)
    if failed then
      redis.call('ZADD', wfail, now, id)
      redis.call('EXPIRE', wfail, ttl)
    end
    return
  end
  window = window .. (failed and '1' or '0')
  local failures = num('count_window_failures') + (failed and 1 or 0)
  -- Trims to the configured size, which may have shrunk since the last call.
  if #window > window_size then
    local _, dropped = string.gsub(string.sub(window, 1, #window - window_size), '1', '')
    failures = failures - dropped
    window = string.sub(window, -window_size)
  end
  put('count_window', window)
  put('count_window_failures', failures)
end

local function set_state(new_state)
  if previous == '' then previous = state end
  state = new_state
  put('state', new_state)
  put('state_changed_at', now)
end

local function trip()
  local streak = num('open_streak')
  local closed_at = tonumber(get('closed_at') or '')
  -- Waits grow only while the circuit flaps; a long healthy spell starts them over.
  if state == 'closed' and closed_at and now - closed_at >= reset_after then streak = 0 end
  streak = streak + 1
  local wait = math.min(base_wait * multiplier ^ (streak - 1), max_wait)
  put('open_streak', streak)
  put('opened_at', now)
  put('next_attempt_at', now + wait)
  put('half_open_successes', 0)
  incr('trip_count', 1)
  redis.call('DEL', trials)
  set_state('open')
end

local function clear_window()
  redis.call('DEL', trials, win, wfail)
  window = ''
  put('count_window', '')
  put('count_window_failures', 0)
end

local function close()
  clear_window()
  put('consecutive_failures', 0)
  put('half_open_successes', 0)
  put('closed_at', now)
  put('next_attempt_at', '')
  set_state('closed')
end

local function live_trials()
  redis.call('ZREMRANGEBYSCORE', trials, '-inf', now)
  return redis.call('ZCARD', trials)
end

local function allow()
  if state == 'open' then
    local next_at = num('next_attempt_at')
    if now < next_at then
      retry_after = next_at - now
      incr('not_permitted_calls', 1)
      return
    end
    redis.call('DEL', trials)
    put('half_open_successes', 0)
    put('half_open_calls', 0)
    set_state('half_open')
  end
  if state == 'half_open' then
    if live_trials() + num('half_open_successes') >= permitted then
      -- Trials report back well before their reservations expire; poll no slower than that.
      local first = redis.call('ZRANGE', trials, 0, 0, 'WITHSCORES')
      retry_after = first[2] and math.min(tonumber(first[2]) - now, base_wait) or base_wait
      incr('not_permitted_calls', 1)
      return
    end
    granted = tostring(incr('trial_seq', 1))
    redis.call('ZADD', trials, now + trial_timeout, granted)
    redis.call('EXPIRE', trials, ttl)
    incr('half_open_calls', 1)
  end
  allowed = 1
end

local function rate_exceeded()
  local calls, failures = window_counts()
  return rate_threshold > 0 and calls >= min_calls and failures * 100 >= rate_threshold * calls
end

local function take_trial()
  if state ~= 'half_open' then return false end
  if token ~= '' then return redis.call('ZREM', trials, token) == 1 end
  -- Without a token, the oldest reservation stands for this outcome.
  return #redis.call('ZPOPMIN', trials) > 0
end

-- One success of a call that held no trial: in a closed circuit it fills the window (and, as
-- in resilience4j, can complete the minimum number of calls); otherwise it is only counted.
local function count_success()
  incr('total_calls', 1)
  incr('success_count', 1)
  put('last_success_at', now)
  if state == 'closed' then
    put('consecutive_failures', 0)
    window_push(false)
    if rate_exceeded() then trip() end
  end
end

local function record()
  local trial = take_trial()
  if op == 'success' and not trial then return count_success() end
  incr('total_calls', 1)
  if op == 'ignored' then
    incr('ignored_calls', 1)
  elseif op == 'success' then
    incr('success_count', 1)
    put('last_success_at', now)
    if incr('half_open_successes', 1) >= to_close then close() end
  else
    incr('total_failures', 1)
    put('last_failure_at', now)
    put('last_failure_reason', reason)
    local streak = incr('consecutive_failures', 1)
    if state == 'closed' then
      window_push(true)
      local by_count = consecutive_threshold > 0 and streak >= consecutive_threshold
      if by_count or rate_exceeded() then trip() end
    elseif trial then
      trip()
    end
  end
end

local function reset()
  if state ~= 'closed' then close() end
  clear_window()
  put('open_streak', 0)
  put('consecutive_failures', 0)
end

-- Marks the circuit for the mirror; the keys' expiry is refreshed at most hourly (it is a
-- week), so a busy circuit does not pay an EXPIRE per call.
local function touch()
  if get('circuit_name') ~= circuit_name then
    put('store_id', store_id)
    put('business_id', business_id)
    put('circuit_name', circuit_name)
  end
  if get('dirty') ~= '1' then put('dirty', 1) end
  if now - num('touched_at') >= 3600 or now < num('touched_at') then
    put('touched_at', now)
    refresh_expiry = true
  end
end

for _ = 1, settled do count_success() end
if op == 'allow' then
  allow()
  if previous ~= '' or allowed == 0 or granted ~= '' then touch() end
elseif op == 'reset' then
  reset()
  touch()
elseif op == 'snapshot' then
  if redis.call('EXISTS', h) == 1 then put('dirty', 0) end
elseif op ~= 'peek' and op ~= 'settle' then
  record()
  touch()
end
if settled > 0 then touch() end

local out = {}
for field in pairs(changed) do
  out[#out + 1] = field
  out[#out + 1] = f[field]
end
if #out > 0 then redis.call('HSET', h, unpack(out)) end
if refresh_expiry then redis.call('EXPIRE', h, ttl) end

local calls, failures = window_counts()
local reply = {allowed, tostring(retry_after), granted, previous, calls, failures, 'state', state}
-- The hot path (a decision, an outcome) needs no counters back unless the state changed.
if not brief or previous ~= '' then
  for _, v in ipairs(redis.call('HGETALL', h)) do reply[#reply + 1] = v end
end
return reply
