import pytest

from airgap.exceptions import InputError
from airgap.reference import (
    Reference,
    internal_name,
    internal_reference,
    parse_reference,
)

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "text, expected",
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/busybox", "docker.io/library/busybox:latest"),
        ("registry-1.docker.io/bitnami/nginx:1", "docker.io/bitnami/nginx:1"),
        ("bitnami/nginx", "docker.io/bitnami/nginx:latest"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/app:v1", "localhost:5000/app:v1"),
        ("127.0.0.1:5000/pilot/status:1.0", "127.0.0.1:5000/pilot/status:1.0"),
        ("quay.io/prometheus/node-exporter:v1.7.0", "quay.io/prometheus/node-exporter:v1.7.0"),
        (f"busybox@{D}", f"docker.io/library/busybox@{D}"),
        (f"ghcr.io/a/b:1.0@{D}", f"ghcr.io/a/b:1.0@{D}"),
        ("a.b/c__d/e-f.g_h", "a.b/c__d/e-f.g_h:latest"),
    ],
)
def test_normalisation_and_round_trip(text, expected):
    ref = parse_reference(text)
    assert str(ref) == expected
    assert parse_reference(str(ref)) == ref


def test_fields():
    ref = parse_reference(f"127.0.0.1:5000/pilot/status:1.0@{D}")
    assert ref == Reference("127.0.0.1:5000", "pilot/status", "1.0", D)
    assert ref.name == "127.0.0.1:5000/pilot/status"
    assert ref.reference == D
    assert parse_reference("x.io/a:t").reference == "t"
    assert parse_reference("x.io/a").with_digest(D).digest == D


@pytest.mark.parametrize(
    "text",
    [
        "",
        " busybox",
        "Busybox",
        "docker.io/Library/busybox",
        "busybox:",
        "busybox:-tag",
        "busybox@sha256:" + "AB" * 32,  # upper-case hex
        "busybox@sha256:abc",  # short
        "busybox@sha512:" + "ab" * 64,  # other algorithm
        "busybox@md5:" + "ab" * 16,
        "busybox@",
        "x.io//a",
        "x.io/a/",
        "x.io:99999/a",
        "x.io/" + "a" * 300,
        "host:5000/",
    ],
)
def test_invalid_references_name_the_input(text):
    with pytest.raises(InputError) as exc:
        parse_reference(text)
    if text.strip():
        assert text.strip()[:20] in str(exc.value)


def test_invalid_digest_message():
    with pytest.raises(InputError, match=r"busybox@sha256:AB.*only sha256"):
        parse_reference("busybox@sha256:" + "AB" * 32)


def test_internal_name_replaces_port_colon():
    ref = parse_reference("127.0.0.1:5000/pilot/status:1.0")
    assert internal_name(ref, "registry.pilot.internal:5000") == "registry.pilot.internal:5000/127.0.0.1_5000/pilot/status"
    moved = internal_reference(ref.with_digest(D), "registry.pilot.internal:5000")
    assert str(moved) == f"registry.pilot.internal:5000/127.0.0.1_5000/pilot/status:1.0@{D}"
    # The internal reference is itself a valid reference.
    assert parse_reference(str(moved)) == moved
    assert internal_name(parse_reference("busybox"), "reg.internal") == "reg.internal/docker.io/library/busybox"
    assert internal_name(parse_reference("Quay.IO/a/b"), "reg.internal") == "reg.internal/quay.io/a/b"


def test_internal_name_rejects_bad_registry():
    with pytest.raises(InputError):
        internal_name(parse_reference("busybox"), "not a host")
    with pytest.raises(InputError):
        internal_name(parse_reference("busybox"), "nodots")
