-- One all-or-nothing acquire over several counter keys: MemoryStore's semantics, atomically
-- (Redis runs a script to the end before serving anything else), on the server's clock.
--
-- KEYS[1]  the store's high-water mark (the latest instant it has seen, in ticks)
-- KEYS[2]  the store's sequence (makes sorted-set members unique)
-- KEYS[3…] one counter key per limit, in the caller's order (a key may repeat)
-- ARGV[1]  'server' (read TIME, ticks are microseconds) or 'caller' (ticks are ARGV[2])
-- ARGV[2]  the caller's now, in ticks (used with 'caller' only)
-- ARGV[3]  '1' for a dry run: the same answer, nothing taken; 'r' to record an event (an
--          upstream error) on every key whatever it holds: taken unconditionally, and the
--          answer's counts and oldest instants are read after taking
-- ARGV[4]  ticks per millisecond for PEXPIRE, or '0' for no expiry (the caller's clock is
--          virtual, so real-time expiry could forget a key that is not idle in its time)
-- ARGV[5…] per limit: window (ticks), max, and '1' if this limit takes (the key's first
--          occurrence among the limits that count calls, or for 'r' among all: a key named
--          twice is taken once; a limit that counts errors is judged, never taken, by an
--          acquire)
--
-- Answer: {admitted (0/1), asked, now, then per limit: count in window, oldest + window (or
-- -1), retry instant (-1 if this limit admits, -2 for "never": max is 0)}. Every number is an
-- integer tick below 2^53, exact in Lua's doubles; string.format('%d') writes them exactly.
--
-- What a key remembers (tollgate_policy::limiter, "What a key remembers"): its newest KMAX
-- admissions since it was last idle, whatever their age; it is idle once its newest admission
-- is KWINDOW old. KWINDOW and KMAX are the longest window and largest max it served: the
-- limit's own, unless a reload left more, which the key then holds as one member
-- 'k:KWINDOW:KMAX' scored -inf (below every instant, so no count or range of instants sees
-- it). A key that never saw a reload has no such member.
--
-- Runs after common.lua (fmt, keep_of, newest_of, `asked` and `now`).

local dry = ARGV[3] == '1'
local record = ARGV[3] == 'r'
local per_ms = tonumber(ARGV[4])
local n = #KEYS - 2
local out = {0, asked, now}
local admitted = true
local idle = {}
local keeps = {}

-- Judge every limit before taking anything.
for i = 1, n do
  local key = KEYS[i + 2]
  local base = 5 + (i - 1) * 3
  local w = tonumber(ARGV[base])
  local max = tonumber(ARGV[base + 1])
  local kw, km = keep_of(key, w, max)
  local newest = newest_of(key)
  -- An idle key remembers nothing (and its first take starts it afresh).
  local live = newest ~= nil and newest + kw > now
  idle[i] = not live
  keeps[i] = {kw, km}
  local count = 0
  local oldest = -1
  -- In the window: t + w > now, i.e. t > now - w.
  local lo = '(' .. fmt(now - w)
  if live then
    count = redis.call('ZCOUNT', key, lo, '+inf')
  end
  if count > 0 then
    local first = redis.call('ZRANGEBYSCORE', key, lo, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    oldest = tonumber(first[2]) + w
  end
  local retry = -1
  if max == 0 then
    retry = -2
    admitted = false
  elseif count >= max then
    -- The call is admitted again when the max-th newest admission leaves the window, or when
    -- the whole key goes idle if that is sooner.
    local len = redis.call('ZCARD', key)
    local at = redis.call('ZRANGE', key, len - max, len - max, 'WITHSCORES')
    retry = math.min(tonumber(at[2]) + w, newest + kw)
    admitted = false
  end
  out[#out + 1] = count
  out[#out + 1] = oldest
  out[#out + 1] = retry
end

if (admitted or record) and not dry then
  for i = 1, n do
    local base = 5 + (i - 1) * 3
    if ARGV[base + 2] == '1' then
      local key = KEYS[i + 2]
      local w = tonumber(ARGV[base])
      local max = tonumber(ARGV[base + 1])
      local kw, km = keeps[i][1], keeps[i][2]
      if idle[i] then
        -- Idle: it starts afresh under this limit.
        redis.call('DEL', key)
        kw, km = w, max
      else
        redis.call('ZREMRANGEBYSCORE', key, '-inf', '-inf')
      end
      -- Add now and keep the newest km, whatever their age: a reload that lengthens the
      -- window still counts them.
      local seq = redis.call('INCR', KEYS[2])
      redis.call('ZADD', key, fmt(now), fmt(now) .. ':' .. fmt(seq))
      local len = redis.call('ZCARD', key)
      if len > km then
        redis.call('ZREMRANGEBYRANK', key, 0, len - km - 1)
      end
      if kw ~= w or km ~= max then
        redis.call('ZADD', key, '-inf', 'k:' .. fmt(kw) .. ':' .. fmt(km))
      end
      if per_ms > 0 then
        -- Idle once real time reaches now + kw.
        redis.call('PEXPIRE', key, fmt(math.ceil((now - asked + kw) / per_ms) + 1))
      end
    end
  end
end

if record then
  -- What each counter reads after recording.
  admitted = true
  for i = 1, n do
    local key = KEYS[i + 2]
    local w = tonumber(ARGV[5 + (i - 1) * 3])
    local lo = '(' .. fmt(now - w)
    local count = redis.call('ZCOUNT', key, lo, '+inf')
    local oldest = -1
    if count > 0 then
      local first = redis.call('ZRANGEBYSCORE', key, lo, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
      oldest = tonumber(first[2]) + w
    end
    out[3 + (i - 1) * 3 + 1] = count
    out[3 + (i - 1) * 3 + 2] = oldest
    out[3 + (i - 1) * 3 + 3] = -1
  end
end

if admitted then
  out[1] = 1
end
return out
