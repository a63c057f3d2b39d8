"""``RedisStore``: runs in Redis through redis-py asyncio (``pip install flowcraft[redis]``)."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from flowcraft._errors import RevisionConflictError, RunNotFoundError, StoreError
from flowcraft.stores._base import (
    COUNT_MAX,
    FINISHED,
    RUN_ENCODER,
    HistoryRecord,
    RunExistsError,
    RunPage,
    RunStats,
    StoredRun,
    awaiting_since,
    check_id,
    check_int,
    check_list_args,
    check_namespace,
    check_run,
    decode_cursor,
    decode_history,
    decode_many,
    decode_run,
    due_limit,
    from_micros,
    lease_end,
    matches,
    opt_micros,
    out_of_range,
    page_of,
    page_of_rows,
    to_micros,
)
from flowcraft.stores._group import Group, Write

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["RedisStore"]

_CHUNK = 200
_PACK = msgspec.msgpack.Encoder()
_MAX_CONNECTIONS = 100  # connections of a store's own client; more calls wait for one

# Create or compare-and-set a run, its indexes, history and idempotency record in one step.
# KEYS: run hash, order zset, due zset (of the run's priority), history list, idempotency
#       hash, finished zset, checkpoints zset, deadline zset, flows set, priorities zset
# ARGV: mode, expected, revision, body, run_id, created, due|'', finished|'', has_idem,
#       idem_key, idem_value, keep_checkpoints, index prefix, index tags, deadline|'',
#       flow_id, n_history, history..., priority, awaiting_since|''
# Index tags ("st:<status>", "fl:<flow>", "rs:<reason>", "aw:<flow>", newline-separated) name
# the secondary sorted sets (scored by creation time; "aw:<flow>", the awaiting runs of a flow,
# by awaiting_since) the run is in; the old ones are left.
# Those keys are derived in the script: fine on one server, not on Redis Cluster.
# Revisions are compared as the decimal text both sides are written as: Lua numbers are
# doubles, equal for distinct revisions above 2**53 (a stale write would pass).
# KEYS and the text of ARGV arrive as one MessagePack argument, [KEYS, ARGV] (strings; the
# script's cmsgpack reads no binary type), the binary values after it: body, idempotency
# value, history records. redis-py packs each argument of a command in Python, the
# client's largest cost per write: 4 or so instead of 30.
_WRITE = """
local packed = cmsgpack.unpack(ARGV[1])
local KEYS, A = packed[1], packed[2]
A[4] = ARGV[2]
A[11] = ARGV[3]
for i = 1, tonumber(A[17]) do A[17 + i] = ARGV[3 + i] end
local ARGV = A
local cur = redis.call('HGET', KEYS[1], 'rev')
if ARGV[1] == 'create' then
  if cur then return {'exists'} end
else
  if not cur then return {'missing'} end
  if cur ~= ARGV[2] then return {'conflict', cur} end
end
redis.call('HSET', KEYS[1], 'rev', ARGV[3], 'body', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
local prio = ARGV[18 + tonumber(ARGV[17])]
if ARGV[7] == '' then redis.call('ZREM', KEYS[3], ARGV[5])
else
  redis.call('ZADD', KEYS[3], ARGV[7], ARGV[5])
  if prio ~= '0' then
    redis.call('ZADD', KEYS[10], prio, prio)
    redis.call('HSET', KEYS[1], 'dk', KEYS[3])
  end
end
if ARGV[8] == '' then redis.call('ZREM', KEYS[6], ARGV[5])
else redis.call('ZADD', KEYS[6], ARGV[8], ARGV[5]) end
if ARGV[9] == '1' then redis.call('HSETNX', KEYS[5], ARGV[10], ARGV[11]) end
local keep = tonumber(ARGV[12])
if keep > 0 then
  redis.call('ZADD', KEYS[7], ARGV[3], ARGV[4])
  redis.call('ZREMRANGEBYRANK', KEYS[7], 0, -(keep + 1))
end
local old = redis.call('HGET', KEYS[1], 'ix')
if old ~= ARGV[14] then
  if old then
    for tag in string.gmatch(old, '[^\\n]+') do redis.call('ZREM', ARGV[13] .. tag, ARGV[5]) end
  end
  for tag in string.gmatch(ARGV[14], '[^\\n]+') do
    redis.call('ZADD', ARGV[13] .. tag, ARGV[6], ARGV[5])
  end
  redis.call('HSET', KEYS[1], 'ix', ARGV[14])
end
local since = ARGV[19 + tonumber(ARGV[17])]
if since and since ~= '' then redis.call('ZADD', ARGV[13] .. 'aw:' .. ARGV[16], since, ARGV[5]) end
if ARGV[15] == '' then redis.call('ZREM', KEYS[8], ARGV[5])
else redis.call('ZADD', KEYS[8], ARGV[15], ARGV[5]) end
redis.call('SADD', KEYS[9], ARGV[16])
local n = tonumber(ARGV[17])
for i = 1, n do redis.call('RPUSH', KEYS[4], ARGV[17 + i]) end
return {'ok'}
"""

# KEYS: lease hash. ARGV: owner, expires_at, now (microseconds).
_ACQUIRE = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then
  if tonumber(redis.call('HGET', KEYS[1], 'exp')) > tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'exp', ARGV[2])
return 1
"""

_DELETE_CHUNK = 500  # runs of ``delete_finished`` sent in one round trip

# KEYS: run hash, order zset, due zset, history list, idempotency hash, finished zset,
#       checkpoints zset, deadline zset
# ARGV: expected revision ('' for any), run_id, index prefix, and for ``delete_finished`` a
#       time (microseconds; '' for none): the run is deleted only if it is still finished and
#       last updated before it (a rollback since it was listed keeps it).
_DELETE = """
local cur = redis.call('HGET', KEYS[1], 'rev')
if not cur then return {'missing'} end
if ARGV[1] ~= '' and cur ~= ARGV[1] then return {'conflict', cur} end
if ARGV[4] and ARGV[4] ~= '' then
  local at = redis.call('ZSCORE', KEYS[6], ARGV[2])
  if not at or tonumber(at) >= tonumber(ARGV[4]) then return {'kept'} end
end
local old = redis.call('HGET', KEYS[1], 'ix')
if old then
  for tag in string.gmatch(old, '[^\\n]+') do redis.call('ZREM', ARGV[3] .. tag, ARGV[2]) end
end
redis.call('ZREM', KEYS[8], ARGV[2])
local dk = redis.call('HGET', KEYS[1], 'dk')
if dk then redis.call('ZREM', dk, ARGV[2]) end
redis.call('DEL', KEYS[1], KEYS[4], KEYS[5], KEYS[7])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[6], ARGV[2])
return {'ok'}
"""

# One page of one index, bodies included, in one call (``list`` with at most one filter).
# KEYS: index zset. ARGV: lowest score ('-inf' or the cursor's), how many to return, run key
# prefix, whether a cursor was given ('1': the entries tied on its score are returned too,
# for the caller to skip those at or before it). Returns id, score, body, id, score, body...
_PAGE = """
local want = tonumber(ARGV[2])
if ARGV[4] == '1' then want = want + redis.call('ZCOUNT', KEYS[1], ARGV[1], ARGV[1]) end
local out, offset, got = {}, 0, 0
while got < want do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES', 'LIMIT',
                         offset, want - got)
  if #ids == 0 then break end
  offset = offset + #ids / 2
  for i = 1, #ids, 2 do
    local body = redis.call('HGET', ARGV[3] .. ids[i], 'body')
    if body then
      out[#out + 1] = ids[i]; out[#out + 1] = ids[i + 1]; out[#out + 1] = body
      got = got + 1
    end
  end
end
return out
"""

_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisStore:
    """A ``RunStore`` in Redis, every key prefixed with ``namespace:``.

    Compare-and-set, index updates, history and idempotency records are one Lua script, so
    they apply atomically. ``due`` reads a sorted set scored by due time. The store's own
    client (from ``url``) holds up to 100 connections; calls past that wait for one.

    Args:
        url: A Redis URL, e.g. ``"redis://127.0.0.1:6379/0"``.
        namespace: Key prefix.
        client: An existing ``redis.asyncio.Redis`` (``decode_responses=False``) instead of ``url``.
    """

    #: Writes are round trips: the durable scheduler runs the next firings while one commits.
    _remote = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "flowcraft",
        client: Redis | None = None,
    ) -> None:
        self.url = url
        self.namespace = check_namespace(namespace)
        self._client = client
        self._own_client = client is None
        self._scripts: dict[str, AsyncScript] = {}
        self._group: Group[tuple[builtins.list[str], Any]] = Group(self._flush)
        ns = namespace
        self._order, self._due, self._finished = f"{ns}:order", f"{ns}:due", f"{ns}:finished"
        self._deadline, self._flows, self._ix = f"{ns}:deadline", f"{ns}:flows", f"{ns}:ix:"
        self._priorities = f"{ns}:priorities"

    def _due_key(self, priority: int) -> str:
        """The due set of one priority (priority 0 keeps the original ``due`` key)."""
        return self._due if priority == 0 else f"{self._due}:{priority}"

    def __repr__(self) -> str:
        return f"flowcraft.stores.RedisStore({self.url!r}, namespace={self.namespace!r})"

    def _redis(self) -> Redis:
        if self._client is None:
            try:
                from redis.asyncio import BlockingConnectionPool, Redis
            except ImportError as exc:  # pragma: no cover - depends on the install
                msg = "RedisStore needs redis-py: pip install 'flowcraft[redis]'"
                raise StoreError(msg) from exc
            # A call past the cap waits for a connection: recent redis-py pools (100 by
            # default in 8.1) fail it with "Too many connections" instead.
            pool = BlockingConnectionPool.from_url(
                self.url, max_connections=_MAX_CONNECTIONS, timeout=None
            )
            self._client = Redis.from_pool(pool)
        return self._client

    def _script(self, name: str, text: str) -> AsyncScript:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._redis().register_script(text)
        return script

    def _key(self, kind: str, name: str) -> str:
        return f"{self.namespace}:{kind}:{name}"

    @asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        """Turn a driver error (connection dropped, server down...) into ``StoreError``."""
        from redis.exceptions import RedisError

        try:
            yield
        except (RedisError, OSError) as exc:
            raise StoreError(
                f"redis store {self.namespace!r} ({self.url}): {what} failed: "
                f"{type(exc).__name__}: {exc}. Check the server; the call can be retried."
            ) from exc

    async def _call(
        self, name: str, text: str, keys: builtins.list[str], args: builtins.list[Any]
    ) -> Any:
        async with self._guard(name):
            return await self._script(name, text)(keys=keys, args=args)

    async def _write(
        self,
        mode: str,
        run: StoredRun,
        expected: int,
        history: Sequence[HistoryRecord],
        idempotency: tuple[str, bytes] | None,
        checkpoint: int = 0,
    ) -> builtins.list[Any]:
        keys, args = self._write_args(mode, run, expected, history, idempotency, checkpoint)
        reply: builtins.list[Any] = await self._group.submit((keys, args), gather=True)
        return reply

    async def _flush(self, batch: builtins.list[Write[tuple[builtins.list[str], Any]]]) -> None:
        """Writes of a batch: one script call, or one pipelined round trip of scripts.

        Each script is atomic on its own (its compare-and-set, its indexes): a conflict or an
        error of one is its own.
        """
        try:
            if len(batch) == 1:
                keys, args = batch[0].payload
                batch[0].result = await self._call("write", _WRITE, keys, args)
                return
            script = self._script("write", _WRITE)
            async with self._guard("write"), self._redis().pipeline(transaction=False) as pipe:
                for write in batch:
                    keys, args = write.payload
                    await script(keys=keys, args=args, client=pipe)
                replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for write in batch:
                write.error = exc
            return
        for write, reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                write.error = StoreError(f"redis store {self.namespace!r}: write failed: {reply}")
            else:
                write.result = reply

    def _write_args(
        self,
        mode: str,
        run: StoredRun,
        expected: int,
        history: Sequence[HistoryRecord],
        idempotency: tuple[str, bytes] | None,
        checkpoint: int = 0,
    ) -> tuple[builtins.list[str], builtins.list[Any]]:
        rid = run.run_id
        due = opt_micros(run.due_at) if run.status == "awaiting" else None
        finished = to_micros(run.updated_at) if run.status in FINISHED else None
        keys = [
            self._key("run", rid),
            self._order,
            self._due_key(run.priority),
            self._key("hist", rid),
            self._key("idem", rid),
            self._finished,
            self._key("cp", rid),
            self._deadline,
            self._flows,
            self._priorities,
        ]
        tags = [f"st:{run.status}", f"fl:{run.flow_id}"]
        if run.status == "awaiting":
            tags.extend(f"rs:{r}" for r in sorted(set(run.reasons)))
            tags.append(f"aw:{run.flow_id}")
        since = opt_micros(awaiting_since(run))
        deadline = opt_micros(run.pause_deadline) if run.status == "awaiting" else None
        args = [
            mode,
            str(expected),
            str(run.revision),
            "",  # the body: binary, sent on its own
            rid,
            str(to_micros(run.created_at)),
            "" if due is None else str(due),
            "" if finished is None else str(finished),
            "1" if idempotency else "0",
            idempotency[0] if idempotency else "",
            "",  # the idempotency value: binary, sent on its own
            str(checkpoint),
            self._ix,
            "\n".join(tags),
            "" if deadline is None else str(deadline),
            run.flow_id,
            str(len(history)),
            *([""] * len(history)),  # the records: binary, sent on their own
            str(run.priority),
            "" if since is None else str(since),
        ]
        # The keys and the text in one argument (see ``_WRITE``), numbers as the decimal text
        # redis-py would have sent (a Lua number would round an integer above 2**53), then
        # the binary values.
        return [], [
            _PACK.encode([keys, args]),
            RUN_ENCODER.encode(run),
            idempotency[1] if idempotency else b"",
            *(RUN_ENCODER.encode(h) for h in history),
        ]

    async def _bodies(self, ids: object) -> builtins.list[StoredRun]:
        names = _names(ids)
        if not names:
            return []
        async with self._guard("read"), self._redis().pipeline(transaction=False) as pipe:
            for rid in names:
                pipe.hget(self._key("run", rid), "body")
            bodies = await pipe.execute()
        return decode_many((rid, _bytes(b)) for rid, b in zip(names, bodies, strict=True) if b)

    # --- RunStore ----------------------------------------------------------------------------

    async def create(
        self, run: StoredRun, *, history: Sequence[HistoryRecord] = (), durable: bool = True
    ) -> None:
        """Store a new run; raise ``RunExistsError`` if the id is taken."""
        check_run(run, history)
        reply = await self._write("create", run, 0, history, None)
        if reply[0] == b"exists":
            raise RunExistsError(run.run_id)

    async def save(
        self,
        run: StoredRun,
        expected_revision: int,
        *,
        history: Sequence[HistoryRecord] = (),
        idempotency: tuple[str, bytes] | None = None,
        checkpoint: int = 0,
        durable: bool = True,
    ) -> None:
        """Replace the run if its stored revision is ``expected_revision``, atomically."""
        check_run(run, history)
        check_int("expected_revision", expected_revision, run.run_id)
        checkpoint = min(checkpoint, COUNT_MAX)
        reply = await self._write(
            "save", run, expected_revision, history, idempotency, checkpoint
        )
        if reply[0] == b"missing":
            raise RunNotFoundError(run.run_id, self)
        if reply[0] == b"conflict":
            raise RevisionConflictError(run.run_id, expected_revision, int(reply[1]))

    async def save_many(
        self, writes: Sequence[tuple[StoredRun, int]]
    ) -> builtins.list[Exception | None]:
        """``save`` each ``(run, expected_revision)`` in one pipelined round trip (claims).

        Each is its own atomic compare-and-set script: None where it landed, else its error
        (a conflicting or missing run is refused alone).
        """
        if not writes:
            return []
        refused = [out_of_range(run, expected) for run, expected in writes]
        if any(no is not None for no in refused):  # refused alone; the others go on
            kept = [w for w, no in zip(writes, refused, strict=True) if no is None]
            done = iter(await self.save_many(kept))
            return [no if no is not None else next(done) for no in refused]
        script = self._script("write", _WRITE)
        async with self._guard("save_many"), self._redis().pipeline(transaction=False) as pipe:
            for run, expected in writes:
                keys, args = self._write_args("save", run, expected, (), None)
                await script(keys=keys, args=args, client=pipe)
            replies = await pipe.execute(raise_on_error=False)
        out: builtins.list[Exception | None] = []
        for (run, expected), reply in zip(writes, replies, strict=True):
            if isinstance(reply, Exception):
                out.append(StoreError(f"redis store {self.namespace!r}: save failed: {reply}"))
            elif reply[0] == b"missing":
                out.append(RunNotFoundError(run.run_id, self))
            elif reply[0] == b"conflict":
                out.append(RevisionConflictError(run.run_id, expected, int(reply[1])))
            else:
                out.append(None)
        return out

    async def get(self, run_id: str) -> StoredRun:
        """The stored run; raise ``RunNotFoundError`` if there is none."""
        check_id(run_id)
        async with self._guard("get"):
            body = await self._redis().hget(self._key("run", run_id), "body")
        if body is None:
            raise RunNotFoundError(run_id, self)
        return decode_run(_bytes(body), run_id)

    async def list(
        self,
        *,
        status: str | None = None,
        flow_id: str | None = None,
        reason: str | None = None,
        expired: bool | None = None,
        now: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """Runs matching every filter given, oldest first, a page at a time.

        Walks the secondary index of the most selective filter given (runs of a status, of a
        flow, awaiting for a reason; all runs otherwise) in creation order, checking the other
        filters on the way.
        """
        limit = check_list_args(expired, now, limit)
        after = decode_cursor(cursor)
        r = self._redis()
        if reason is not None:
            index = f"{self._ix}rs:{reason}"
        elif status is not None:
            index = f"{self._ix}st:{status}"
        elif expired:
            index = f"{self._ix}st:awaiting"
        elif flow_id is not None:
            index = f"{self._ix}fl:{flow_id}"
        else:
            index = self._order
        low: str | int = "-inf" if after is None else after[0]
        given = sum(x is not None for x in (status, flow_id, reason, expired))
        if expired is None and (
            given <= 1 or (given == 2 and reason is not None and status == "awaiting")
        ):
            # The index holds exactly the runs asked for: read limit + 1 of them (and the
            # ties of the cursor's creation time), bodies included, in one round trip.
            args = [low, limit + 1, f"{self.namespace}:run:", "0" if after is None else "1"]
            flat = await self._call("page", _PAGE, [index], args)
            rows: builtins.list[tuple[str, int, bytes]] = []
            for i in range(0, len(flat), 3):
                row = (_names([flat[i]])[0], int(float(flat[i + 1])), _bytes(flat[i + 2]))
                if after is None or (row[1], row[0]) > after:
                    rows.append(row)
            return page_of_rows(rows[: limit + 1], limit)
        found: builtins.list[StoredRun] = []
        offset = 0
        chunk = max(limit + 1, 64)
        while len(found) <= limit:
            async with self._guard("list"):
                ids = await r.zrangebyscore(index, low, "+inf", start=offset, num=chunk)
            if not ids:
                break
            offset += len(ids)
            for run in await self._bodies(ids):
                key = (to_micros(run.created_at), run.run_id)
                if after is not None and key <= after:
                    continue
                if matches(run, status, flow_id, reason, expired, now):
                    found.append(run)
        found.sort(key=lambda x: (to_micros(x.created_at), x.run_id))
        return page_of(found, limit)

    async def due(self, now: datetime, limit: int = 100) -> builtins.list[StoredRun]:
        """Awaiting runs whose ``due_at`` is at or before ``now``, in ``(priority, due_at)`` order.

        Each priority in use has its own due set: the first ``limit`` due of each are read (one
        pipelined round trip) and taken lowest priority first.
        """
        limit = due_limit(limit)
        r = self._redis()
        async with self._guard("due"):
            used = _names(await r.zrange(self._priorities, 0, -1))
            priorities = sorted({0, *(int(p) for p in used)})
            async with r.pipeline(transaction=False) as pipe:
                for priority in priorities:
                    pipe.zrangebyscore(
                        self._due_key(priority), "-inf", to_micros(now), start=0, num=limit
                    )
                found = await pipe.execute()
        ids = [rid for chunk in found for rid in _names(chunk)][:limit]
        return [r for r in await self._bodies(ids) if r.status == "awaiting"]

    async def stats(self, now: datetime) -> RunStats:
        """Counts by status, by flow, awaiting by reason, and expired at ``now``.

        Read from the sizes of the secondary indexes (and the first entry of each flow's
        awaiting set): a few commands, whatever the run count.
        """
        r = self._redis()
        statuses = ("running", "awaiting", "completed", "failed", "cancelled")
        reasons = ("wait", "timer", "pause")
        async with self._guard("stats"):
            flows = sorted(_names(list(await r.smembers(self._flows))))
            async with r.pipeline(transaction=False) as pipe:
                for st in statuses:
                    pipe.zcard(f"{self._ix}st:{st}")
                for fl in flows:
                    pipe.zcard(f"{self._ix}fl:{fl}")
                for rs in reasons:
                    pipe.zcard(f"{self._ix}rs:{rs}")
                pipe.zcount(self._deadline, "-inf", to_micros(now))
                for fl in flows:
                    pipe.zcard(f"{self._ix}aw:{fl}")
                    pipe.zrange(f"{self._ix}aw:{fl}", 0, 0, withscores=True)
                replies = await pipe.execute()
        waiting = replies[len(replies) - 2 * len(flows) :]
        counts = [int(c) for c in replies[: len(replies) - 2 * len(flows)]]
        by_status = {st: c for st, c in zip(statuses, counts, strict=False) if c}
        rest = counts[len(statuses) :]
        by_flow = {fl: c for fl, c in zip(flows, rest, strict=False) if c}
        rest = rest[len(flows) :]
        by_reason = {rs: c for rs, c in zip(reasons, rest, strict=False) if c}
        return RunStats(
            total=sum(by_status.values()),
            by_status=by_status,
            by_flow=by_flow,
            awaiting_by_reason=by_reason,
            expired=rest[-1],
            awaiting_by_flow={
                fl: int(n) for fl, n in zip(flows, waiting[::2], strict=True) if int(n)
            },
            awaiting_since_by_flow={
                fl: from_micros(int(first[0][1]))
                for fl, first in zip(flows, waiting[1::2], strict=True)
                if first
            },
        )

    async def history(self, run_id: str) -> builtins.list[HistoryRecord]:
        """The run's audit trail, oldest first."""
        check_id(run_id)
        async with self._guard("history"):
            items = await self._redis().lrange(self._key("hist", run_id), 0, -1)
        return [decode_history(_bytes(i), run_id) for i in items]

    async def checkpoints(self, run_id: str) -> builtins.list[StoredRun]:
        """The run's kept checkpoints, oldest first."""
        check_id(run_id)
        async with self._guard("checkpoints"):
            items = await self._redis().zrange(self._key("cp", run_id), 0, -1)
        return [decode_run(_bytes(i), run_id) for i in items]

    async def remember(self, run_id: str, key: str, result: bytes) -> bool:
        """Record ``result`` under an idempotency key; False (keeping the first) if known."""
        check_id(run_id, key)
        async with self._guard("remember"):
            return bool(await self._redis().hsetnx(self._key("idem", run_id), key, result))

    async def recall(self, run_id: str, key: str) -> bytes | None:
        """The result remembered under the key, or None."""
        check_id(run_id, key)
        async with self._guard("recall"):
            value = await self._redis().hget(self._key("idem", run_id), key)
        return None if value is None else _bytes(value)

    async def get_and_recall(self, run_id: str, key: str) -> tuple[StoredRun, bytes | None]:
        """``get`` and ``recall`` in one round trip (a transaction: one snapshot)."""
        check_id(run_id, key)
        async with self._guard("get"), self._redis().pipeline(transaction=True) as pipe:
            pipe.hget(self._key("run", run_id), "body")
            pipe.hget(self._key("idem", run_id), key)
            body, value = await pipe.execute()
        if body is None:
            raise RunNotFoundError(run_id, self)
        return decode_run(_bytes(body), run_id), None if value is None else _bytes(value)

    async def acquire_lease(self, name: str, owner: str, ttl: float, now: datetime) -> bool:
        """Take or renew the named lease until ``now + ttl``."""
        until = to_micros(lease_end(now, ttl))
        reply = await self._call(
            "acquire", _ACQUIRE, [self._key("lease", name)], [owner, until, to_micros(now)]
        )
        return bool(reply)

    async def release_lease(self, name: str, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""
        await self._call("release", _RELEASE, [self._key("lease", name)], [owner])

    async def delete_finished(self, before: datetime) -> int:
        """Delete finished runs last updated before ``before``; return how many."""
        r = self._redis()
        until = to_micros(before)
        async with self._guard("delete_finished"):
            ids = await r.zrangebyscore(self._finished, "-inf", f"({until}")
        names = _names(ids)
        script = self._script("delete", _DELETE)
        deleted = 0
        for i in range(0, len(names), _DELETE_CHUNK):  # pipelined: one round trip a chunk
            async with self._guard("delete_finished"), r.pipeline(transaction=False) as pipe:
                for rid in names[i : i + _DELETE_CHUNK]:
                    args: builtins.list[str | int] = ["", rid, self._ix, until]
                    await script(keys=self._run_keys(rid), args=args, client=pipe)
                replies = await pipe.execute()
            deleted += sum(1 for reply in replies if reply[0] == b"ok")
        return deleted

    def _run_keys(self, run_id: str) -> builtins.list[str]:
        return [
            self._key("run", run_id),
            self._order,
            self._due,
            self._key("hist", run_id),
            self._key("idem", run_id),
            self._finished,
            self._key("cp", run_id),
            self._deadline,
        ]

    async def delete(self, run_id: str, expected_revision: int) -> None:
        """Delete a run and its records if its stored revision is ``expected_revision``."""
        check_id(run_id)
        check_int("expected_revision", expected_revision, run_id)
        keys = [
            self._key("run", run_id),
            self._order,
            self._due,
            self._key("hist", run_id),
            self._key("idem", run_id),
            self._finished,
            self._key("cp", run_id),
            self._deadline,
        ]
        args = [expected_revision, run_id, self._ix]
        reply = await self._call("delete", _DELETE, keys, args)
        if reply[0] == b"missing":
            raise RunNotFoundError(run_id, self)
        if reply[0] == b"conflict":
            raise RevisionConflictError(run_id, expected_revision, int(reply[1]))

    async def close(self) -> None:
        """Close the client (unless it was passed in)."""
        if self._client is not None and self._own_client:
            async with self._guard("close"):
                await self._client.aclose()
        self._client = None
        self._scripts.clear()


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):  # a client created with decode_responses=True
        return value.encode()
    raise StoreError(f"unexpected reply from redis: {type(value).__name__}")


def _names(ids: object) -> builtins.list[str]:
    assert isinstance(ids, builtins.list)
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
