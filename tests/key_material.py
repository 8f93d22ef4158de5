"""The key material a leak scan looks for besides the secret itself: its HMAC pad keys."""

from __future__ import annotations

import hashlib

BLOCK_SIZE = 64  # SHA-256's block size in bytes


def hmac_pads(secret: str) -> tuple[str, str]:
    """The inner and outer HMAC-SHA256 pad keys of ``secret`` as hex.

    HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)): whoever holds a pad key can compute
    pseudonyms, so no output may contain one either.
    """
    key = secret.encode()
    if len(key) > BLOCK_SIZE:
        key = hashlib.sha256(key).digest()
    key = key.ljust(BLOCK_SIZE, b"\0")
    return bytes(b ^ 0x36 for b in key).hex(), bytes(b ^ 0x5C for b in key).hex()
