-- A policy reload, for some counter keys of one counter whose window or max changed: each key
-- that is not idle keeps its admissions under the longest window and largest max of what it
-- served and the new limit; an idle key is deleted (it remembers nothing). See acquire.lua for
-- the 'k:KWINDOW:KMAX' member that records a kept window and max when they differ from the
-- counter's limit.
--
-- KEYS[1]  the store's high-water mark (ticks)
-- KEYS[2…] counter keys of this counter
-- ARGV[1]  'server' (read TIME, ticks are microseconds) or 'caller' (ticks are ARGV[2])
-- ARGV[2]  the caller's now, in ticks (used with 'caller' only)
-- ARGV[3]  ticks per millisecond for PEXPIRE, or '0' for no expiry
-- ARGV[4], ARGV[5]  the counter's old window (ticks) and max: what a key without the member
--          served
-- ARGV[6], ARGV[7]  its new window and max
--
-- Answer: the number of keys kept.

local function fmt(n)
  return string.format('%d', n)
end

local asked
if ARGV[1] == 'server' then
  local t = redis.call('TIME')
  asked = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  asked = tonumber(ARGV[2])
end
local now = asked
local mark = redis.call('GET', KEYS[1])
if mark then
  mark = tonumber(mark)
  if mark > now then
    now = mark
  end
end
if (not mark) or now > mark then
  redis.call('SET', KEYS[1], fmt(now))
end

local per_ms = tonumber(ARGV[3])
local old_w, old_m = tonumber(ARGV[4]), tonumber(ARGV[5])
local new_w, new_m = tonumber(ARGV[6]), tonumber(ARGV[7])
local kept = 0
for i = 2, #KEYS do
  local key = KEYS[i]
  local kw, km = old_w, old_m
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[1] and first[2] == '-inf' then
    local w, m = string.match(first[1], '^k:(%d+):(%d+)$')
    if w then
      kw, km = tonumber(w), tonumber(m)
    end
  end
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  local newest = nil
  if last[1] and last[2] ~= '-inf' then
    newest = tonumber(last[2])
  end
  if newest == nil or newest + kw <= now then
    redis.call('DEL', key)
  else
    kw, km = math.max(kw, new_w), math.max(km, new_m)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '-inf')
    if kw ~= new_w or km ~= new_m then
      redis.call('ZADD', key, '-inf', 'k:' .. fmt(kw) .. ':' .. fmt(km))
    end
    if per_ms > 0 then
      redis.call('PEXPIRE', key, fmt(math.ceil((newest + kw - asked) / per_ms) + 1))
    end
    kept = kept + 1
  end
end
return kept
