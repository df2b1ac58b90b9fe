"""A hostile source registry gets nothing: no credentials, no unbounded memory or
time, no signed output on failure, and clean one-line refusals (issue 16).

Every test runs ``airgap build`` (in-process, or as a process where its memory
is measured) against :class:`tests.fixtures.hostile.HostileRegistry` on
127.0.0.1; a second listener (:class:`Recorder`) proves what does not reach it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from airgap import oci, verify
from airgap.exceptions import IntegrityError, RegistryError
from airgap.registry import Limits, Origin, RegistryClient
from airgap.registry.auth import realm_allows_credentials
from tests.fixtures.hostile import (
    HostileRegistry,
    Recorder,
    digest_of,
    drip,
    endless,
    redirect,
    reply,
    stall,
    write_auth_file,
)
from tests.fixtures.images import LAYER_GZIP, OCI_INDEX, OCI_MANIFEST, json_bytes, make_layer
from tests.helpers import PASSPHRASE, REPO, airgap, write_spec

CREATED = "2026-11-01T00:00:00Z"
pytestmark = pytest.mark.usefixtures("isolated_auth_files")


def build(spec: Path, out: Path, keyring, *extra: str | Path, debug: bool = False):
    pre = ("--debug",) if debug else ()
    return airgap(*pre, "build", spec, "-o", out, "--key", keyring.key_path("builder-1"), "--created", CREATED, *extra)


def spec_for(tmp_path: Path, *refs: str | dict, **kw) -> Path:
    return write_spec(tmp_path / "spec", images=list(refs), files=[], **kw)


def nothing_written(out: Path) -> bool:
    """No bundle, and no temporary file left next to where it would have been."""
    return not out.exists() and not [p for p in out.parent.glob(f".{out.name}*")] if out.parent.exists() else True


def one_clean_line(err: str) -> bool:
    lines = err.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("airgap: ") and "Traceback" not in err


# --------------------------------------------------------------------------- 1. credentials and origins


def test_origin_is_scheme_host_and_port_with_default_ports_made_explicit():
    assert Origin.of("https://Registry.Example/v2/") == Origin.of("https://registry.example:443/x")
    # The first instance: https -> http on default ports is another origin (port 80, cleartext).
    assert Origin.of("https://registry.example/") != Origin.of("http://registry.example/")
    assert Origin.of("https://registry.example:5000/") != Origin.of("http://registry.example:5000/")
    assert Origin.of("https://registry.example:5000/") != Origin.of("https://registry.example:5001/")
    assert str(Origin.of("http://[::1]:80/")) == "http://[::1]"
    with pytest.raises(ValueError):
        Origin.of("ftp://registry.example/")


@pytest.mark.parametrize(("realm", "registry", "allowed"), [
    ("https://auth.example/token", "https://registry.example", True),
    ("https://auth.example:8443/token", "http://127.0.0.1:5000", True),
    ("http://auth.example/token", "https://registry.example", False),
    ("http://127.0.0.1:9/token", "https://127.0.0.1:5000", False),  # a TLS registry: never a plain realm
    ("http://127.0.0.1:9/token", "http://127.0.0.1:5000", True),  # --plain-http on loopback, realm on loopback
    ("http://auth.example/token", "http://127.0.0.1:5000", False),
    ("http://127.0.0.1:9/token", "http://registry.example:5000", False),  # --plain-http, not loopback
])
def test_which_token_realms_get_basic_credentials(realm, registry, allowed):
    assert realm_allows_credentials(Origin.of(realm), Origin.of(registry + "/")) is allowed


@pytest.mark.parametrize("target", ["same-port-http", "other-port-http", "other-port-https", "other-host-same-port"])
def test_credentials_never_follow_a_redirect_to_another_origin(tmp_path, keyring, test_ca, target):
    with HostileRegistry(test_ca, dual=True, basic=("pilot", "s3cret")) as reg, \
            Recorder() as plain, Recorder(test_ca) as tls:
        reg.add_image("pilot/app")
        plain.blobs = tls.blobs = reg.blobs
        base = {
            "same-port-http": f"http://127.0.0.1:{reg.port}/storage",  # same host and port, scheme changed
            "other-port-http": f"{plain.url}/storage",
            "other-port-https": f"{tls.url}/storage",
            "other-host-same-port": f"https://localhost:{reg.port}/storage",
        }[target]
        reg.route("GET", r"^/v2/pilot/app/blobs/(sha256:[0-9a-f]{64})$", redirect(lambda m: f"{base}/v2/x/blobs/{m.group(1)}"))
        reg.route("GET", r"^/storage/v2/x/blobs/(sha256:[0-9a-f]{64})$", lambda h, m: reg.serve_blob(h, m.group(1)))
        auth = write_auth_file(tmp_path / "auth.json", reg.host, "pilot", "s3cret")
        out = tmp_path / "b.tar"
        r = build(spec_for(tmp_path, f"{reg.host}/pilot/app:1.0"), out, keyring, "--ca-file", test_ca.ca_pem,
                  "--auth-file", auth)
        storage = [q for q in reg.requests + plain.requests + tls.requests if "/storage/" in q.path]
        own = [q for q in reg.requests if q.scheme == "https" and q.path.startswith("/v2/")]
    assert r.code == 0, r.err
    assert storage, "the blobs were fetched where the redirect pointed"
    assert any("Authorization" in q.headers for q in own), "the registry itself got the credentials"
    assert [q for q in storage if "Authorization" in q.headers] == []


@pytest.mark.parametrize("where", ["other-listener", "same-port-plain"])
def test_basic_credentials_never_go_to_a_plain_http_realm(tmp_path, keyring, test_ca, where):
    with HostileRegistry(test_ca, dual=True, bearer=("pilot", "s3cret")) as reg, Recorder() as rec:
        reg.realm = f"{rec.url}/token" if where == "other-listener" else f"http://127.0.0.1:{reg.port}/token"
        reg.add_image("pilot/app")
        auth = write_auth_file(tmp_path / "auth.json", reg.host, "pilot", "s3cret")
        out = tmp_path / "b.tar"
        r = build(spec_for(tmp_path, f"{reg.host}/pilot/app:1.0"), out, keyring, "--ca-file", test_ca.ca_pem,
                  "--auth-file", auth)
        plain_at_registry = [q for q in reg.requests if q.scheme == "http"]
    assert r.code == 1
    assert one_clean_line(r.err), r.err
    assert f"token realm {reg.realm.rsplit('/', 1)[0]} is plain HTTP: refusing to send the credentials" in r.err
    assert rec.requests == [] and plain_at_registry == []
    assert nothing_written(out)


def test_a_tls_realm_gets_the_credentials_and_debug_names_its_origin(tmp_path, keyring, test_ca):
    with HostileRegistry(test_ca, bearer=("pilot", "s3cret")) as reg:
        reg.add_image("pilot/app")
        auth = write_auth_file(tmp_path / "auth.json", reg.host, "pilot", "s3cret")
        r = build(spec_for(tmp_path, f"{reg.host}/pilot/app:1.0"), tmp_path / "b.tar", keyring,
                  "--ca-file", test_ca.ca_pem, "--auth-file", auth, debug=True)
        token_requests = reg.seen("GET", "/token")
    assert r.code == 0, r.err
    assert f"from realm https://127.0.0.1:{reg.port} (Basic credentials of user 'pilot')" in r.err
    assert token_requests and all(q.headers["Authorization"].startswith("Basic ") for q in token_requests)
    assert "s3cret" not in r.err


# --------------------------------------------------------------------------- 3. memory


def _padded_child(reg: HostileRegistry, i: int, size: int) -> bytes:
    """A valid image manifest of about *size* bytes, distinct for each *i*."""
    layer = make_layer({"etc/hostile": b"x\n"})[0]
    config = json_bytes({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": reg.add_blob(config),
                      "size": len(config)},
           "layers": [{"mediaType": LAYER_GZIP, "digest": reg.add_blob(layer), "size": len(layer)}],
           "annotations": {"pad": f"{i:08d}" + "x" * (size - 600)}}
    return json_bytes(doc)


def _rss_build(tmp_path: Path, name: str, ref: str, keyring) -> int:
    """Peak RSS (KiB) of ``airgap build`` as its own process, from GNU time."""
    out, rss = tmp_path / f"{name}.tar", tmp_path / f"{name}.rss"
    spec = write_spec(tmp_path / f"spec-{name}", images=[ref], files=[])
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", rss, sys.executable, "-m", "airgap", "build", spec, "-o", out,
         "--key", keyring.key_path("builder-1"), "--plain-http", "--created", CREATED, "--quiet"],
        capture_output=True, text=True, timeout=600, cwd=REPO, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                                                   "AIRGAP_PASSPHRASE": PASSPHRASE})
    assert proc.returncode == 0, proc.stderr
    out.unlink()
    return int(rss.read_text().split()[-1])


def test_memory_stays_flat_whatever_the_index(tmp_path, keyring):
    """An index listing one ~4 MiB child hundreds of times, and one listing hundreds
    of distinct 1 MiB children: peak RSS does not grow with the entry count."""
    with HostileRegistry() as reg:
        big = _padded_child(reg, 0, 4 * 1024 * 1024 - 4096)
        big_digest = reg.add_manifest("pilot/same", big, OCI_MANIFEST)

        def same(n: int) -> str:
            entries = [{"mediaType": OCI_MANIFEST, "digest": big_digest, "size": len(big),
                        "platform": {"os": "linux", "architecture": "amd64", "variant": f"v{i}"}} for i in range(n)]
            reg.add_index("pilot/same", f"n{n}", entries)
            return f"{reg.host}/pilot/same:n{n}"

        # Distinct children are made again on every request: the server holds none of them.
        one_mib = 1024 * 1024
        sizes: dict[str, int] = {}
        for i in range(300):
            data = _padded_child(reg, i, one_mib)
            sizes[digest_of(data)] = i
        reg.route("GET", r"^/v2/pilot/distinct/manifests/(sha256:[0-9a-f]{64})$",
                  lambda h, m: h.reply(200, {"Content-Type": OCI_MANIFEST}, _padded_child(reg, sizes[m.group(1)], one_mib)))
        child_len = len(_padded_child(reg, 0, one_mib))

        def distinct(n: int) -> str:
            entries = [{"mediaType": OCI_MANIFEST, "digest": d, "size": child_len,
                        "platform": {"os": "linux", "architecture": "amd64", "variant": f"v{i}"}}
                       for d, i in sizes.items() if i < n]
            reg.add_index("pilot/distinct", f"n{n}", entries)
            return f"{reg.host}/pilot/distinct:n{n}"

        rss = {name: _rss_build(tmp_path, name, ref, keyring) for name, ref in (
            ("same-10", same(10)), ("same-300", same(300)), ("distinct-10", distinct(10)), ("distinct-300", distinct(300)))}
        child_gets = len(reg.seen("GET", f"/manifests/{big_digest}"))
    mib = {k: v / 1024 for k, v in rss.items()}
    # Held copies would add 290 x 4 MiB and 290 x 1 MiB; a fixed budget adds nothing past it.
    assert mib["same-300"] - mib["same-10"] < 16, mib
    assert mib["distinct-300"] - mib["distinct-10"] < 40, mib
    assert child_gets == 2  # once per build, however often the index lists it


# --------------------------------------------------------------------------- 4. deadlines


def fast_client(reg, **kw) -> RegistryClient:
    # 100 MiB/s: even the 4 MiB document cap is under the 1 s floor.
    kw.setdefault("limits", Limits(min_rate=100 * 1024 * 1024, floor=1.0))
    return RegistryClient(reg.host, plain_http=True, backoff=0.01, **kw)


@pytest.mark.parametrize("what", ["manifest", "blob"])
def test_a_dripped_answer_hits_its_deadline_and_is_not_retried(hostile, what):
    img = hostile.add_image("pilot/app")
    layer = img["layers"][0]
    body = img["manifest"] if what == "manifest" else hostile.blobs[layer["digest"]]
    hostile.route("GET", f"/{what}s/", drip(body, {"Content-Type": OCI_MANIFEST}, every=0.05, owner=hostile))
    with fast_client(hostile) as c, pytest.raises(RegistryError) as exc:
        if what == "manifest":
            c.get_manifest("pilot/app", "1.0")
        else:
            c.read_blob("pilot/app", layer["digest"], layer["size"])
    assert "did not complete the answer within 1 s (minimum rate 100 MiB/s)" in str(exc.value)
    assert "lower --min-rate" in str(exc.value)
    assert len(hostile.seen("GET", f"/{what}s/")) == 1


@pytest.mark.parametrize("headers_first", [False, True])
def test_a_stalled_answer_hits_its_deadline(hostile, headers_first):
    img = hostile.add_image("pilot/app")
    hostile.route("GET", "/manifests/", stall(hostile, headers_first={"Content-Type": OCI_MANIFEST,
                                                                     "Content-Length": "100"} if headers_first else None))
    with fast_client(hostile) as c, pytest.raises(RegistryError, match="did not complete the answer within 1 s"):
        c.get_manifest("pilot/app", "1.0")
    assert len(hostile.seen("GET", "/manifests/")) == 1
    assert img  # served nothing


def test_a_stall_mid_blob_is_a_timeout_retried_with_range(hostile):
    """A read timeout mid-transfer is what a retry can fix: the download resumes
    from the last whole MiB it kept."""
    data = bytes(range(256)) * 4096 * 3
    digest = hostile.add_blob(data)

    def half_then_stall(h, m):
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data[:1_500_000])
        h.wfile.flush()
        stall(hostile, limit=5)(h, m)

    hostile.route("GET", "/blobs/", half_then_stall, times=1)
    with fast_client(hostile, timeout=0.5, limits=Limits(floor=30)) as c:
        assert c.read_blob("pilot/app", digest, len(data), cap=len(data)) == data
    assert [q.headers.get("Range") for q in hostile.seen("GET", "/blobs/")] == [None, "bytes=1048576-"]


def test_min_rate_sets_the_deadline_of_every_request(tmp_path, keyring, hostile):
    layer = make_layer({"big": bytes(300 * 1024)}, compress=False)[0]
    img = hostile.add_image("pilot/app", layers=[layer])
    spec = spec_for(tmp_path, f"{hostile.host}/pilot/app:1.0")
    r = build(spec, tmp_path / "b.tar", keyring, "--plain-http", "--min-rate", "1KiB/s", debug=True)
    assert r.code == 0, r.err
    # 301 KiB at 1 KiB/s; the manifest, asked for by tag, is held to the 4 MiB document cap; small ones get the floor.
    assert f"GET http://{hostile.host}/v2/pilot/app/blobs/{img['layers'][0]['digest']} (deadline {len(layer) // 1024} s)" in r.err
    assert f"GET http://{hostile.host}/v2/pilot/app/manifests/1.0 (deadline 4096 s)" in r.err
    for bad, why in (("fast", "expected a rate like 100KiB/s"), ("10B/s", "at least 1 KiB/s")):
        r = build(spec, tmp_path / "c.tar", keyring, "--plain-http", "--min-rate", bad)
        assert r.code == 2 and why in r.err and one_clean_line(r.err), r.err


# --------------------------------------------------------------------------- 5. descriptors


@pytest.mark.parametrize("delta", [-1, 1])
def test_an_index_child_of_the_wrong_size_is_refused(tmp_path, keyring, hostile, delta):
    child = hostile.add_image("pilot/multi", tag=None)
    entry = {"mediaType": OCI_MANIFEST, "digest": child["digest"], "size": len(child["manifest"]) + delta,
             "platform": {"os": "linux", "architecture": "amd64"}}
    hostile.add_index("pilot/multi", "1.0", [entry])
    out = tmp_path / "b.tar"
    r = build(spec_for(tmp_path, f"{hostile.host}/pilot/multi:1.0"), out, keyring, "--plain-http")
    assert r.code == 1 and one_clean_line(r.err), r.err
    assert f"pilot/multi@{child['digest']}" in r.err and ("size mismatch" in r.err or "exceeds the descriptor's" in r.err)
    assert nothing_written(out)


def test_a_config_is_fetched_as_a_blob_whatever_media_type_it_claims(tmp_path, keyring, hostile):
    img = hostile.add_image("pilot/app", config_media_type=OCI_MANIFEST)
    # What /manifests/ would answer for the config's digest: another document entirely.
    hostile.route("GET", f"/manifests/{img['config_digest']}", reply(200, {"Content-Type": OCI_MANIFEST}, b"{}"))
    out = tmp_path / "b.tar"
    r = build(spec_for(tmp_path, {"ref": f"{hostile.host}/pilot/app:1.0", "platforms": ["linux/amd64"]}), out,
              keyring, "--plain-http")
    assert r.code == 0, r.err
    assert hostile.seen("GET", f"/blobs/{img['config_digest']}") and not hostile.seen("GET", f"/manifests/{img['config_digest']}")
    manifest, _ = verify.check_structure(out)
    assert manifest.member(oci.blob_path(img["config_digest"])).size == len(img["config"])


def test_a_config_of_the_wrong_size_is_refused(tmp_path, keyring, hostile):
    img = hostile.add_image("pilot/app", config_size=None)
    wrong = hostile.add_image("pilot/bad", layers=[], config_size=len(img["config"]) + 5)
    out = tmp_path / "b.tar"
    r = build(spec_for(tmp_path, f"{hostile.host}/pilot/bad:1.0"), out, keyring, "--plain-http")
    assert r.code == 1 and one_clean_line(r.err), r.err
    assert f"pilot/bad@{wrong['config_digest']}: size mismatch" in r.err
    assert nothing_written(out)


# --------------------------------------------------------------------------- 6. no signed bundle on failure


@pytest.mark.parametrize("what", ["platform", "description"])
def test_a_build_that_verify_would_refuse_writes_nothing(tmp_path, keyring, hostile, what):
    child = hostile.add_image("pilot/app", tag=None)
    # A platform the bundle manifest cannot record (its schema wants lower case).
    hostile.add_index("pilot/app", "1.0", [{"mediaType": OCI_MANIFEST, "digest": child["digest"],
                                           "size": len(child["manifest"]),
                                           "platform": {"os": "Linux", "architecture": "AMD64"}}])
    out = tmp_path / "dist" / "b.tar"
    out.parent.mkdir()
    out.write_bytes(b"the bundle built yesterday")
    metadata = {"name": "geheim-pilot", "version": "1.0.0", "target": "geheim-pilot", "expires": "180d",
                "description": "line one\nline two" if what == "description" else "one line"}
    r = build(spec_for(tmp_path, f"{hostile.host}/pilot/app:1.0", extra={"metadata": metadata}), out, keyring,
              "--plain-http", "--force")  # the old bundle may be replaced, but only by one verify accepts
    assert one_clean_line(r.err), r.err
    if what == "platform":
        assert r.code == 1
        assert f"{out}: not written: its manifest would be refused by verify" in r.err and "'Linux/AMD64'" in r.err
    else:
        assert r.code == 2 and "metadata.description" in r.err  # the spec is refused first
    assert out.read_bytes() == b"the bundle built yesterday"
    assert sorted(p.name for p in out.parent.iterdir()) == ["b.tar"]
    assert not hostile.seen("GET", "/blobs/sha256:" + child["layers"][0]["digest"].split(":")[1])


def test_the_output_appears_only_after_passing_verify_structural_checks(tmp_path, keyring, hostile, monkeypatch):
    """Damage between writing and renaming (a disk, a bug) is caught by verify's own checks."""
    hostile.add_image("pilot/app")
    checked: list[Path] = []
    real = verify.check_structure

    def damage_then_check(path):
        checked.append(Path(path))
        with open(path, "r+b") as f:  # flip a byte of index.json's data (the 3rd member)
            data = f.read(8192)
            at = data.index(b'{"manifests"')
            f.seek(at + 2)
            f.write(b"M")
        return real(path)

    out = tmp_path / "b.tar"
    spec = spec_for(tmp_path, f"{hostile.host}/pilot/app:1.0")
    monkeypatch.setattr(verify, "check_structure", damage_then_check)
    r = build(spec, out, keyring, "--plain-http")
    assert r.code == 1 and one_clean_line(r.err), r.err
    assert f"{out}: not written: the bundle failed its own check (index.json: sha256 mismatch" in r.err
    assert checked and checked[0].parent == out.parent and checked[0] != out
    assert nothing_written(out)
    monkeypatch.setattr(verify, "check_structure", real)
    assert build(spec, out, keyring, "--plain-http").code == 0


def test_an_index_repeating_one_platform_builds_what_verify_accepts(tmp_path, keyring, hostile):
    child = hostile.add_image("pilot/multi", tag=None)
    entry = {"mediaType": OCI_MANIFEST, "digest": child["digest"], "size": len(child["manifest"]),
             "platform": {"os": "linux", "architecture": "amd64"}}
    hostile.add_index("pilot/multi", "1.0", [entry, entry, entry])
    out = tmp_path / "b.tar"
    r = build(spec_for(tmp_path, f"{hostile.host}/pilot/multi:1.0"), out, keyring, "--plain-http", "--json")
    assert r.code == 0, r.err
    manifest, _ = verify.check_structure(out)
    assert manifest.images[0].platforms == ("linux/amd64",)
    assert len(hostile.seen("GET", f"/manifests/{child['digest']}")) == 1


# --------------------------------------------------------------------------- 7. clean refusals


def test_a_blob_redirect_to_ftp_is_one_line_naming_the_blob(tmp_path, keyring, hostile):
    img = hostile.add_image("pilot/app")
    layer = img["layers"][0]["digest"]
    hostile.route("GET", f"/blobs/{layer}", redirect("ftp://127.0.0.1/pub/layer"))
    out = tmp_path / "b.tar"
    r = build(spec_for(tmp_path, f"{hostile.host}/pilot/app:1.0"), out, keyring, "--plain-http")
    assert r.code == 1 and one_clean_line(r.err), r.err
    assert f"GET blob {hostile.host}/pilot/app@{layer}: redirected to 'ftp://127.0.0.1/pub/layer'" in r.err
    assert "only http:// and https://" in r.err
    assert nothing_written(out)


@pytest.mark.parametrize(("where", "size"), [("layers[0]", 2**62), ("config", 2 * 1024**4)])
def test_a_descriptor_over_the_blob_cap_is_refused_before_download(tmp_path, keyring, hostile, where, size):
    huge = "sha256:" + hashlib.sha256(b"never served").hexdigest()
    if where == "config":
        img = hostile.add_image("pilot/app", config_size=size)
        huge = img["config_digest"]
    else:
        hostile.add_image("pilot/app", layer_descriptors=[{"mediaType": LAYER_GZIP, "digest": huge, "size": size}])
    out = tmp_path / "b.tar"
    r = build(spec_for(tmp_path, {"ref": f"{hostile.host}/pilot/app:1.0", "platforms": ["linux/amd64"]}), out,
              keyring, "--plain-http")
    assert r.code == 1 and one_clean_line(r.err), r.err
    assert f"{where} ({huge}): size {size} exceeds the cap of 1099511627776 bytes (1 TiB)" in r.err
    assert not hostile.seen("GET", huge)
    assert nothing_written(out)


# --------------------------------------------------------------------------- good behaviours kept


@pytest.mark.parametrize("lie", ["longer", "shorter", "endless", "corrupt"])
def test_a_blob_that_is_not_what_its_descriptor_says_is_refused(tmp_path, keyring, hostile, lie):
    img = hostile.add_image("pilot/app")
    layer = img["layers"][0]
    data = hostile.blobs[layer["digest"]]
    handler = {
        "longer": reply(200, {"Content-Type": "application/octet-stream"}, data + b"more"),
        "shorter": reply(200, {"Content-Type": "application/octet-stream"}, data[:-1]),
        "endless": endless({"Content-Type": "application/octet-stream"}, hostile),
        "corrupt": reply(200, {"Content-Type": "application/octet-stream"}, bytes([data[0] ^ 1]) + data[1:]),
    }[lie]
    hostile.route("GET", f"/blobs/{layer['digest']}", handler)
    out = tmp_path / "b.tar"
    r = build(spec_for(tmp_path, f"{hostile.host}/pilot/app:1.0"), out, keyring, "--plain-http")
    assert r.code == 1 and one_clean_line(r.err), r.err
    assert f"pilot/app@{layer['digest']}: {'sha256' if lie == 'corrupt' else 'size'} mismatch" in r.err
    assert nothing_written(out)


def test_an_endless_manifest_stops_at_the_cap(hostile):
    hostile.route("GET", "/manifests/", endless({"Content-Type": OCI_MANIFEST}, hostile))
    with fast_client(hostile, limits=Limits()) as c, pytest.raises(IntegrityError, match="manifest exceeds the cap of 4194304"):
        c.get_manifest("pilot/app", "1.0")


def test_a_redirect_loop_ends(tmp_path, keyring, hostile):
    img = hostile.add_image("pilot/app")
    layer = img["layers"][0]["digest"]
    hostile.route("GET", f"/blobs/{layer}", redirect(f"/v2/pilot/app/blobs/{layer}"))
    r = build(spec_for(tmp_path, f"{hostile.host}/pilot/app:1.0"), tmp_path / "b.tar", keyring, "--plain-http")
    assert r.code == 1 and one_clean_line(r.err) and "more than 5 redirects" in r.err, r.err
    assert len(hostile.seen("GET", f"/blobs/{layer}")) == 6


def test_a_layer_listed_ten_thousand_times_is_fetched_once(tmp_path, keyring, hostile):
    data = make_layer({"etc/one": b"1\n"})[0]
    desc = {"mediaType": LAYER_GZIP, "digest": hostile.add_blob(data), "size": len(data)}
    hostile.add_image("pilot/app", layer_descriptors=[desc] * 10_000)
    out = tmp_path / "b.tar"
    r = build(spec_for(tmp_path, f"{hostile.host}/pilot/app:1.0"), out, keyring, "--plain-http")
    assert r.code == 0, r.err
    # Once in all: the SBOM pass fetches it and keeps it for the bundle; applied again to the
    # view it produced, the layer is a cache hit (never one read per listing).
    assert len(hostile.seen("GET", desc["digest"])) == 1
    manifest, _ = verify.check_structure(out)
    assert len([m for m in manifest.members if m.path.startswith("blobs/")]) == 3


def test_a_ten_thousand_platform_index_fetches_each_child_once(tmp_path, keyring, hostile):
    child = hostile.add_image("pilot/multi", tag=None)
    entries = [{"mediaType": OCI_MANIFEST, "digest": child["digest"], "size": len(child["manifest"]),
                "platform": {"os": "linux", "architecture": "amd64", "variant": f"v{i}"}} for i in range(10_000)]
    index_digest, _ = hostile.add_index("pilot/multi", "1.0", entries)
    out = tmp_path / "b.tar"
    r = build(spec_for(tmp_path, f"{hostile.host}/pilot/multi:1.0"), out, keyring, "--plain-http", "--json")
    assert r.code == 0, r.err
    assert len(hostile.seen("GET", f"/manifests/{child['digest']}")) == 1
    assert json.loads(r.out)["images"][0]["digest"] == index_digest
    assert OCI_INDEX in verify.check_structure(out)[0].images[0].media_type
