"""Django's own cache backends, run in a fresh Python, to write what the cache readers read.

`django_cache_run(caches, body)` configures Django with only `caches` (its CACHES setting),
runs `body` with `cache = caches["default"]` and `pickle` in scope, and returns what the
body put in `result` (through JSON).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

_PRELUDE = """
import json, pickle, sys
import django
from django.conf import settings
settings.configure(CACHES=json.loads(sys.argv[1]))
django.setup()
from django.core.cache import caches
cache = caches["default"]
result = None
"""


def django_cache_run(caches: dict[str, dict[str, Any]], body: str) -> Any:
    source = f"{_PRELUDE}\n{body}\nprint(json.dumps(result))\n"
    done = subprocess.run(
        [sys.executable, "-c", source, json.dumps(caches)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"Django cache script failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


# Writes `count` list values (like Django Q's index of record keys) and one str (like a
# signed record); result: made key -> [kind, hex of pickle.dumps(value, HIGHEST) or of the
# text's UTF-8].
WRITE_VALUES = """
count = int({count})
values = {{f"rec{{i}}": [f"django_q:site:cluster:{{i}}", i, {{"n": i}}] for i in range(count)}}
values["text"] = "a signed record: é"
failed = cache.set_many(values, {timeout})
assert not failed, failed
result = {{}}
for key, value in values.items():
    if isinstance(value, str):
        result[cache.make_key(key)] = ["text", value.encode().hex()]
    else:
        result[cache.make_key(key)] = ["pickle", pickle.dumps(value, pickle.HIGHEST_PROTOCOL).hex()]
"""


def write_values(caches: dict[str, dict[str, Any]], count: int, timeout: int = 60) -> Any:
    return django_cache_run(caches, WRITE_VALUES.format(count=count, timeout=timeout))
