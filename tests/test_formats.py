"""The one digest spelling and the one time format: exact shapes, nothing near them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from airgap import oci
from airgap._internal import digest, timefmt
from airgap.exceptions import FormatError

HEX = "ab" * 32


@pytest.mark.parametrize("bad", [HEX + "\n", HEX.upper(), HEX[:-1], HEX + "0", " " + HEX, None, 7])
def test_hex_is_exactly_64_lower_case_digits(bad):
    assert digest.is_hex(HEX)
    assert not digest.is_hex(bad)
    assert not digest.is_digest(None if bad is None else f"sha256:{bad}")


def test_digest_parse_and_format_round_trip():
    assert digest.from_hex(HEX) == f"sha256:{HEX}"
    assert digest.hex_of(f"sha256:{HEX}") == HEX
    for bad in (f"sha512:{HEX}", f"sha256:{HEX}\n", HEX):
        with pytest.raises(ValueError):
            digest.hex_of(bad)
    with pytest.raises(ValueError):
        digest.from_hex(HEX + "\n")


def test_oci_refuses_a_trailing_newline_in_digest_and_media_type():
    """``^...$`` with ``match`` accepted ``sha256:<hex>\\n``; ``\\Z`` does not."""
    good = {"mediaType": oci.OCI_MANIFEST,
            "digest": f"sha256:{HEX}", "size": 1}
    assert oci.Descriptor.parse(good, "index.json", "manifests[0]").digest == f"sha256:{HEX}"
    with pytest.raises(FormatError, match="not 64 lower-case hex"):
        oci.check_digest(f"sha256:{HEX}\n", "index.json")
    with pytest.raises(FormatError, match="not a valid media type"):
        oci.Descriptor.parse({**good, "mediaType": good["mediaType"] + "\n"}, "index.json", "manifests[0]")


def test_time_format_round_trip_and_utc():
    t = datetime(2027, 11, 23, 1, 2, 3, 999, tzinfo=timezone(timedelta(hours=2)))
    assert timefmt.format_time(t) == "2027-11-22T23:02:03Z"
    assert timefmt.to_datetime("2027-11-22T23:02:03Z") == t.replace(microsecond=0)
    assert timefmt.parse_time("2027-11-22T23:02:03Z", "trust.json").tzinfo is UTC
    with pytest.raises(TypeError):
        timefmt.format_time(datetime(2027, 1, 1))  # naive: refused, never guessed


@pytest.mark.parametrize("bad", ["2027-1-2T3:4:5Z", "2027-11-22T23:02:03", "2027-11-22T23:02:03+00:00",
                                 "2027-11-22 23:02:03Z", "2027-11-22T23:02:03.5Z", "2027-11-22T23:02:03Z\n"])
def test_time_shapes_near_the_format_are_refused(bad):
    """``strptime`` alone takes ``2027-1-2T3:4:5Z``: a second spelling of one instant in signed bytes."""
    with pytest.raises(ValueError):
        timefmt.to_datetime(bad)
    with pytest.raises(FormatError, match="RFC 3339 UTC"):
        timefmt.parse_time(bad, "trust.json")


def test_time_that_does_not_exist_is_named():
    with pytest.raises(FormatError, match="not a valid date and time"):
        timefmt.parse_time("2027-02-30T00:00:00Z", "trust.json")
