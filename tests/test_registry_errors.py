"""Registry errors that say the fix, and retries only where a retry helps (issue 11).

Attempts are counted from the server's own log (or the ``--debug`` request
log), never from the clock.
"""

from __future__ import annotations

import sys

import pytest

from airgap.exceptions import RegistryError, UnreachableError
from airgap.registry import Limits, RegistryClient
from tests.fixtures.hostile import HostileRegistry, reply
from tests.fixtures.images import build_oci_layout, pilot_images, push_layout
from tests.fixtures.registry import free_port, start_registry
from tests.helpers import REPO, airgap, write_spec

CREATED = "2026-11-01T00:00:00Z"
pytestmark = pytest.mark.usefixtures("isolated_auth_files")


def build(tmp_path, ref: str, keyring, *extra):
    spec = write_spec(tmp_path / "spec", images=[ref], files=[])
    return airgap("build", spec, "-o", tmp_path / "b.tar", "--key", keyring.key_path("builder-1"),
                  "--created", CREATED, *extra)


def client(reg, **kw) -> RegistryClient:
    return RegistryClient(reg.host, backoff=0.01, limits=Limits(floor=10), **kw)


def error_line(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if not x.startswith("airgap: debug: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def requests_logged(err: str) -> list[str]:
    """The requests ``--debug`` says were sent (one line per exchange)."""
    return [x for x in err.splitlines() if x.startswith("airgap: debug: GET ") or x.startswith("airgap: debug: HEAD ")]


# --------------------------------------------------------------------------- TLS and plain HTTP


def test_https_to_a_plain_http_registry_says_add_plain_http(tmp_path, keyring, registry, hostile):
    r = build(tmp_path, f"{registry.host}/pilot/status:1.0", keyring)
    assert r.code == 1
    assert error_line(r.err).startswith("airgap: server gave HTTP response to HTTPS client (GET manifest ")
    assert f"if {registry.host} is a plain-HTTP registry, add --plain-http" in r.err
    # Not retried: one connection reached the server.
    with pytest.raises(UnreachableError, match="server gave HTTP response to HTTPS client"):
        client(hostile).get_manifest("pilot/app", "1.0")
    assert hostile.connections == 1


@pytest.fixture
def tls_registry(tmp_path, test_ca):
    reg = start_registry(tmp_path / "tls-registry", tls=(test_ca.cert_pem, test_ca.key_pem))
    layout = tmp_path / "layout"
    build_oci_layout(layout, {"status": pilot_images()["status"]})
    push_layout(layout, "status", reg.host, "pilot/status", dest_tag="1.0")
    yield reg
    reg.stop()


def test_a_tls_registry_names_plain_http_and_ca_file(tmp_path, keyring, test_ca, tls_registry):
    ref = f"{tls_registry.host}/pilot/status:1.0"
    r = build(tmp_path, ref, keyring, "--plain-http")
    assert r.code == 1
    assert f"{tls_registry.host} answered plain HTTP with TLS (GET manifest {ref}): it is an HTTPS registry; " \
           "drop --plain-http" in error_line(r.err)
    r = build(tmp_path, ref, keyring)
    assert r.code == 1
    assert f"TLS certificate of {tls_registry.host} is not trusted" in error_line(r.err)
    assert "give --ca-file CA.pem" in r.err
    r = build(tmp_path, ref, keyring, "--ca-file", test_ca.ca_pem)
    assert r.code == 0, r.err
    r = build(tmp_path, ref, keyring, "--ca-file", tmp_path / "missing.pem", "--force")
    assert r.code == 2 and "missing.pem: no such CA file (--ca-file)" in error_line(r.err)


def test_a_tls_server_hanging_up_on_plain_http_is_named(test_ca):
    with HostileRegistry(test_ca) as reg:
        with pytest.raises(RegistryError, match=rf"if {reg.host} serves HTTPS, drop --plain-http"):
            client(reg, plain_http=True, retries=1).get_manifest("pilot/app", "1.0")
        assert reg.connections == 2  # a hang-up may be a stale connection: retried, within the limit


# --------------------------------------------------------------------------- refused, DNS


def test_connection_refused_fails_at_once_with_the_address(tmp_path, keyring):
    host = f"127.0.0.1:{free_port()}"
    r = airgap("--debug", "build", write_spec(tmp_path / "spec", images=[f"{host}/pilot/app:1.0"], files=[]),
               "-o", tmp_path / "b.tar", "--key", keyring.key_path("builder-1"), "--plain-http")
    assert r.code == 1
    line = error_line(r.err)
    assert line.startswith(f"airgap: {host}: connection refused (GET manifest {host}/pilot/app:1.0): nothing listens "
                           f"on 127.0.0.1 port {host.rsplit(':', 1)[1]}; check the registry address")
    assert len(requests_logged(r.err)) == 1  # no retry loop for a refused connection
    assert not (tmp_path / "b.tar").exists()


def test_a_dns_failure_names_the_host(tmp_path, keyring, netns):
    spec = write_spec(tmp_path / "spec", images=["registry.invalid/pilot/app:1.0"], files=[])
    proc = netns.run(sys.executable, "-m", "airgap", "--debug", "build", spec, "-o", tmp_path / "b.tar",
                     "--key", keyring.key_path("builder-1"), env={"AIRGAP_PASSPHRASE": "test"})
    assert proc.returncode == 1
    assert error_line(proc.stderr).startswith("airgap: registry.invalid: cannot resolve the host name (")
    assert "check the registry name and this machine's DNS" in proc.stderr
    assert len(requests_logged(proc.stderr)) == 1


def test_the_readme_build_without_a_source_registry_says_what_to_set(tmp_path, keyring, netns):
    """The README's build command, as written, where nothing listens on 127.0.0.1:5000."""
    proc = netns.run(sys.executable, "-m", "airgap", "--debug", "build", "bundles/geheim-pilot/bundle.yaml",
                     "-o", tmp_path / "geheim-pilot-1.0.0.tar", "--key", keyring.key_path("builder-1"),
                     env={"AIRGAP_PASSPHRASE": "test", "AIRGAP_SOURCE_REGISTRY": ""})
    assert proc.returncode == 1
    line = error_line(proc.stderr)
    assert "127.0.0.1:5000: connection refused" in line
    assert ("sources.pilot takes the registry from ${AIRGAP_SOURCE_REGISTRY}, which is not set, so the spec's default "
            "127.0.0.1:5000 was used: set AIRGAP_SOURCE_REGISTRY=host:port of your connected-side registry") in line
    assert len(requests_logged(proc.stderr)) == 1
    assert (REPO / "bundles/geheim-pilot/bundle.yaml").exists()


# --------------------------------------------------------------------------- retries


def test_5xx_is_retried_then_named(hostile):
    img = hostile.add_image("pilot/app")
    hostile.route("GET", "/manifests/", reply(503), times=2)
    assert client(hostile, plain_http=True).get_manifest("pilot/app", "1.0").digest == img["digest"]
    assert len(hostile.seen("GET", "/manifests/")) == 3
    hostile.requests.clear()
    hostile.route("GET", "/manifests/", reply(502))
    with pytest.raises(RegistryError, match=r"GET manifest .*pilot/app:1.0: 502 Bad Gateway"):
        client(hostile, plain_http=True, retries=3).get_manifest("pilot/app", "1.0")
    assert len(hostile.seen("GET", "/manifests/")) == 4


def test_5xx_while_building_is_retried(tmp_path, keyring, hostile):
    hostile.add_image("pilot/app")
    hostile.route("GET", "/manifests/", reply(500), times=1)
    r = build(tmp_path, f"{hostile.host}/pilot/app:1.0", keyring, "--plain-http")
    assert r.code == 0, r.err
    assert len(hostile.seen("GET", "/manifests/1.0")) == 2


@pytest.mark.parametrize(("retry_after", "gets"), [("1", 2), ("3600", 1), ("Fri, 31 Dec 2999 23:59:59 GMT", 1)])
def test_429_waits_only_a_bounded_retry_after(hostile, retry_after, gets):
    hostile.add_image("pilot/app")
    hostile.route("GET", "/manifests/", reply(429, {"Retry-After": retry_after}), times=1)
    c = client(hostile, plain_http=True)
    if gets == 2:
        c.get_manifest("pilot/app", "1.0")
    else:
        with pytest.raises(RegistryError, match=r"429 Too Many Requests from .*: it asks to wait \d+ s, more than "
                                                r"the 60 s airgap waits; try again later"):
            c.get_manifest("pilot/app", "1.0")
    assert len(hostile.seen("GET", "/manifests/")) == gets


@pytest.mark.parametrize("status", [400, 403, 404])
def test_other_4xx_are_not_retried(hostile, status):
    hostile.route("GET", "/manifests/", reply(status))
    with pytest.raises(RegistryError, match=rf"pilot/app:1.0.*{status}"):
        client(hostile, plain_http=True).get_manifest("pilot/app", "1.0")
    assert len(hostile.seen("GET", "/manifests/")) == 1
