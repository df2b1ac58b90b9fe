"""airgap: signed offline bundles for isolated networks.

The public API is small and typed, in the spirit of python-tuf's ``tuf.api``:
errors are raised (see :mod:`airgap.exceptions`), never returned as booleans.
"""

__version__ = "0.1.0"

BUNDLE_FORMAT_VERSION = 1
