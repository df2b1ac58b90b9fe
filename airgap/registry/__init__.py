"""The OCI distribution API client used by build (pull) and import (push).

Public names live here; :mod:`.auth` holds credentials and the rules for where
they may go, :mod:`.client` the requests, :mod:`.push` blob uploads and
:mod:`.limits` the size-scaled deadlines.  Modules starting with ``_`` are
private to the package.
"""

from airgap.oci import DOCKER_LIST as DOCKER_MANIFEST_LIST
from airgap.oci import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from airgap.registry.auth import Origin, auth_file_candidates, read_auth_file
from airgap.registry.client import (
    DEFAULT_ACCEPT,
    DEFAULT_CHUNK_SIZE,
    MANIFEST_CAP,
    BlobRequest,
    Manifest,
    RegistryClient,
    sha256_digest,
)
from airgap.registry.limits import Limits, parse_rate
from airgap.registry.push import BlobUpload, OpenStream, PushResult

__all__ = [
    "DEFAULT_ACCEPT",
    "DEFAULT_CHUNK_SIZE",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "MANIFEST_CAP",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "BlobRequest",
    "BlobUpload",
    "Limits",
    "Manifest",
    "OpenStream",
    "Origin",
    "PushResult",
    "RegistryClient",
    "auth_file_candidates",
    "parse_rate",
    "read_auth_file",
    "sha256_digest",
]
