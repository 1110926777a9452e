"""Django Q status records: the `ClusterStat` value and the decoder (pure, no I/O).

A record is `"." + b64url(zlib(pickle(Stat))) + ":" + base62(time) + ":" + signature`, written
by Django's `TimestampSigner` (tests/fixtures/README.md has real captures). `Decoder` takes it apart
layer by layer, any of which may refuse it with a DecodeError: the raw value (a str, or
Django's cache pickle of one), the signature (qwatch.decode.signature), base64 and bounded zlib,
the pickle (qwatch.decode.safe_pickle: nothing in a record is ever imported, called or executed,
whoever signed it), then every field. A poll loop may pass a per-key memo
(qwatch.decode.memo) that spares work a rewrite does not need; the verdicts are the same.

ClusterStat and STATES are `qwatch.values`' and DecodeError is `qwatch.errors'`, so that the
read side can name them without importing Django or the decoder.
"""

from __future__ import annotations

import operator
import pickle
import zlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import fields
from datetime import UTC, datetime, tzinfo
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from qwatch.decode.memo import Base, Changes, DecodeMemo, KeyMemo, fleet_base, layout_of, share
from qwatch.decode.pickle_flow import DATETIME_KEYS, INT_KEYS, LIST_KEYS, TEXT_KEYS
from qwatch.decode.safe_pickle import CacheUnpickler, check_opcodes, load, stat_state
from qwatch.decode.signature import Verifier, b64decode
from qwatch.errors import DecodeError
from qwatch.values import STATES, ClusterStat

# A real record is under 2 KB; anything near these is hostile or broken.
MAX_RECORD_BYTES = 64 * 1024
MAX_PICKLE_BYTES = 64 * 1024
# The largest count or pid a record may carry: what the history's INTEGER columns (int4 on
# PostgreSQL) and the JSON encoder (64 bits) can hold; no real pid or queue comes near it.
MAX_INT = 2**31 - 1

# A ClusterStat's fields in order, to make one with a few changed: dataclasses.replace()
# costs twice as much.
_FIELD_NAMES = tuple(f.name for f in fields(ClusterStat))
_FIELD_INDEX = {name: index for index, name in enumerate(_FIELD_NAMES)}
_ALL_FIELDS = operator.attrgetter(*_FIELD_NAMES)


# --- the layers around the pickle -----------------------------------------------------------


def _signed_text(raw: object) -> str:
    value = raw
    if type(value) is bytes:
        if len(value) > MAX_RECORD_BYTES:
            raise DecodeError("too large")
        if value[:1] == pickle.PROTO:  # never how a signed value starts: Django's cache wrapped it
            value = load(value, CacheUnpickler)
        else:
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                raise DecodeError("not a Django Q record") from None
    if type(value) is not str:
        raise DecodeError("not a Django Q record")
    if len(value) > MAX_RECORD_BYTES:
        raise DecodeError("too large")
    # Tolerated for records read from files; Redis values never carry it.
    text = value.rstrip()
    if not text:
        raise DecodeError("not a Django Q record")
    return text


def inflate(data: bytes, limit: int = MAX_PICKLE_BYTES) -> bytes:
    """zlib-decompress one whole stream of at most `limit` bytes, or DecodeError ("too
    large", "bad zlib"). Bounded: signing.loads would inflate a zip bomb whole; the cache
    readers (qwatch.sources.cache_*) use it for their backends' zlib envelopes too."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit)
        # Output still to come (from unread input or zlib's window) means over the bound.
        more = not inflater.eof and inflater.decompress(inflater.unconsumed_tail, 1)
    except zlib.error:
        raise DecodeError("bad zlib") from None
    if more:
        raise DecodeError("too large")
    if not inflater.eof or inflater.unused_data:
        raise DecodeError("bad zlib")
    return out


# --- the decoded state ----------------------------------------------------------------------


def _field(state: dict[Any, Any], key: str) -> Any:
    try:
        return state[key]
    except KeyError:
        raise DecodeError(f"missing field {key}") from None


def _int(value: object, key: str) -> int:
    # `type is`: refuses bools, which are ints
    if type(value) is not int or not 0 <= value <= MAX_INT:
        raise DecodeError(f"bad field {key}")
    return value


def _count(state: dict[Any, Any], key: str) -> int:
    return _int(_field(state, key), key)


def _pid(value: object, key: str) -> int | None:
    # None while a process is not up yet (django-q 0.5 Starting).
    return None if value is None else _int(value, key)


def _cluster_id(state: dict[Any, Any]) -> str:
    return _cluster_id_value(_field(state, "cluster_id"))


def _cluster_id_value(value: object, key: str = "cluster_id") -> str:
    if type(value) is int and value >= 0:  # the pid, before django-q 1.2
        return str(value)
    if type(value) is UUID:
        # A BUILD can set a UUID's `int` to anything: check it, and format it afresh.
        number = getattr(value, "int", None)
        if type(number) is int and 0 <= number < 1 << 128:
            text = f"{number:032x}"  # str(UUID(int=number)), without building one
            return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
    raise DecodeError("bad field cluster_id")


def _host(state: dict[Any, Any]) -> str:
    return _host_value(_field(state, "host"))


def _host_value(value: Any, key: str = "host") -> str:
    # Printable: the host is shown in terminals, where an escape sequence would be obeyed.
    if type(value) is not str or len(value) > 255 or not value.isprintable():
        raise DecodeError("bad field host")
    return value


def _workers(state: dict[Any, Any]) -> tuple[int, ...]:
    return _workers_value(_field(state, "workers"))


def _workers_value(value: Any, key: str = "workers") -> tuple[int, ...]:
    if type(value) not in (list, tuple) or not {*map(type, value)} <= {int}:
        raise DecodeError("bad field workers")
    if value and (min(value) < 0 or max(value) > MAX_INT):
        raise DecodeError("bad field workers")
    return tuple(value)


# The check `Decoder._stat` makes of each field a slot makes, but the datetimes.
_SLOT_FIELD_CHECKS: dict[str, Callable[[Any, str], object]] = {
    "cluster_id": _cluster_id_value,  # an int (the pid) or a UUID
    "pid": _pid,
    "sentinel": _pid,
    "monitor": _pid,
    "pusher": _pid,
    "task_q_size": _int,
    "done_q_size": _int,
    "reincarnations": _int,
    "host": _host_value,
    "workers": _workers_value,
}
assert _SLOT_FIELD_CHECKS.keys() == INT_KEYS | TEXT_KEYS | LIST_KEYS
assert _FIELD_INDEX.keys() >= DATETIME_KEYS


def _status(state: dict[Any, Any]) -> str:
    value = _field(state, "status")
    if type(value) is not str or value not in STATES:
        raise DecodeError("bad field status")
    return value


class Decoder:
    """Verifies and decodes one site's records. Build once per site, reuse for every record."""

    __slots__ = ("_local_tz", "_name", "_remember", "_site", "_verifier")

    def __init__(
        self,
        name: str,
        secret_key: str,
        fallback_keys: Sequence[str] = (),
        time_zone: str = "UTC",
        *,
        remember: bool = True,
    ) -> None:
        """`remember=False` for a one-shot read (`qwatch status`): a memo passed to `decode`
        is left empty, since no later poll would use what it keeps; pickles still skip the
        opcode walk when a layout of the same run admits them, and the unpickling when a
        base of the same shape does. Same verdicts."""
        # Empty values would make Django's Signer read (unconfigured) settings instead.
        if not name or not secret_key:
            raise ValueError("Decoder needs a site name and a secret key")
        self._name = name
        self._remember = remember
        self._verifier = Verifier(name, secret_key, [key for key in fallback_keys if key])
        # Naive datetimes are local time in the site's TIME_ZONE (USE_TZ=False).
        self._local_tz: tzinfo = UTC if time_zone == "UTC" else ZoneInfo(time_zone)
        # What a ClusterStat owes to its decoder rather than its bytes: bases of other keys
        # (memo.fleet_base) are shared under it.
        self._site = (name, time_zone)

    def decode(
        self, raw: bytes | str, memo: DecodeMemo | None = None, key: Hashable = None
    ) -> ClusterStat:
        """Return the record's ClusterStat or raise DecodeError; never anything else.

        A caller that reads the same keys again and again (a poll loop) passes a `memo` it
        keeps, and the `key` the record was read from: a pickle that differs from one of
        that key's previous ones only in bytes that alone make a field (its timestamp, queue
        sizes, reincarnations, pids, host: qwatch.decode.pickle_flow) is then decoded from
        those bytes alone. So is one that differs so from another key's pickle of the same
        shape (memo.fleet_base: a fleet's clusters mostly do), and one laid out like an
        earlier one (of any key) skips the opcode walk. With no memo, every record is
        decoded in full. Same verdicts either way; the signature is verified every time.
        """
        try:
            return self._decode(raw, memo, key)
        except DecodeError:
            raise
        except Exception:  # whatever a hostile record provokes, callers see only DecodeError
            raise DecodeError("bad record") from None

    def _decode(self, raw: bytes | str, memo: DecodeMemo | None, key: Hashable) -> ClusterStat:
        text = _signed_text(raw)
        payload = self._verifier.unsign(text)
        compressed = payload[:1] == "."
        data = b64decode(payload[1:] if compressed else payload)
        if compressed:
            data = inflate(data)
        if memo is None:
            check_opcodes(data)
            return self._stat(stat_state(data))
        bits = int.from_bytes(data, "little")  # for the memo's comparisons
        seen = memo.get(key) if self._remember else None
        if seen is not None:
            stat = self._patched(seen.changes(data, bits))
            if stat is not None:
                return stat
        layout = layout_of(data, bits)  # the walk, or a layout that admits `data`
        # A key seen for the first time (or with a new shape): another cluster's base of the
        # same shape, if the site has one, spares the unpickling.
        shared = fleet_base(self._site, bits, layout)
        stat = None if shared is None else self._patched(shared.changes(data, bits))
        base: Base | None = None
        if shared is not None and stat is not None:
            if self._remember:
                base = shared.rebased(data, bits, stat)
        else:
            state = stat_state(data)
            stat = self._stat(state)
            base = Base.of(data, bits, layout, state, stat)
            if base is not None:
                share(self._site, base)
        if self._remember and base is not None:
            if seen is None:
                seen = memo[key] = KeyMemo()
            seen.keep(base)
        return stat

    def _patched(self, found: Changes | None) -> ClusterStat | None:
        """What Base.changes `found`: its base's ClusterStat with the changed fields made and
        checked as `_stat` checks them, the others as they were. None if nothing was found, or
        on any failed check: the full decode then says what is wrong."""
        if found is None:
            return None
        stat, changed = found
        if not changed:
            return stat
        values = list(_ALL_FIELDS(stat))
        try:
            for key, value in changed:
                check = _SLOT_FIELD_CHECKS.get(key)
                checked = self._utc_value(value, key) if check is None else check(value, key)
                values[_FIELD_INDEX[key]] = checked
            return ClusterStat(*values)
        except Exception:
            return None

    def _utc(self, state: dict[Any, Any], key: str) -> datetime:
        return self._utc_value(_field(state, key), key)

    def _utc_value(self, value: object, key: str) -> datetime:
        if type(value) is not datetime:
            raise DecodeError(f"bad field {key}")
        try:
            # Rebuilt through the checking constructor: unpickling does not range-check an
            # hour of 30. Naive is local time in the site's TIME_ZONE; fold=0 (the writer's)
            # reads an ambiguous local time (DST fall-back) as its first occurrence.
            value = datetime(
                value.year,
                value.month,
                value.day,
                value.hour,
                value.minute,
                value.second,
                value.microsecond,
                tzinfo=self._local_tz if value.tzinfo is None else value.tzinfo,
                fold=value.fold,
            )
            return value.astimezone(UTC)
        except (OverflowError, ValueError):
            raise DecodeError(f"bad field {key}") from None

    def _stat(self, state: dict[Any, Any]) -> ClusterStat:
        return ClusterStat(
            name=self._name,
            cluster_id=_cluster_id(state),
            host=_host(state),
            pid=_pid(state.get("pid"), "pid"),  # no pid before django-q 1.2
            sentinel=_pid(_field(state, "sentinel"), "sentinel"),
            monitor=_pid(_field(state, "monitor"), "monitor"),
            pusher=_pid(_field(state, "pusher"), "pusher"),
            workers=_workers(state),
            status=_status(state),
            task_q_size=_count(state, "task_q_size"),
            done_q_size=_count(state, "done_q_size"),
            reincarnations=_count(state, "reincarnations"),
            tob=self._utc(state, "tob"),
            timestamp=self._utc(state, "timestamp"),
        )


def decode(
    raw: bytes | str,
    *,
    name: str,
    secret_key: str,
    fallback_keys: Sequence[str] = (),
    time_zone: str = "UTC",
) -> ClusterStat:
    """Decode one record. For many records build a `Decoder` once: it holds the signers."""
    return Decoder(name, secret_key, fallback_keys, time_zone).decode(raw)
