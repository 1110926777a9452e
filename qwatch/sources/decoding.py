"""A poll's raw records -> ClusterStats and Skipped, shared by every StatSource.

Each source fetches (key, raw value) pairs its own way; turning them into clusters is the
same everywhere: the Decoder (signature, allow-listed unpickling, fields), the results
remembered by raw value from the last poll, the per-key memo, and the check that a record
sits under its own cluster's key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from qwatch.decode import DecodeError, DecodeMemo, Decoder
from qwatch.values import ClusterStat, Skipped

if TYPE_CHECKING:
    from qwatch.config import Site


# Records decoded between two turns of the event loop: ~7 ms, so that a key pressed in the
# monitor meanwhile is answered within a frame (500 took ~15 ms).
DECODE_SLICE = 250


class PollDecoder:
    """Decodes each poll's records for one site, remembering what the next poll can reuse."""

    def __init__(self, decoder: Decoder) -> None:
        self._decoder = decoder
        # Decoded results by raw value, from the last poll only: a record rewritten with a
        # new timestamp is new bytes, so anything older can never hit again.
        self._decoded: dict[bytes, ClusterStat | str] = {}
        # What the decoder remembers per key: a rewritten record is new bytes, but most
        # often only a few values moved (its timestamp, queue sizes), and its layout did not
        # (record_memo.KeyMemo).
        self._memo: DecodeMemo = {}

    @classmethod
    def for_site(cls, site: Site, decoder: Decoder | None = None) -> PollDecoder:
        """With `decoder`, or one made from the site's name, keys and time zone."""
        if decoder is None:
            decoder = Decoder(site.name, site.secret_key, site.secret_key_fallbacks, site.time_zone)
        return cls(decoder)

    async def decode_all(
        self,
        keys: Sequence[bytes],
        values: Sequence[bytes | None],
        key_id: Callable[[str], str],
    ) -> tuple[list[ClusterStat], list[Skipped]]:
        """Clusters and refusals of one poll; `key_id(name)` is the cluster id the record
        under key `name` must carry. A None value (expired meanwhile) is left out.

        Every DECODE_SLICE records it lets the event loop run: 10,000 new records take a
        quarter of a second to decode, and the monitor's keys must not wait for all of it."""
        clusters: list[ClusterStat] = []
        skipped: list[Skipped] = []
        decoded: dict[bytes, ClusterStat | str] = {}
        for index, (key, raw) in enumerate(zip(keys, values, strict=True)):
            if raw is None:  # expired between listing and reading, or not a string
                continue
            if index % DECODE_SLICE == DECODE_SLICE - 1:
                await asyncio.sleep(0)
            if raw in decoded:
                outcome = decoded[raw]
            else:
                outcome = self._decoded.get(raw) or self._decode(raw, key)
                decoded[raw] = outcome
            name = key.decode("utf-8", "backslashreplace")
            if isinstance(outcome, str):
                skipped.append(Skipped(name, outcome))
                continue
            # Django Q always files a record under its own id; one under another key is a
            # copy (anyone who can write to the store can make one) and would show a
            # cluster twice.
            if outcome.cluster_id != key_id(name):
                skipped.append(Skipped(name, f"record is for cluster {outcome.cluster_id}"))
                continue
            clusters.append(outcome)
        self._decoded = decoded
        if len(self._memo) > len(keys):
            present = set(keys)  # forget the keys that are gone
            self._memo = {k: v for k, v in self._memo.items() if k in present}
        return clusters, skipped

    def _decode(self, raw: bytes, key: bytes) -> ClusterStat | str:
        try:
            return self._decoder.decode(raw, self._memo, key)
        except DecodeError as exc:
            return exc.reason
