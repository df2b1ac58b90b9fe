"""Every size and count limit of the bundle format, in one place.

``build`` refuses what ``verify`` would refuse, with the reason, because both
read these numbers (and the manifest schema's ``maxItems`` are set from them
when the schema is loaded).  A limit that only one side knew would let a
builder make a bundle nobody can ever verify.

The signatures cap is derived, not chosen: a DSSE envelope over the largest
manifest the format allows, carrying the most signatures a policy can count,
must fit, so any manifest ``build`` writes can be countersigned by every signer
a policy can name.
"""

from __future__ import annotations

MiB = 1024 * 1024

# The manifest: one canonical-JSON document read whole into memory.
MAX_MANIFEST_BYTES = 16 * MiB
# Tar members between manifest.json and signatures.json.
MAX_MEMBERS = 50_000
MAX_IMAGES = 10_000
# One member (a layer, a file): 1 TiB.
MAX_MEMBER_BYTES = 1 << 40
# Blobs a differential bundle may leave out (present at its base).
MAX_EXTERNAL_BLOBS = 100_000

# Every OCI document a bundle carries (index.json, image manifests and indexes,
# configs read to learn a platform): the distribution spec's recommended limit.
MAX_DOCUMENT_BYTES = 4 * MiB

# Media parts: at most this many (five-digit part numbers), listed in an index of at most this size.
MAX_PARTS = 99_999
MAX_PART_INDEX_BYTES = 16 * MiB

# Signatures in one envelope: a policy role names at most 64 keys, and every
# signature on a bundle must count (airgap.trust), so 64 is the most a bundle can carry.
MAX_SIGNATURES = 64
# An ed25519 signature is 64 bytes (88 in base64); with its 64-hex keyid and the
# JSON around it one entry takes 174 bytes; 256 leaves room.
_SIGNATURE_ENTRY_BYTES = 256
# The envelope's fixed JSON text and payloadType.
_ENVELOPE_OVERHEAD_BYTES = 1024


def base64_size(n: int) -> int:
    return 4 * ((n + 2) // 3)


def envelope_size_bound(payload_bytes: int, signatures: int) -> int:
    """An upper bound on the canonical DSSE envelope over *payload_bytes* with *signatures*."""
    return base64_size(payload_bytes) + signatures * _SIGNATURE_ENTRY_BYTES + _ENVELOPE_OVERHEAD_BYTES


MAX_SIGNATURES_BYTES = envelope_size_bound(MAX_MANIFEST_BYTES, MAX_SIGNATURES)

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_EXTERNAL_BLOBS",
    "MAX_IMAGES",
    "MAX_MANIFEST_BYTES",
    "MAX_MEMBERS",
    "MAX_MEMBER_BYTES",
    "MAX_PARTS",
    "MAX_PART_INDEX_BYTES",
    "MAX_SIGNATURES",
    "MAX_SIGNATURES_BYTES",
    "envelope_size_bound",
]
