-- What the store's scripts share, run before each of them (lib.rs joins this file and the
-- script): the `fmt` of integer ticks, what a key keeps, its newest admission, and the store's
-- clock. Both scripts take KEYS[1] (the store's high-water mark) and ARGV[1], ARGV[2] (whose
-- clock, and the caller's now) alike; after this prelude `asked` is the instant asked about and
-- `now` the instant the store evaluates at (never before its mark).

local function fmt(n)
  return string.format('%d', n)
end

-- The key's kept window and max under a limit of window w and max m, and whether it holds the
-- member that records them.
local function keep_of(key, w, m)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[1] and first[2] == '-inf' then
    local kw, km = string.match(first[1], '^k:(%d+):(%d+)$')
    if kw then
      return math.max(tonumber(kw), w), math.max(tonumber(km), m), true
    end
  end
  return w, m, false
end

-- The key's newest admission, or nil when it holds none.
local function newest_of(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[1] and last[2] ~= '-inf' then
    return tonumber(last[2])
  end
  return nil
end

local asked
if ARGV[1] == 'server' then
  local t = redis.call('TIME')
  asked = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  asked = tonumber(ARGV[2])
end

-- Time never goes backwards inside the store: an earlier instant is evaluated at the mark.
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
