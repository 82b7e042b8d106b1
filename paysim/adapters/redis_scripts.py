"""The Redis store's Lua: every read and write, batched, each one atomic.

Why one script for everything: a command costs tens of µs of client CPU
(about 200 through coredis, which is why the batches bypass it: ``redis_wire``),
so one command per store call would halve paysim's throughput.
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

# ARGV[1] = key prefix ("{paysim}"), ARGV[2] = this replica's id, ARGV[3] = the
# ops, MessagePack-encoded (``redis_batch``): an array of arrays, each an op code
# and its fields, strings, integers or times (Redis's cmsgpack reads str, not
# bin, so bytes go as str). A time (due, drop at, now: wall seconds) goes as a
# MessagePack float, and '' where there is none: a Lua number, which redis.call
# writes with 17 significant digits, so a score reads back bit for bit, and
# Python spends no repr() on it. Stored strings made of several fields (a
# payment's ``<version>:<bytes>``, a retention member) are joined here, not in
# Python, which is the busier side: a few hundred ns an op saved there. One
# argument for the whole batch: one C call on each side beats framing fields
# in Python and Lua.
# Returns one result per op, MessagePack-encoded too (one bulk string): Python
# reads it in one C call, where a RESP array of results is parsed one by one
# in ``redis_wire``. Lua's false (a missing key) arrives as False.
OPS = r"""
local P = ARGV[1]
local me = ARGV[2]
local ops = cmsgpack.unpack(ARGV[3])
local out = {}

local function version_of(value)
  local sep = string.find(value, ':', 1, true)
  return tonumber(string.sub(value, 1, sep - 1))
end

local function unschedule(id)
  local owner = redis.call('HGET', P .. ':o', id)
  if owner then
    redis.call('ZREM', P .. ':d:' .. owner, id)
    redis.call('HDEL', P .. ':o', id)
  end
end

for i = 1, #ops do
  local a = ops[i]
  local op = a[1]
  if op == 'G' then                       -- get: id
    table.insert(out, redis.call('GET', P .. ':p:' .. a[2]))
  elseif op == 'I' then                   -- insert: id, version, payment, index member, user, due
    local id, version, payment, member, user, due = a[2], a[3], a[4], a[5], a[6], a[7]
    redis.call('SET', P .. ':p:' .. id, version .. ':' .. payment)
    redis.call('ZADD', P .. ':u:' .. user, 0, member)
    if due ~= '' then
      redis.call('ZADD', P .. ':d:' .. me, due, id)
      redis.call('HSET', P .. ':o', id, me)
    end
    table.insert(out, 1)
  elseif op == 'C' then
    -- compare-and-set: id, expected version, version, payment, due or '',
    -- drop at or '', index member, user, retention ms, event id or '', change or ''
    local id, expected, version, payment, due = a[2], a[3], a[4], a[5], a[6]
    local drop_at, member, user, retention_ms = a[7], a[8], a[9], a[10]
    local event_id, change = a[11], a[12]
    local key = P .. ':p:' .. id
    local current = redis.call('GET', key)
    if current and version_of(current) == expected then
      redis.call('SET', key, version .. ':' .. payment)
      if due ~= '' then
        local owner = redis.call('HGET', P .. ':o', id)
        if owner then redis.call('ZADD', P .. ':d:' .. owner, due, id) end
      else
        unschedule(id)
      end
      if drop_at ~= '' then
        redis.call('ZADD', P .. ':r', drop_at, member .. '|' .. user)
        redis.call('PEXPIRE', key, retention_ms)
      end
      if event_id ~= '' then
        redis.call('HSET', P .. ':ob:' .. me, event_id, change)
      end
      table.insert(out, 1)
    else
      table.insert(out, 0)
    end
  elseif op == 'K' then                   -- claim idempotency: key, now, value, ttl ms
    local key, now, value, ttl = P .. ':i:' .. a[2], a[3], a[4], a[5]
    local existing = redis.call('GET', key)
    local live = false
    if existing then
      local sep = string.find(existing, '|', 1, true)
      live = tonumber(string.sub(existing, 1, sep - 1)) > tonumber(now)
    end
    if live then
      table.insert(out, existing)
    else
      redis.call('SET', key, value, 'PX', ttl)
      table.insert(out, false)
    end
  elseif op == 'R' then                   -- release idempotency: key, unless created id or ''
    local unless = a[3]
    if (not unless) or unless == '' or redis.call('EXISTS', P .. ':p:' .. unless) == 0 then
      redis.call('DEL', P .. ':i:' .. a[2])
    end
    table.insert(out, 1)
  elseif op == 'P' then                   -- complete idempotency: key, record bytes
    local key, record = P .. ':i:' .. a[2], a[3]
    local existing = redis.call('GET', key)
    if existing then
      local sep = string.find(existing, '|', 1, true)
      redis.call('SET', key, string.sub(existing, 1, sep) .. record, 'KEEPTTL')
    end
    table.insert(out, 1)
  elseif op == 'L' then                   -- list: user
    local index = P .. ':u:' .. a[2]
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
  elseif op == 'D' then                   -- outbox done: an array of event ids
    local ids = a[2]
    for j = 1, #ids do
      redis.call('HDEL', P .. ':ob:' .. me, ids[j])
    end
    table.insert(out, #ids)
  elseif op == 'X' then                   -- release idempotency if unchanged: key, value
    local key = P .. ':i:' .. a[2]
    if redis.call('GET', key) == a[3] then redis.call('DEL', key) end
    table.insert(out, 1)
  elseif op == 'A' then                   -- this replica's outbox: {event id, change, ...}
    table.insert(out, redis.call('HGETALL', P .. ':ob:' .. me))
  elseif op == 'S' then                   -- sweep: now, limit
    local now, limit = a[2], a[3]
    local due = redis.call('ZRANGEBYSCORE', P .. ':r', '-inf', now, 'LIMIT', 0, limit)
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
  else
    return redis.error_reply('paysim: unknown store op')
  end
end
return cmsgpack.pack(out)
"""

# What a replica that left or vanished had goes to the pools (shared by the two
# scripts below): its due outcomes, then its undelivered changes. Each returns
# how many it moved.
_RELEASE = r"""
local function release_due(P, who)
  local due_key = P .. ':d:' .. who
  local entries = redis.call('ZRANGE', due_key, 0, -1, 'WITHSCORES')
  for j = 1, #entries, 2 do
    redis.call('ZADD', P .. ':d:_', entries[j + 1], entries[j])
    redis.call('HSET', P .. ':o', entries[j], '_')
  end
  redis.call('DEL', due_key)
  return #entries / 2
end

local function release_changes(P, who)
  local changes = redis.call('HGETALL', P .. ':ob:' .. who)
  for j = 1, #changes, 2 do
    redis.call('RPUSH', P .. ':ob:_', changes[j] .. '|' .. changes[j + 1])
  end
  redis.call('DEL', P .. ':ob:' .. who)
  return #changes / 2
end
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
MAINTAIN = (
    _RELEASE
    + r"""
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

local gone = redis.call('ZRANGEBYSCORE', replicas, '-inf', now_ms - 1)
for _, who in ipairs(gone) do
  if who ~= me then
    release_due(P, who)
    release_changes(P, who)
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
)

# A draining replica (SHUTDOWN_PENDING_POLICY=handover) gives its due outcomes
# to the pool (ARGV: prefix, me); with ARGV[3] == '1' it also leaves: its
# undelivered changes go to the pool and its lease ends.
HAND_OVER = (
    _RELEASE
    + r"""
local P = ARGV[1]
local me = ARGV[2]
local moved = release_due(P, me)
local changes = 0
if ARGV[3] == '1' then
  changes = release_changes(P, me)
  redis.call('ZREM', P .. ':replicas', me)
end
return {moved, changes}
"""
)
