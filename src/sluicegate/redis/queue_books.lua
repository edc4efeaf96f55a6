-- The global books, read at once.
-- KEYS[1] the stream, KEYS[2] the books, KEYS[3] the dead stream.
-- ARGV[1] the group.
-- Returns {enqueued, acked, dead, pending (delivered, not acknowledged),
-- stream length, dead stream length}.
local books = redis.call('HMGET', KEYS[2], 'enqueued', 'acked', 'dead')
local pending = 0
local summary = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if type(summary) == 'table' and summary[1] then
  pending = summary[1]
end
return {tonumber(books[1]) or 0, tonumber(books[2]) or 0, tonumber(books[3]) or 0,
  pending, redis.call('XLEN', KEYS[1]), redis.call('XLEN', KEYS[3])}
