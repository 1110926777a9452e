"""Cold read: `qwatch status --json` as a whole process, against a `Stat.get_all()` process
and a floor process, all reading the same 10,000 signed records.

A throwaway redis-server is seeded with N realistic django-q2 records (benchmarks/seed.py:
signed by django_q's own SignedPackage, the benchmark site and SECRET_KEY), then, in
rounds, each of these is started as a fresh process, one after the other (interleaved, so
load drifts hit every row alike), and timed from spawn to exit:

- `qwatch status --json` (compact JSON), and the same with `--pretty` (indented);
- `Stat.get_all()`: django-q2's reader, `python -c` under a minimal Django settings module
  (same SECRET_KEY and Q_CLUSTER name, INSTALLED_APPS = ["django_q"], no database):
  django.setup(), KEYS + MGET through redis-py, `SignedPackage.loads` of each record; it
  prints only how many it read (less work than qwatch, which also prints them all);
- floor: this file with `--floor`, the least a Python process can do to read these records:
  stdlib imports only, a RESP client of a dozen lines on a plain socket, SCAN (COUNT 1000)
  for the keys, one MGET, then per record HMAC-SHA256 (the key derived once), base64,
  zlib and an unpickle whose find_class hands out stand-ins (benchmarks/live_read.py's
  floor, in a process of its own); no opcode allow-list, no field checks, no result
  objects, no output but the count;
- `python -c pass`: the interpreter's own start, for scale.

Bytecode is cached (PYTHONPYCACHEPREFIX in the throwaway directory, written by a warm-up
round), as for an installed package. Each process's wall time is spawn to exit, its CPU
time (user + sys) its rusage, its peak RSS /usr/bin/time's. The table gives medians over
the rounds and each row's ratios to get_all and to the floor, in wall time and, steadier on
a shared machine, in CPU time.

Then the decode path alone, in-process: qwatch's one-shot decoder (as `status` runs it)
and the floor's decode on the same records, best of --decode-rounds rounds each.

    .venv/bin/python benchmarks/cold_status.py [-n 10000] [--rounds 5] [--decode-rounds 7]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import floor as floor_decode  # noqa: E402  (stdlib only: fit for the floor)

TARGET_VS_GET_ALL = 8.0  # qwatch status --json at least 8x faster than a get_all process
TARGET_VS_FLOOR = 1.5  # and within 1.5x of the floor


# --------------------------------------------------------------------------- the floor


def _resp_read(stream: Any) -> Any:
    line = stream.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"*":
        return [_resp_read(stream) for _ in range(int(rest))]
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else stream.read(size + 2)[:-2]
    if kind in (b"+", b":"):
        return rest
    raise RuntimeError(f"redis: {line!r}")


def _resp_command(sock: socket.socket, stream: Any, *args: bytes) -> Any:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    sock.sendall(b"".join(parts))
    return _resp_read(stream)


def floor(redis_url: str, name: str, secret_key: str) -> int:
    url = urlsplit(redis_url)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379))
    stream = sock.makefile("rb")
    database = (url.path or "/0").strip("/") or "0"
    _resp_command(sock, stream, b"SELECT", database.encode())
    pattern = f"django_q:{name}:cluster:*".encode()
    keys: list[bytes] = []
    cursor = b"0"
    while True:
        cursor, found = _resp_command(
            sock, stream, b"SCAN", cursor, b"MATCH", pattern, b"COUNT", b"1000"
        )
        keys.extend(found)
        if cursor == b"0":
            break
    key = floor_decode.signing_key(name, secret_key)
    count = 0
    for raw in _resp_command(sock, stream, b"MGET", *keys) if keys else []:
        floor_decode.decode(raw, key)
        count += 1
    sock.close()
    return count


# --------------------------------------------------------------------------- the runs

GET_ALL = (
    "import django; django.setup()\nfrom django_q.status import Stat\nprint(len(Stat.get_all()))\n"
)


def _settings_module(directory: Path, redis_url: str) -> None:
    from benchmarks import seed

    (directory / "cold_settings.py").write_text(
        f"SECRET_KEY = {seed.SECRET_KEY!r}\n"
        f"Q_CLUSTER = {{'name': {seed.SITE!r}, 'redis': {redis_url!r}}}\n"
        "INSTALLED_APPS = ['django_q']\n"
        "DATABASES = {}\n"
        "USE_TZ = True\n"
    )


def _run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int, str]:
    """Wall seconds spawn to exit, CPU seconds (user + sys), peak RSS in KB, stdout.

    The peak RSS is /usr/bin/time's %M: a child's own ru_maxrss keeps the high-water mark of
    the copy of this (large) process it was forked as, before its exec."""
    import subprocess

    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile("r") as rss:
        timed = ["/usr/bin/time", "-f", "%M", "-o", rss.name, *command]
        start = time.perf_counter()
        process = subprocess.Popen(timed, stdout=out, stderr=subprocess.PIPE, env=env, cwd=cwd)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        assert process.stderr is not None
        errors = process.stderr.read().decode(errors="replace")
        process.stderr.close()
        if process.returncode != 0:
            raise RuntimeError(f"{command[:4]} exited {process.returncode}: {errors[-500:]}")
        out.seek(0)
        text = out.read().decode()
        peak_kb = int(rss.read().split()[-1])
    return wall, usage.ru_utime + usage.ru_stime, peak_kb, text


def _check(row: str, text: str, n: int) -> None:
    import json

    if row.startswith("qwatch"):
        document = json.loads(text)
        if len(document["clusters"]) != n or document["skipped"]:
            raise RuntimeError(f"{row} read {len(document['clusters'])} of {n}")
    elif row != "python -c pass" and int(text) != n:
        raise RuntimeError(f"{row} read {text.strip()} of {n}")


def measure(n: int, rounds: int) -> tuple[dict[str, list[tuple[float, float, int]]], str]:
    import redis

    from benchmarks import seed

    python = sys.executable
    results: dict[str, list[tuple[float, float, int]]] = {}
    with seed.redis_server() as server, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)  # no qwatch.toml here: settings come from the flags and env alone
        seed.configure_django(server.url)
        specs = seed.make_specs(n)
        values = seed.make_values(specs, variants=1)
        with redis.Redis.from_url(server.url) as client:
            seed.write_round(client, specs, values, 0, ttl_s=3600)
        _settings_module(work, server.url)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("QWATCH_", "DJANGO_")) and k != "PYTHONDONTWRITEBYTECODE"
        }
        # Bytecode cached (by the warm-up round) as an installed package has it, but under
        # the throwaway directory: an editable checkout would otherwise be compiled on
        # every start where PYTHONDONTWRITEBYTECODE is set, a fifth of qwatch's run.
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        qwatch_env = env | {"QWATCH_SECRET_KEY": seed.SECRET_KEY, "HOME": str(work)}
        django_env = env | {"DJANGO_SETTINGS_MODULE": "cold_settings", "PYTHONPATH": str(work)}
        status = [python, "-m", "qwatch", "status", "--json", "--redis", server.url]
        status += ["--name", seed.SITE]
        floor_cmd = [python, str(Path(__file__).resolve()), "--floor", server.url]
        floor_cmd += ["--site", seed.SITE]
        rows: list[tuple[str, list[str], dict[str, str]]] = [
            ("python -c pass", [python, "-c", "pass"], env),
            ("floor", floor_cmd, qwatch_env),
            ("qwatch status --json", status, qwatch_env),
            ("qwatch status --json --pretty", [*status, "--pretty"], qwatch_env),
            ("Stat.get_all() process", [python, "-c", GET_ALL], django_env),
        ]
        for row, command, row_env in rows:  # a warm-up round: page cache, .pyc files
            _check(row, _run(command, row_env, work)[3], n)
        for _ in range(rounds):
            for row, command, row_env in rows:
                wall, cpu, rss, text = _run(command, row_env, work)
                _check(row, text, n)
                results.setdefault(row, []).append((wall, cpu, rss))
    return results, seed.machine()


def table(results: dict[str, list[tuple[float, float, int]]]) -> str:
    def med(row: str, index: int) -> float:
        return statistics.median(sample[index] for sample in results[row])

    get_all, floor_wall = med("Stat.get_all() process", 0), med("floor", 0)
    get_all_cpu, floor_cpu = med("Stat.get_all() process", 1), med("floor", 1)
    lines = [
        "| process | wall s (median) | wall s (min-max) | CPU s | peak RSS MB "
        "| get_all ÷ this | this ÷ floor | get_all ÷ this (CPU) | this ÷ floor (CPU) |",
        "|" + "---|" * 9,
    ]
    for row, samples in results.items():
        walls = [s[0] for s in samples]
        wall = med(row, 0)
        lines.append(
            f"| {row} | {wall:.3f} | {min(walls):.3f}-{max(walls):.3f} | {med(row, 1):.3f} "
            f"| {med(row, 2) / 1024:.0f} | {get_all / wall:.1f}x | {wall / floor_wall:.2f}x "
            f"| {get_all_cpu / med(row, 1):.1f}x | {med(row, 1) / floor_cpu:.2f}x |"
        )
    return "\n".join(lines)


def decode_path(n: int, rounds: int) -> tuple[float, float]:
    """The decode path alone, in this process: µs a record for qwatch's one-shot decoder
    (as `status` runs it: `remember=False`, the layouts and fleet bases shared by all keys,
    cleared before each round so each round pays for its first records of each shape) and
    for the floor's decode, on the same N records; the best of `rounds` rounds each."""
    from django.conf import settings

    from benchmarks import seed
    from qwatch.decode import Decoder
    from qwatch.decode.memo import DecodeMemo, forget_shared

    if not settings.configured:  # the site's SECRET_KEY, to sign; no Redis is used here
        seed.configure_django("redis://127.0.0.1:1/0")
    records = [variants[0] for variants in seed.make_values(seed.make_specs(n), variants=1)]
    raw = [r if isinstance(r, bytes) else r.encode() for r in records]
    decoder = Decoder(seed.SITE, seed.SECRET_KEY, remember=False)
    key = floor_decode.signing_key(seed.SITE, seed.SECRET_KEY)
    best_qwatch = best_floor = float("inf")
    for _ in range(rounds):
        forget_shared()
        memo: DecodeMemo = {}
        start = time.perf_counter()
        for index, record in enumerate(records):
            decoder.decode(record, memo, index)
        best_qwatch = min(best_qwatch, time.perf_counter() - start)
        start = time.perf_counter()
        for record in raw:
            floor_decode.decode(record, key)
        best_floor = min(best_floor, time.perf_counter() - start)
    return best_qwatch / n * 1e6, best_floor / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="qwatch status --json, cold, as a process")
    parser.add_argument("-n", type=int, default=10_000, help="records (default 10,000)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--decode-rounds", type=int, default=7, help="in-process rounds")
    parser.add_argument("--floor", metavar="REDIS_URL", help=argparse.SUPPRESS)
    parser.add_argument("--site", default="bench", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor:  # the floor process itself
        print(floor(args.floor, args.site, os.environ["QWATCH_SECRET_KEY"]))
        return 0
    sys.path.insert(0, str(ROOT))
    results, machine = measure(args.n, args.rounds)
    print(f"machine: {machine}; N = {args.n:,}, {args.rounds} rounds, interleaved")
    print(table(results))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    status = statistics.median(s[0] for s in results["qwatch status --json"])
    get_all = statistics.median(s[0] for s in results["Stat.get_all() process"])
    floor_wall = statistics.median(s[0] for s in results["floor"])
    if get_all / status < TARGET_VS_GET_ALL:
        print(f"target missed: {get_all / status:.1f}x get_all (wanted {TARGET_VS_GET_ALL}x)")
    if status / floor_wall > TARGET_VS_FLOOR:
        print(f"target missed: {status / floor_wall:.2f}x the floor (wanted {TARGET_VS_FLOOR}x)")
    qwatch_us, floor_us = decode_path(args.n, args.decode_rounds)
    print(f"\ndecode path in-process, best of {args.decode_rounds} rounds of {args.n:,} records:")
    print("| decoder | µs a record | this ÷ floor |\n|---|---|---|")
    print(f"| floor | {floor_us:.2f} | 1.00x |")
    print(f"| qwatch (one-shot, as status) | {qwatch_us:.2f} | {qwatch_us / floor_us:.2f}x |")
    verdict = "met" if qwatch_us / floor_us <= TARGET_VS_FLOOR else "missed"
    print(f"decode path within {TARGET_VS_FLOOR}x of the floor: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
