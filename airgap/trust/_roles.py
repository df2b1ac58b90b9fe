"""Names, caps and spellings of the trust policy that every module of :mod:`airgap.trust` shares."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALL_ROLES", "ARTIFACT", "BUNDLE_ROLES", "DISJOINT_ROLES", "MAX_POLICY_SIZE", "NAME", "OPTIONAL_ROLES",
    "POLICY_TYPE", "ROLE_NAMES", "SIG_HEX", "SPEC_VERSION", "Role",
]

POLICY_TYPE = "airgap-trust"
SPEC_VERSION = "1.0"
ROLE_NAMES = ("root", "builder", "officer")
# Roles a policy may leave out; without one, nothing that role signs is accepted.
OPTIONAL_ROLES = ("toolkit",)
ALL_ROLES = ROLE_NAMES + OPTIONAL_ROLES
BUNDLE_ROLES = ("builder", "officer")
# Pairs of roles that may never share a key, and why (for the message).
DISJOINT_ROLES = (
    ("builder", "officer", "four eyes needs distinct keys"),
    ("builder", "toolkit", "a builder must not approve the toolkit that verifies its bundles"),
)
ARTIFACT = "trust.json"
MAX_POLICY_SIZE = 1024 * 1024

SIG_HEX = re.compile(r"[0-9a-f]{128}\Z")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


@dataclass(frozen=True)
class Role:
    """A role: the keyids allowed to sign for it and how many distinct keys must."""

    keyids: tuple[str, ...]
    threshold: int

    def to_dict(self) -> dict[str, Any]:
        return {"keyids": list(self.keyids), "threshold": self.threshold}
