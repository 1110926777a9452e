"""qwatch.errors: one_line, how any exception is put in a message."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

from qwatch.errors import one_line


def test_one_line() -> None:
    assert one_line(ValueError("bad\nsecond line")) == "bad"
    assert one_line(ValueError("")) == "ValueError"
    assert one_line(ValueError("a   b\tc"), with_type=True) == "ValueError: a b c"
    assert one_line(ValueError(""), with_type=True) == "ValueError"
    assert len(one_line(ValueError("x" * 500))) == 200
    wrapped = sa_exc.OperationalError("SELECT 1", {}, OSError("database is locked"))
    assert one_line(wrapped) == "database is locked"
    assert one_line(wrapped, with_type=True) == "OSError: database is locked"
