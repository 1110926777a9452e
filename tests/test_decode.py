"""The decoder against real captures (tests/fixtures) and records built by hand
(tests/records.py) for the variants the captures lack: every pickle protocol, Python 2
writers, django-q 0.5."""

from __future__ import annotations

import pickle
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.utils.translation import gettext_lazy
from hypothesis import given, settings
from hypothesis import strategies as st

from qwatch.decode import DecodeError, Decoder, decode
from qwatch.decode.signature import KeyedHash, b64_signature
from qwatch.values import ClusterStat
from tests.helpers import CAPTURE_ROTATED_SECRET as ROTATED
from tests.helpers import CAPTURE_SECRET as SECRET
from tests.helpers import CAPTURE_SITE as NAME
from tests.helpers import EXPECTED, PAYLOADS
from tests.records import (
    NOTZ,
    PYTZ_UTC,
    TEXT_CAPTURES,
    py2_lazy,
    py2_stat_pickle,
    py2_state,
    read_record,
    sign,
    stat_pickle,
    state,
)


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


@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(max_size=200),  # longer than a block too: hashed first, as hmac does
    value=st.binary(max_size=2000),
    algorithm=st.sampled_from(["sha256", "sha1"]),
)
def test_keyed_hash_signs_as_hmac_does(key: bytes, value: bytes, algorithm: str) -> None:
    keyed = KeyedHash(key, algorithm)
    assert keyed.b64_signature(value) == b64_signature(key, value, algorithm)
    assert keyed.b64_signature(value) == b64_signature(key, value, algorithm)  # pads unspent
