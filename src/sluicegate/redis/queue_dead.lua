-- Move pending entries to the dead stream (acknowledged, deleted, counted as
-- dead), with a reason: an entry whose payload could not be read, say.
-- KEYS[1] the stream, KEYS[2] the books, KEYS[3] the dead stream.
-- ARGV[1] the group, ARGV[2] the reason, ARGV[3..] ids.
-- Returns how many were moved now (one acknowledged already is not).
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local entry = redis.call('XRANGE', KEYS[1], id, id)
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 1 then
    local fields = {'id', id, 'reason', ARGV[2]}
    if entry[1] then
      for _, value in ipairs(entry[1][2]) do
        table.insert(fields, value)
      end
    end
    redis.call('XADD', KEYS[3], '*', unpack(fields))
    redis.call('XDEL', KEYS[1], id)
    n = n + 1
  end
end
if n > 0 then
  redis.call('HINCRBY', KEYS[2], 'dead', n)
end
return n
