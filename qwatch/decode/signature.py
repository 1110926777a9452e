"""Django's signed-value format: verifying a record's signature and timestamp, and its base64.

`Verifier.unsign` gives the verdict of `django.core.signing.TimestampSigner.unsign` (with
the site's keys, sha256 or sha1 by the signature's length, no max_age), as a DecodeError.

The fast path: Django's `salted_hmac` hashes `salt + "signer" + secret` into the HMAC key on
every call; `Verifier` derives each key once, keys an HMAC with it once, and per record
copies the hashes of that key's pads (`KeyedHash`). It is safe because it is used only
for a key derivation that reproduces Django's own `Signer.signature` for a probe value at
construction; if a Django version ever derives keys otherwise, the Verifier falls back to
Django's signers rather than refusing every record.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

from django.core.signing import BASE62_ALPHABET, BadSignature, Signer, TimestampSigner
from django.utils.encoding import force_bytes

from qwatch.errors import DecodeError

# Signature length -> hash: Django >= 3.1 signs with sha256, older Django (or
# DEFAULT_HASHING_ALGORITHM = 'sha1') with sha1; both in unpadded base64.
ALGORITHM_BY_SIG_LEN = {43: "sha256", 27: "sha1"}
MAX_TIMESTAMP_LEN = 12  # base62 seconds; bounded so checking one stays cheap

# Map the urlsafe alphabet to the standard one and make "+" and "/" invalid, so that strict
# decoding refuses anything Django's urlsafe encoder could not have written.
_B64URL = bytes.maketrans(b"-_+/", b"+/!!")


def b64decode(text: str) -> bytes:
    """django.core.signing.b64_decode, refusing what its encoder could never have written."""
    try:
        data = text.encode("ascii").translate(_B64URL)
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error):
        raise DecodeError("bad base64") from None


def b64_signature(hmac_key: bytes, value: bytes, algorithm: str) -> bytes:
    # django.core.signing.b64_encode: urlsafe base64 without padding.
    return base64.urlsafe_b64encode(hmac.digest(hmac_key, value, algorithm)).rstrip(b"=")


class KeyedHash:
    """HMAC (RFC 2104) with its key's two pads hashed once: per value, a copy of each and two
    updates, all in C. hmac.HMAC.copy() does the same through four Python methods, a third
    of the cost of verifying a record's signature. Used only where it reproduces
    `hmac.digest` for a probe value (Verifier checks at construction)."""

    __slots__ = ("inner", "outer")

    def __init__(self, key: bytes, algorithm: str) -> None:
        new = getattr(hashlib, algorithm)
        block = new().block_size
        if len(key) > block:
            key = new(key).digest()
        key = key.ljust(block, b"\0")
        self.inner = new(key.translate(hmac.trans_36))
        self.outer = new(key.translate(hmac.trans_5C))

    def b64_signature(self, value: bytes) -> bytes:
        """b64_signature of `value` with this key."""
        inner = self.inner.copy()
        inner.update(value)
        outer = self.outer.copy()
        outer.update(inner.digest())
        return base64.urlsafe_b64encode(outer.digest()).rstrip(b"=")


def derive_hmac_keys(name: str, keys: Sequence[str], algorithm: str) -> tuple[bytes, ...] | None:
    """The HMAC keys Django's `Signer(key, salt=name, algorithm)` derives, one per secret:
    `salted_hmac(name + "signer", value, key, algorithm)` hashes `salt + secret` into the key
    on every call; deriving it once saves most of the cost of verifying a record.

    None unless signatures made with them equal Django's own for a probe value, so a Django
    that derives keys differently falls back to its Signer instead of refusing every record.
    """
    salt = force_bytes(name + "signer")
    derived = tuple(getattr(hashlib, algorithm)(salt + force_bytes(key)).digest() for key in keys)
    probe = "qwatch:self-check"
    for key, hmac_key in zip(keys, derived, strict=True):
        theirs = Signer(key=key, salt=name, algorithm=algorithm, fallback_keys=[]).signature(probe)
        if theirs.encode() != b64_signature(hmac_key, probe.encode(), algorithm):
            return None
    return derived


def check_b62(text: str) -> None:
    """Raise as django.core.signing.b62_decode would (IndexError, ValueError), without
    computing the number: one optional "-", then base62 digits only ("-" alone passes)."""
    if not text:
        raise IndexError("empty base62 number")
    if (text[1:] if text[0] == "-" else text).strip(BASE62_ALPHABET):
        raise ValueError("not a base62 number")


class Verifier:
    """Checks one site's signed values; build once per site (it derives the keys)."""

    __slots__ = ("_fast", "_signers")

    def __init__(self, name: str, secret_key: str, fallback_keys: Sequence[str]) -> None:
        # Django's signers, for the verdict wherever the derived keys do not match Django.
        self._signers = {
            sig_len: TimestampSigner(
                key=secret_key, salt=name, algorithm=algorithm, fallback_keys=list(fallback_keys)
            )
            for sig_len, algorithm in ALGORITHM_BY_SIG_LEN.items()
        }
        # Signature length -> an HMAC keyed with each derived key, where the fast path
        # matches Django.
        self._fast: dict[int, tuple[KeyedHash, ...]] = {}
        for sig_len, algorithm in ALGORITHM_BY_SIG_LEN.items():
            derived = derive_hmac_keys(name, [secret_key, *fallback_keys], algorithm)
            if derived is None:
                continue
            keyed = tuple(KeyedHash(key, algorithm) for key in derived)
            probe = b"qwatch:self-check"
            if all(
                mac.b64_signature(probe) == b64_signature(key, probe, algorithm)
                for mac, key in zip(keyed, derived, strict=True)
            ):
                self._fast[sig_len] = keyed

    def unsign(self, text: str) -> str:
        """The signed payload (what precedes the timestamp), or DecodeError "bad signature"
        or "bad timestamp"."""
        sig_sep = text.rfind(":")
        sig_len = len(text) - sig_sep - 1
        signer = self._signers.get(sig_len)
        if sig_sep < 0 or signer is None:
            raise DecodeError("bad signature")
        if sig_sep - text.rfind(":", 0, sig_sep) - 1 > MAX_TIMESTAMP_LEN:
            raise DecodeError("bad timestamp")
        fast = self._fast.get(sig_len)
        try:
            if fast is None:
                unsigned: str = signer.unsign(text)  # Django publishes no types
                return unsigned
            # TimestampSigner.unsign, with the keys derived once: the signature over
            # everything before the last ":", by any of the keys; then the base62 time.
            value = text[:sig_sep]
            message, signature = value.encode(), text[sig_sep + 1 :].encode()  # force_bytes
            for keyed in fast:
                if hmac.compare_digest(signature, keyed.b64_signature(message)):
                    break
            else:
                raise BadSignature("signature does not match")
            payload, timestamp = value.rsplit(":", 1)
            check_b62(timestamp)
            return payload
        except BadSignature:
            raise DecodeError("bad signature") from None
        except (ValueError, IndexError):  # signed, but the base62 time is not a number
            raise DecodeError("bad timestamp") from None
