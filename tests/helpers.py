"""What many test modules share: the real captures, and (below) one helper of each kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The one name for the test data folder: everything a test reads lives in the repository.
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PAYLOADS = FIXTURES / "payloads"
EXPECTED: dict[str, dict[str, Any]] = json.loads((FIXTURES / "expected.json").read_text())

# How the captures were signed (tests/fixtures/README.md).
CAPTURE_SITE = "researchq"
CAPTURE_SECRET = "research-secret-key-q2-0123456789abcdef"
CAPTURE_ROTATED_SECRET = "rotated-new-secret-key-9876543210"  # signs q2_rotatedB_idle.txt
