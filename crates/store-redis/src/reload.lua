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
-- ARGV[8]  '1' when the counter's `counts` changed (calls ↔ errors): every key starts afresh
--
-- Answer: the number of keys kept.

-- Runs after common.lua (fmt, keep_of, newest_of, `asked` and `now`).

local per_ms = tonumber(ARGV[3])
local old_w, old_m = tonumber(ARGV[4]), tonumber(ARGV[5])
local new_w, new_m = tonumber(ARGV[6]), tonumber(ARGV[7])
local forget = ARGV[8] == '1'
local kept = 0
for i = 2, #KEYS do
  local key = KEYS[i]
  local kw, km = keep_of(key, old_w, old_m)
  local newest = newest_of(key)
  if forget or newest == nil or newest + kw <= now then
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
