"""Pure: a Django Q status record (bytes from Redis or a cache) -> ClusterStat, or DecodeError.

The chain, in the order a record meets it:

    record.py       Decoder: the raw value, then each layer below, then every field
    signature.py    Django's TimestampSigner check, with the HMAC keys derived once
    safe_pickle.py  allow-listed unpickling: inert stand-ins, the opcode allow-list walk
    memo.py         per-key memo: a rewrite that moved only values is rebuilt without unpickling
    pickle_flow.py  which bytes of a Stat pickle make one field's value and nothing else

No I/O, and nothing in a record is ever imported, called or executed.
"""

from __future__ import annotations

from qwatch.decode.memo import DecodeMemo
from qwatch.decode.record import MAX_PICKLE_BYTES, MAX_RECORD_BYTES, Decoder, decode
from qwatch.errors import DecodeError
from qwatch.values import ClusterStat

__all__ = [
    "MAX_PICKLE_BYTES",
    "MAX_RECORD_BYTES",
    "ClusterStat",
    "DecodeError",
    "DecodeMemo",
    "Decoder",
    "decode",
]
