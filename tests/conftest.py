"""Shared pytest set-up.  Fixtures live in tests/fixtures/<area>.py, one module per
area, and are loaded here as plugins so every test file can use them."""

import pkgutil
from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{m.name}"
    for m in pkgutil.iter_modules([str(Path(__file__).parent / "fixtures")])
    if not m.name.startswith("_")
)
