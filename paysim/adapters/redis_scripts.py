"""The Redis store's Lua: every read and write, batched, each one atomic.

Why one script for everything: coredis costs about 200 µs of client CPU per
command, so one command per store call would halve paysim's throughput.
``redis_batch`` sends whatever store calls are waiting as *one* EVALSHA of
``OPS``, which runs them in order; each op is atomic (a script runs alone on
the server), so a compare-and-set can never interleave with another replica's.

Keys (``P`` is ``{prefix}``: the braces are a cluster hash tag, so every key
lives in one slot and the scripts may touch any of them):

=================  ==========================================================
``P:p:<id>``       the payment: ``<version>:<payment_codec bytes>``; expires
                   RETENTION_MS after it settles
``P:u:<user>``     the user's index: a sorted set, all scores 0, members
                   ``<created_at ns, 20 digits>|<id>`` (so lexical order is
                   ``listing.sort_key`` order)
``P:r``            retention queue: score = drop time (wall seconds), member
                   ``<index member>|<user>``
``P:i:<scope>``    an idempotency key: ``<expires at>|<record bytes>``, with its
                   TTL as the key's expiry
``P:d:<replica>``  the replica's due outcomes: score = due time (wall seconds)
``P:d:_``          due outcomes of replicas that left or vanished: any replica
                   claims them
``P:o``            hash: payment id -> the replica (or ``_``) holding it due
``P:ob:<replica>`` hash: event id -> status change the replica is delivering
``P:ob:_``         list of ``<event id>|<change>`` whose replica left or vanished
``P:replicas``     sorted set: replica -> lease end (ms, the server's clock)
=================  ==========================================================

Lease times use the server's ``TIME``, so the replicas' clocks never have to
agree; due and retention times are the payments' own wall-clock stamps.
"""

from __future__ import annotations

# ARGV[1] = key prefix ("{paysim}"), ARGV[2] = this replica's id, then ops:
# an op code and its fixed number of arguments. Returns one result per op.
OPS = r"""
local P = ARGV[1]
local me = ARGV[2]
local out = {}
local i = 3
local n = #ARGV

local function split_version(value)
  local sep = string.find(value, ':', 1, true)
  return string.sub(value, 1, sep - 1)
end

local function unschedule(id)
  local owner = redis.call('HGET', P .. ':o', id)
  if owner then
    redis.call('ZREM', P .. ':d:' .. owner, id)
    redis.call('HDEL', P .. ':o', id)
  end
end

while i <= n do
  local op = ARGV[i]
  if op == 'G' then                       -- get: id
    table.insert(out, redis.call('GET', P .. ':p:' .. ARGV[i + 1]))
    i = i + 2
  elseif op == 'I' then                   -- insert: id, value, index member, user, due
    local id = ARGV[i + 1]
    redis.call('SET', P .. ':p:' .. id, ARGV[i + 2])
    redis.call('ZADD', P .. ':u:' .. ARGV[i + 4], 0, ARGV[i + 3])
    if ARGV[i + 5] ~= '' then
      redis.call('ZADD', P .. ':d:' .. me, ARGV[i + 5], id)
      redis.call('HSET', P .. ':o', id, me)
    end
    table.insert(out, 1)
    i = i + 6
  elseif op == 'C' then
    -- compare-and-set: id, expected version, value, due or '', drop at or '',
    -- retention member, retention ms, event id or '', change or ''
    local key = P .. ':p:' .. ARGV[i + 1]
    local current = redis.call('GET', key)
    if current and split_version(current) == ARGV[i + 2] then
      local id = ARGV[i + 1]
      redis.call('SET', key, ARGV[i + 3])
      if ARGV[i + 4] ~= '' then
        local owner = redis.call('HGET', P .. ':o', id)
        if owner then redis.call('ZADD', P .. ':d:' .. owner, ARGV[i + 4], id) end
      else
        unschedule(id)
      end
      if ARGV[i + 5] ~= '' then
        redis.call('ZADD', P .. ':r', ARGV[i + 5], ARGV[i + 6])
        redis.call('PEXPIRE', key, ARGV[i + 7])
      end
      if ARGV[i + 8] ~= '' then
        redis.call('HSET', P .. ':ob:' .. me, ARGV[i + 8], ARGV[i + 9])
      end
      table.insert(out, 1)
    else
      table.insert(out, 0)
    end
    i = i + 10
  elseif op == 'K' then                   -- claim idempotency: key, now, value, ttl ms
    local key = P .. ':i:' .. ARGV[i + 1]
    local existing = redis.call('GET', key)
    local live = false
    if existing then
      local sep = string.find(existing, '|', 1, true)
      live = tonumber(string.sub(existing, 1, sep - 1)) > tonumber(ARGV[i + 2])
    end
    if live then
      table.insert(out, existing)
    else
      redis.call('SET', key, ARGV[i + 3], 'PX', ARGV[i + 4])
      table.insert(out, false)
    end
    i = i + 5
  elseif op == 'R' then                   -- release idempotency: key
    redis.call('DEL', P .. ':i:' .. ARGV[i + 1])
    table.insert(out, 1)
    i = i + 2
  elseif op == 'P' then                   -- complete idempotency: key, record bytes
    local key = P .. ':i:' .. ARGV[i + 1]
    local existing = redis.call('GET', key)
    if existing then
      local sep = string.find(existing, '|', 1, true)
      redis.call('SET', key, string.sub(existing, 1, sep) .. ARGV[i + 2], 'KEEPTTL')
    end
    table.insert(out, 1)
    i = i + 3
  elseif op == 'L' then                   -- list: user
    local index = P .. ':u:' .. ARGV[i + 1]
    local members = redis.call('ZRANGE', index, 0, -1)
    local values = {}
    for _, member in ipairs(members) do
      local value = redis.call('GET', P .. ':p:' .. string.sub(member, 22))
      if value then
        table.insert(values, value)
      else
        redis.call('ZREM', index, member)   -- expired by Redis before the sweep ran
      end
    end
    table.insert(out, values)
    i = i + 2
  elseif op == 'D' then                   -- outbox done: event id
    redis.call('HDEL', P .. ':ob:' .. me, ARGV[i + 1])
    table.insert(out, 1)
    i = i + 2
  elseif op == 'S' then                   -- sweep: now, limit
    local due = redis.call('ZRANGEBYSCORE', P .. ':r', '-inf', ARGV[i + 1], 'LIMIT', 0, ARGV[i + 2])
    local dropped = {}
    for _, member in ipairs(due) do
      redis.call('ZREM', P .. ':r', member)
      local sep = string.find(member, '|', 22, true)
      local id = string.sub(member, 22, sep - 1)
      redis.call('ZREM', P .. ':u:' .. string.sub(member, sep + 1), string.sub(member, 1, sep - 1))
      redis.call('DEL', P .. ':p:' .. id)
      unschedule(id)
      table.insert(dropped, id)
    end
    table.insert(out, dropped)
    i = i + 3
  else
    return redis.error_reply('paysim: unknown store op')
  end
end
return out
"""

# Lease renewal and takeover, run by every replica each STORE_TAKEOVER_INTERVAL_MS.
# ARGV: prefix, me, lease ms, limit, own-orphan cutoff (wall seconds).
# 1. renew this replica's lease (reports whether it had lapsed: then another
#    replica may have taken its payments, and it must not assume they are its own);
# 2. every replica whose lease ended hands everything to the pools: its due
#    outcomes to P:d:_ and its undelivered changes to P:ob:_;
# 3. claim up to ``limit`` due outcomes and ``limit`` changes from the pools;
# 4. name this replica's own due outcomes older than the cutoff (a create whose
#    caller was cancelled after the insert ran: no local timer knows it).
# Returns {lapsed, {id, due, id, due, ...}, {change, ...}, {own id, ...}}.
MAINTAIN = r"""
local P = ARGV[1]
local me = ARGV[2]
local limit = tonumber(ARGV[4])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local replicas = P .. ':replicas'

local had = redis.call('ZSCORE', replicas, me)
local lapsed = 0
if (not had) or tonumber(had) < now_ms then lapsed = 1 end
redis.call('ZADD', replicas, now_ms + tonumber(ARGV[3]), me)

local function release(who)
  local due_key = P .. ':d:' .. who
  local entries = redis.call('ZRANGE', due_key, 0, -1, 'WITHSCORES')
  for j = 1, #entries, 2 do
    redis.call('ZADD', P .. ':d:_', entries[j + 1], entries[j])
    redis.call('HSET', P .. ':o', entries[j], '_')
  end
  redis.call('DEL', due_key)
  local changes = redis.call('HGETALL', P .. ':ob:' .. who)
  for j = 1, #changes, 2 do
    redis.call('RPUSH', P .. ':ob:_', changes[j] .. '|' .. changes[j + 1])
  end
  redis.call('DEL', P .. ':ob:' .. who)
end

local gone = redis.call('ZRANGEBYSCORE', replicas, '-inf', now_ms - 1)
for _, who in ipairs(gone) do
  if who ~= me then
    release(who)
    redis.call('ZREM', replicas, who)
  end
end

local claimed = {}
local popped = redis.call('ZPOPMIN', P .. ':d:_', limit)
for j = 1, #popped, 2 do
  redis.call('ZADD', P .. ':d:' .. me, popped[j + 1], popped[j])
  redis.call('HSET', P .. ':o', popped[j], me)
  table.insert(claimed, popped[j])
  table.insert(claimed, popped[j + 1])
end

local changes = {}
for _, entry in ipairs(redis.call('LPOP', P .. ':ob:_', limit) or {}) do
  local sep = string.find(entry, '|', 1, true)
  local change = string.sub(entry, sep + 1)
  redis.call('HSET', P .. ':ob:' .. me, string.sub(entry, 1, sep - 1), change)
  table.insert(changes, change)
end

local own = redis.call('ZRANGEBYSCORE', P .. ':d:' .. me, '-inf', ARGV[5], 'LIMIT', 0, limit)
return {lapsed, claimed, changes, own}
"""

# A draining replica (SHUTDOWN_PENDING_POLICY=handover) gives its due outcomes
# to the pool (ARGV: prefix, me); with ARGV[3] == '1' it also leaves: its
# undelivered changes go to the pool and its lease ends.
HAND_OVER = r"""
local P = ARGV[1]
local me = ARGV[2]
local due_key = P .. ':d:' .. me
local entries = redis.call('ZRANGE', due_key, 0, -1, 'WITHSCORES')
for j = 1, #entries, 2 do
  redis.call('ZADD', P .. ':d:_', entries[j + 1], entries[j])
  redis.call('HSET', P .. ':o', entries[j], '_')
end
redis.call('DEL', due_key)
local moved = #entries / 2
local changes = 0
if ARGV[3] == '1' then
  local values = redis.call('HGETALL', P .. ':ob:' .. me)
  for j = 1, #values, 2 do
    redis.call('RPUSH', P .. ':ob:_', values[j] .. '|' .. values[j + 1])
  end
  changes = #values / 2
  redis.call('DEL', P .. ':ob:' .. me)
  redis.call('ZREM', P .. ':replicas', me)
end
return {moved, changes}
"""
