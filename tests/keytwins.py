"""Two Ed25519 keys whose keyids share their first 9 hex digits.

Found once by a birthday search over seeds sha256(b"airgap-keyid-collision-<n>")
(about 110 000 keys, 4 s), so tests of ambiguous short keyids run on real keys:
9aa356b167d7e809…  and  9aa356b1694f5338…  (they differ at the 10th digit).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from airgap.keys import KDF_MIN, SigningKey, public_file_bytes

_SEEDS = (23009, 109183)
COMMON_PREFIX = "9aa356b16"


def twin_key(i: int) -> SigningKey:
    seed = hashlib.sha256(b"airgap-keyid-collision-%d" % _SEEDS[i]).digest()
    key = SigningKey(seed, f"twin-{i}")
    assert key.keyid.startswith(COMMON_PREFIX)
    return key


def pub_file(directory: Path, key: SigningKey) -> Path:
    path = directory / f"{key.name}.pub"
    path.write_bytes(public_file_bytes(key.public_key))
    return path


def key_file(directory: Path, key: SigningKey, passphrase: str = "test") -> Path:
    path = directory / f"{key.name}.key"
    key.save(path, passphrase, kdf_limits=KDF_MIN, overwrite=True)
    return path
