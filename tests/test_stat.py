"""The decoder against real captures (tests/fixtures) and records built here for the
variants the captures lack: every pickle protocol, Python 2 writers, django-q 0.5."""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from django.core.signing import TimestampSigner
from django.utils.translation import gettext_lazy

from qwatch.decode import DecodeError, Decoder, decode
from qwatch.values import ClusterStat
from tests.helpers import CAPTURE_ROTATED_SECRET as ROTATED
from tests.helpers import CAPTURE_SECRET as SECRET
from tests.helpers import CAPTURE_SITE as NAME
from tests.helpers import EXPECTED, PAYLOADS

NOTZ = "q2_url_notz_idle.txt"  # USE_TZ=False: naive datetimes
TEXT_CAPTURES = sorted(name for name in EXPECTED if name.endswith(".txt"))  # not cache-wrapped


def read_record(filename: str) -> bytes:
    """The value as it sits in Redis (the .txt files add a newline)."""
    raw = (PAYLOADS / filename).read_bytes()
    return raw.rstrip(b"\n") if filename.endswith(".txt") else raw


def expected_stat(filename: str, time_zone: tzinfo = UTC) -> ClusterStat:
    exp = EXPECTED[filename]

    def when(text: str) -> datetime:
        value = datetime.fromisoformat(text)
        return (value if value.tzinfo else value.replace(tzinfo=time_zone)).astimezone(UTC)

    return ClusterStat(
        name=NAME,
        cluster_id=exp["cluster_id"],
        host=exp["host"],
        pid=exp["pid"],
        sentinel=exp["sentinel"],
        monitor=exp["monitor"],
        pusher=exp["pusher"],
        workers=tuple(exp["workers"]),
        status=exp["status"],
        task_q_size=exp["task_q_size"],
        done_q_size=exp["done_q_size"],
        reincarnations=exp["reincarnations"],
        tob=when(exp["tob"]),
        timestamp=when(exp["timestamp"]),
    )


# --- building records -----------------------------------------------------------------------


class RawBytes:
    """A sign_object serializer that passes prepared pickle bytes through."""

    def dumps(self, obj: bytes) -> bytes:
        return obj


def sign(
    data: bytes, *, key: str = SECRET, algorithm: str = "sha256", compress: bool = True
) -> str:
    """A record exactly as Django Q signs one, around any pickle bytes."""
    signer = TimestampSigner(key=key, salt=NAME, algorithm=algorithm, fallback_keys=[])
    return signer.sign_object(data, serializer=RawBytes, compress=compress)


class FakeStat:
    """Pickled under django_q's name by `stat_pickle`; django_q is never imported."""

    def __init__(self, state: Mapping[str, Any]) -> None:
        self.__dict__.update(state)


def _pytz_utc() -> tzinfo:
    return PYTZ_UTC


class _PytzUTCZone(tzinfo):
    """Pickles as `pytz._UTC()`, as a Django <= 3.2 writer's aware datetimes do."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "UTC"

    def __reduce__(self) -> tuple[Any, ...]:
        return _pytz_utc, ()


PYTZ_UTC = _PytzUTCZone()


@contextmanager
def _pickled_as(objects: Mapping[str, object]) -> Iterator[None]:
    """Let pickle find each object under its dotted name, for the duration only."""
    saved: dict[str, types.ModuleType | None] = {}
    try:
        for dotted, obj in objects.items():
            module_name, _, attr = dotted.rpartition(".")
            module = types.ModuleType(module_name)
            setattr(module, attr, obj)
            obj.__module__, obj.__qualname__ = module_name, attr  # type: ignore[attr-defined]
            saved[module_name] = sys.modules.get(module_name)
            sys.modules[module_name] = module
        yield
    finally:
        for module_name, module in saved.items():
            if module is None:
                del sys.modules[module_name]
            else:
                sys.modules[module_name] = module


def state(**overrides: Any) -> dict[str, Any]:
    """A django-q2 Idle cluster's Stat.__dict__ (minus the broker)."""
    base: dict[str, Any] = {
        "workers": [4102, 4103],
        "tob": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "reincarnations": 1,
        "pid": 4099,
        "cluster_id": UUID("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
        "sentinel": 4101,
        "status": gettext_lazy("Idle"),
        "done_q_size": 0,
        "host": "worker-1",
        "monitor": 4104,
        "task_q_size": 3,
        "pusher": 4105,
        "timestamp": datetime(2026, 1, 2, 3, 5, 0, 123456, tzinfo=UTC),
    }
    base.update(overrides)
    return base


def stat_pickle(
    fields: Mapping[str, Any], *, protocol: int = 5, class_path: str = "django_q.status.Stat"
) -> bytes:
    """What a Python 3 writer's `pickle.dumps(stat, HIGHEST_PROTOCOL)` gives."""
    stat = FakeStat(fields)
    with _pickled_as({class_path: FakeStat, "pytz._UTC": _pytz_utc}):
        return pickle.dumps(stat, protocol=protocol)


class Ops(bytes):
    """Pickle opcodes `py2_stat_pickle` puts in as they are."""


def _py2_value(value: Any) -> bytes:
    if isinstance(value, Ops):
        return bytes(value)
    if value is None:
        return b"N"
    if type(value) is int:
        return b"J" + struct.pack("<i", value)
    if type(value) is str:  # a Python 2 byte string
        data = value.encode("latin1")
        return b"U" + bytes([len(data)]) + data
    if type(value) is list:
        return b"](" + b"".join(_py2_value(item) for item in value) + b"e"
    if type(value) is datetime:
        # datetime's pickled state is its 10 packed bytes; Python 2 wrote them as a str.
        packed = value.replace(tzinfo=None).__reduce__()[1][0]
        zone = b"cpytz\n_UTC\n)R" if value.tzinfo else b""
        return b"cdatetime\ndatetime\n(U\x0a" + packed + zone + b"tR"
    raise TypeError(value)


def py2_lazy(text: str) -> Ops:
    """`ugettext_lazy(text)` as Django 1.x on Python 2 pickled it."""
    return Ops(
        b"cdjango.utils.functional\n_lazy_proxy_unpickle\n("
        + b"cdjango.utils.translation\nugettext\n"
        + _py2_value(text)
        + b"\x85}c__builtin__\nunicode\ntR"
    )


def py2_stat_pickle(fields: Mapping[str, Any], module: str = "django_q.status") -> bytes:
    """What django-q 0.x on Python 2 wrote: protocol 2, GLOBAL opcodes, byte strings
    (decoded with encoding="latin1"), pytz UTC, `ugettext` and `__builtin__.unicode`."""
    items = b"".join(_py2_value(key) + _py2_value(value) for key, value in fields.items())
    return b"\x80\x02c" + module.encode() + b"\nStat\n)\x81}(" + items + b"ub."


def py2_state(**overrides: Any) -> dict[str, Any]:
    """django-q 0.9 on Python 2: a pid for cluster id, no pid field, aware pytz datetimes."""
    fields = state(
        cluster_id=14147,
        status=py2_lazy("Working"),
        # 0xE9 and 0xFF bytes in the packed datetime test the latin1 round trip.
        tob=datetime(2026, 11, 27, 15, 52, 28, 59881, tzinfo=PYTZ_UTC),
        timestamp=datetime(2026, 11, 27, 15, 52, 32, 65535, tzinfo=PYTZ_UTC),
    )
    del fields["pid"]
    fields.update(overrides)
    return fields


@pytest.fixture(scope="module")
def decoder() -> Decoder:
    return Decoder(NAME, SECRET, fallback_keys=[ROTATED])


# --- the captures ---------------------------------------------------------------------------


def test_every_capture_has_expected_values() -> None:
    assert sorted(p.name for p in PAYLOADS.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("filename", sorted(EXPECTED))
def test_capture_decodes_to_expected(decoder: Decoder, filename: str) -> None:
    assert decoder.decode(read_record(filename)) == expected_stat(filename)


@pytest.mark.parametrize("filename", TEXT_CAPTURES)
def test_capture_decodes_from_str(decoder: Decoder, filename: str) -> None:
    assert decoder.decode(read_record(filename).decode()) == expected_stat(filename)


def test_trailing_newline_of_a_file_is_tolerated(decoder: Decoder) -> None:
    raw = (PAYLOADS / "q2_url_tz_idle.txt").read_bytes()
    assert raw.endswith(b"\n")
    assert decoder.decode(raw) == expected_stat("q2_url_tz_idle.txt")


def test_captures_cover_both_hashes() -> None:
    sig_lengths = {len(read_record(name).rsplit(b":", 1)[1]) for name in TEXT_CAPTURES}
    assert sig_lengths == {27, 43}


def test_rotated_key_accepted_as_fallback() -> None:
    old_primary = Decoder(NAME, SECRET, fallback_keys=[ROTATED])
    assert old_primary.decode(read_record("q2_rotatedB_idle.txt")) == expected_stat(
        "q2_rotatedB_idle.txt"
    )


def test_rotated_key_accepted_as_primary() -> None:
    new_primary = Decoder(NAME, ROTATED, fallback_keys=[SECRET])
    for filename in EXPECTED:
        assert new_primary.decode(read_record(filename)) == expected_stat(filename)


def test_rotated_record_refused_without_its_key() -> None:
    with pytest.raises(DecodeError) as err:
        Decoder(NAME, SECRET).decode(read_record("q2_rotatedB_idle.txt"))
    assert err.value.reason == "bad signature"
    with pytest.raises(DecodeError, match=r"^bad signature$"):
        Decoder(NAME, ROTATED).decode(read_record("q2_url_tz_idle.txt"))


@pytest.mark.parametrize("filename", sorted(EXPECTED))
def test_wrong_key_is_bad_signature(filename: str) -> None:
    with pytest.raises(DecodeError) as err:
        Decoder(NAME, "not-the-key").decode(read_record(filename))
    assert err.value.reason == "bad signature"


def test_wrong_name_is_bad_signature() -> None:
    # The name is the salt: another site's records never verify.
    with pytest.raises(DecodeError, match=r"^bad signature$"):
        Decoder("default", SECRET).decode(read_record("q2_url_tz_idle.txt"))


def test_naive_times_read_as_utc(decoder: Decoder) -> None:
    stat = decoder.decode(read_record(NOTZ))
    naive_tob = datetime.fromisoformat(EXPECTED[NOTZ]["tob"])
    assert naive_tob.tzinfo is None
    assert stat.tob == naive_tob.replace(tzinfo=UTC)
    assert stat.tob.utcoffset() == timedelta(0)


def test_naive_times_read_in_site_time_zone() -> None:
    paris = Decoder(NAME, SECRET, time_zone="Europe/Paris").decode(read_record(NOTZ))
    utc = Decoder(NAME, SECRET).decode(read_record(NOTZ))
    assert paris == expected_stat(NOTZ, ZoneInfo("Europe/Paris"))
    # 27 November: Paris is UTC+1, so the same wall time is an hour earlier in UTC.
    assert paris.tob == utc.tob - timedelta(hours=1)
    assert paris.timestamp == utc.timestamp - timedelta(hours=1)
    assert paris.tob.tzinfo is UTC


def test_aware_times_ignore_site_time_zone() -> None:
    raw = read_record("q2_url_tz_idle.txt")
    assert Decoder(NAME, SECRET, time_zone="Asia/Tokyo").decode(raw) == Decoder(
        NAME, SECRET
    ).decode(raw)


def test_properties(decoder: Decoder) -> None:
    stat = decoder.decode(read_record("q2_url_tz_working.txt"))
    assert stat.pool == 2
    assert stat.short_id == stat.cluster_id[-8:]
    assert stat.uptime_s == (stat.timestamp - stat.tob).total_seconds() > 0


def test_module_level_decode() -> None:
    raw = read_record("q2_rotatedB_idle.txt")
    stat = decode(raw, name=NAME, secret_key=SECRET, fallback_keys=[ROTATED])
    assert stat == expected_stat("q2_rotatedB_idle.txt")


def test_decoder_needs_a_key_and_a_name() -> None:
    # An empty key would make Django's Signer fall back to settings.SECRET_KEY.
    with pytest.raises(ValueError):
        Decoder(NAME, "")
    with pytest.raises(ValueError):
        Decoder("", SECRET)


def test_fresh_interpreter_needs_no_settings_and_imports_nothing_named() -> None:
    # In a fresh interpreter: tests here may configure settings or fake modules in this one.
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from django.conf import settings\n"
        "from qwatch.decode import Decoder, DecodeError\n"
        "payloads = Path(sys.argv[1])\n"
        "decoder = Decoder('researchq', sys.argv[2], fallback_keys=[sys.argv[3]])\n"
        "for path in sorted(payloads.iterdir()):\n"
        "    decoder.decode(path.read_bytes())\n"
        "try:\n"
        "    Decoder('researchq', 'wrong').decode((payloads / 'q2_url_tz_idle.txt').read_bytes())\n"
        "except DecodeError as err:\n"
        "    print(err.reason)\n"
        "assert not settings.configured\n"
        # django.utils.functional is loaded by django.core.signing itself, so not checked.
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django_q', 'pytz')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(PAYLOADS), SECRET, ROTATED],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.stdout.splitlines() == ["bad signature", "[]"]


# --- records built here ---------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [3, 4, 5])
@pytest.mark.parametrize("algorithm", ["sha256", "sha1"])
def test_python3_writer(decoder: Decoder, protocol: int, algorithm: str) -> None:
    raw = sign(stat_pickle(state(), protocol=protocol), algorithm=algorithm)
    assert len(raw.rsplit(":", 1)[1]) == {"sha256": 43, "sha1": 27}[algorithm]
    stat = decoder.decode(raw)
    assert stat == ClusterStat(
        name=NAME,
        cluster_id="0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        host="worker-1",
        pid=4099,
        sentinel=4101,
        monitor=4104,
        pusher=4105,
        workers=(4102, 4103),
        status="Idle",
        task_q_size=3,
        done_q_size=0,
        reincarnations=1,
        tob=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        timestamp=datetime(2026, 1, 2, 3, 5, 0, 123456, tzinfo=UTC),
    )
    assert stat.uptime_s == pytest.approx(54.444555)


@pytest.mark.parametrize("algorithm", ["sha256", "sha1"])
def test_python2_writer(decoder: Decoder, algorithm: str) -> None:
    data = py2_stat_pickle(py2_state())
    assert data[:2] == b"\x80\x02"
    stat = decoder.decode(sign(data, algorithm=algorithm))
    assert (stat.cluster_id, stat.pid, stat.status) == ("14147", None, "Working")
    assert stat.tob == datetime(2026, 11, 27, 15, 52, 28, 59881, tzinfo=UTC)
    assert stat.timestamp == datetime(2026, 11, 27, 15, 52, 32, 65535, tzinfo=UTC)


def test_python2_writer_latin1_host(decoder: Decoder) -> None:
    stat = decoder.decode(sign(py2_stat_pickle(py2_state(host="caf\xe9"))))
    assert stat.host == "caf\xe9"


def test_pytz_utc_from_python3_writer(decoder: Decoder) -> None:
    # django-q 1.3 on Django 3.2: aware datetimes carry pytz's UTC.
    fields = state(tob=datetime(2026, 1, 2, 3, 4, 5, tzinfo=PYTZ_UTC))
    data = stat_pickle(fields, protocol=4)
    assert b"pytz" in data
    assert decoder.decode(sign(data)).tob == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_django_q_05_starting(decoder: Decoder) -> None:
    """django-q 0.5: django_q.monitor.Stat, pid as cluster id, None pusher while Starting."""
    fields = py2_state(
        status=py2_lazy("Starting"), pusher=None, monitor=None, workers=[], cluster_id=777
    )
    stat = decoder.decode(sign(py2_stat_pickle(fields, module="django_q.monitor")))
    assert (stat.cluster_id, stat.pusher, stat.monitor, stat.pool) == ("777", None, None, 0)
    assert stat.status == "Starting"
    assert stat.short_id == "777"


def test_django_q_05_from_python3(decoder: Decoder) -> None:
    fields = state(cluster_id=4099, pusher=None, workers=[], status=gettext_lazy("Starting"))
    del fields["pid"]
    data = stat_pickle(fields, protocol=4, class_path="django_q.monitor.Stat")
    stat = decoder.decode(sign(data))
    assert (stat.cluster_id, stat.pid, stat.pusher) == ("4099", None, None)


@pytest.mark.parametrize(
    ("zone", "offset_hours"), [("UTC", 0), ("Europe/Paris", 1), ("America/New_York", -5)]
)
def test_naive_built_record(zone: str, offset_hours: int) -> None:
    fields = state(tob=datetime(2026, 1, 2, 12, 0), timestamp=datetime(2026, 1, 2, 12, 30))
    stat = Decoder(NAME, SECRET, time_zone=zone).decode(sign(stat_pickle(fields)))
    assert stat.tob == datetime(2026, 1, 2, 12, 0, tzinfo=UTC) - timedelta(hours=offset_hours)
    assert stat.uptime_s == 1800


def test_naive_python2_record_in_site_time_zone() -> None:
    fields = py2_state(tob=datetime(2026, 7, 1, 12, 0), timestamp=datetime(2026, 7, 1, 12, 1))
    stat = Decoder(NAME, SECRET, time_zone="Europe/Paris").decode(sign(py2_stat_pickle(fields)))
    assert stat.tob == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)  # summer: UTC+2


def test_aware_non_utc_offset_converted(decoder: Decoder) -> None:
    plus5 = timezone(timedelta(hours=5))
    fields = state(tob=datetime(2026, 1, 2, 8, 0, tzinfo=plus5))
    assert decoder.decode(sign(stat_pickle(fields))).tob == datetime(2026, 1, 2, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize("status", ["Starting", "Idle", "Working", "Stopping", "Stopped"])
def test_every_state(decoder: Decoder, status: str) -> None:
    fields = state(status=gettext_lazy(status))
    assert decoder.decode(sign(stat_pickle(fields))).status == status


def test_plain_str_status(decoder: Decoder) -> None:
    assert decoder.decode(sign(stat_pickle(state(status="Stopped")))).status == "Stopped"


def test_uncompressed_record(decoder: Decoder) -> None:
    raw = sign(stat_pickle(state()), compress=False)
    assert not raw.startswith(".")
    assert decoder.decode(raw).host == "worker-1"


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cache_wrapped_built_record(decoder: Decoder, protocol: int) -> None:
    # Django's RedisCache pickles the (already signed) value once more.
    wrapped = pickle.dumps(sign(stat_pickle(state())), protocol=protocol)
    assert decoder.decode(wrapped).host == "worker-1"


def test_extra_fields_ignored(decoder: Decoder) -> None:
    fields = state(some_future_field=[1, 2, 3])
    assert decoder.decode(sign(stat_pickle(fields))).pool == 2


def test_starting_record_with_zero_pids(decoder: Decoder) -> None:
    fields = state(status=gettext_lazy("Starting"), monitor=0, pusher=0, workers=[])
    stat = decoder.decode(sign(stat_pickle(fields)))
    assert (stat.monitor, stat.pusher, stat.workers) == (0, 0, ())


def test_decode_error_is_a_value_error() -> None:
    err = DecodeError("bad signature")
    assert isinstance(err, ValueError)
    assert str(err) == err.reason == "bad signature"


def test_bytes_and_str_inputs_agree(decoder: Decoder) -> None:
    raw = sign(stat_pickle(state()))
    assert decoder.decode(raw) == decoder.decode(raw.encode())
