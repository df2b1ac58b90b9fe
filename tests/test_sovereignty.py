"""The sovereignty policy: matching rules, image sources, scanning config text."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from airgap import sovereignty
from airgap.exceptions import InputError, SovereigntyError
from airgap.sovereignty import (
    CATEGORIES,
    SovereigntyPolicy,
    normalise_endpoint,
)
from tests.textscan import scan_text


@pytest.fixture(scope="module")
def policy() -> SovereigntyPolicy:
    return SovereigntyPolicy.load()


# --- the packaged policy ------------------------------------------------------------


def test_packaged_policy_loads_and_is_well_formed(policy):
    assert len(policy.entries) > 100
    assert {e.category for e in policy.entries} == set(CATEGORIES)
    for e in policy.entries:
        assert e.provider.name and e.provider.kind and e.provider.jurisdiction


@pytest.mark.parametrize(
    "endpoint, provider, category",
    [
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "Amazon Web Services", "registry"),
        ("public.ecr.aws", "Amazon Web Services", "registry"),
        ("myreg.azurecr.io", "Microsoft Azure", "registry"),
        ("mcr.microsoft.com", "Microsoft", "registry"),
        ("gcr.io", "Google", "registry"),
        ("eu.gcr.io", "Google", "registry"),
        ("europe-west4-docker.pkg.dev", "Google", "registry"),
        ("ghcr.io", "GitHub, owned by Microsoft", "registry"),
        ("docker.io", "Docker, Inc.", "registry"),
        ("registry-1.docker.io", "Docker, Inc.", "registry"),
        ("index.docker.io", "Docker, Inc.", "registry"),
        ("quay.io", "Red Hat, an IBM company", "registry"),
        ("registry.k8s.io", "the Kubernetes project (CNCF), served from Google Cloud and AWS", "registry"),
        ("8.8.8.8", "Google", "dns"),
        ("8.8.4.4", "Google", "dns"),
        ("2001:4860:4860::8888", "Google", "dns"),
        ("1.1.1.1", "Cloudflare", "dns"),
        ("208.67.222.222", "Cisco OpenDNS", "dns"),
        ("time.google.com", "Google", "ntp"),
        ("time.aws.com", "Amazon Web Services", "ntp"),
        ("time.windows.com", "Microsoft", "ntp"),
        ("time.apple.com", "Apple", "ntp"),
        ("time.cloudflare.com", "Cloudflare", "ntp"),
        ("169.254.169.254", None, "metadata"),
        ("metadata.google.internal", "Google", "metadata"),
        ("168.63.129.16", "Microsoft Azure", "metadata"),
        ("fd00:ec2::254", "Amazon Web Services", "metadata"),
        ("files.pythonhosted.org", None, "package-mirror"),
    ],
)
def test_known_endpoints(policy, endpoint, provider, category):
    m = policy.match(endpoint)
    assert m is not None, endpoint
    assert m.category == category
    if provider:
        assert m.provider == provider
    assert m.is_us


def test_quad9_is_external_but_not_us(policy):
    m = policy.match("9.9.9.9")
    assert m is not None and m.jurisdiction == "CH" and not m.is_us
    assert "not a US provider" in m.provider_kind


@pytest.mark.parametrize(
    "endpoint",
    [
        "amazonaws.com.evil",
        "evilamazonaws.com",
        "gcr.io.evil.example",
        "notgcr.io",
        "gcr.iox",
        "xdocker.io",
        "pkg.dev",  # only subdomains are listed
        "azurecr.io",
        "127.0.0.1:5000",
        "registry.pilot.internal:5000",
        "localhost",
        "10.0.0.53",
        "8.8.8.9",
        "9.9.9.10",
        "2001:4860:4860::8889",
        "",
        "   ",
        "https://",
    ],
)
def test_not_listed(policy, endpoint):
    assert policy.match(endpoint) is None


@pytest.mark.parametrize(
    "endpoint, host",
    [
        ("GCR.IO", "gcr.io"),
        ("gcr.io.", "gcr.io"),
        ("gcr.io:443", "gcr.io"),
        ("https://gcr.io/v2/", "gcr.io"),
        ("https://user:secret@gcr.io:443/v2/?x=1#y", "gcr.io"),
        ("docker://quay.io/a/b:1", "quay.io"),
        ("eu.gcr.io/project/image:1.0@sha256:" + "a" * 64, "eu.gcr.io"),
        ("[2001:4860:4860::8888]:53", "2001:4860:4860::8888"),
        ("2001:4860:4860:0:0:0:0:8888", "2001:4860:4860::8888"),
        ("http://[2001:4860:4860::8888]/", "2001:4860:4860::8888"),
        ("fe80::1%eth0", "fe80::1"),
        ("::ffff:8.8.8.8", "8.8.8.8"),
        ("8.8.8.8:53", "8.8.8.8"),
        ("udp://8.8.8.8:53", "8.8.8.8"),
        ("ＧＣＲ.ＩＯ", "gcr.io"),  # full-width letters (IDNA maps them)
    ],
)
def test_normalisation(endpoint, host):
    assert normalise_endpoint(endpoint) == host


@pytest.mark.parametrize(
    "endpoint",
    ["GCR.IO.", "https://x.Y.AmazonAWS.com:8443/path", "[2001:4860:4860::8888]:853", "::ffff:8.8.8.8", "ＧＣＲ.ＩＯ"],
)
def test_normalised_forms_match(policy, endpoint):
    assert policy.match(endpoint) is not None


def test_most_specific_entry_wins(policy):
    assert policy.match("time.google.com").category == "ntp"
    assert policy.match("mail.google.com").category == "cloud-service"
    assert policy.match("mcr.microsoft.com").category == "registry"
    assert policy.match("x.y.amazonaws.com").pattern == "*.amazonaws.com"


def test_apex_needs_its_own_entry():
    p = SovereigntyPolicy.from_text(
        "version: 1\nproviders: {x: {name: X, kind: US company, jurisdiction: US}}\n"
        "endpoints:\n  - {pattern: '*.example.com', provider: x, category: cdn}\n"
        "  - {pattern: 192.0.2.0/24, provider: x, category: dns}\n"
        "  - {pattern: '2001:db8::/32', provider: x, category: dns}\n"
    )
    assert p.match("a.b.example.com") is not None
    assert p.match("example.com") is None
    assert p.match("192.0.2.77").category == "dns"
    assert p.match("192.0.3.1") is None
    assert p.match("2001:db8::5") is not None
    assert p.match("::ffff:192.0.2.1") is not None


@pytest.mark.parametrize(
    "doc, needle",
    [
        ("version: 2\n", "version 1"),
        ("version: 1\nproviders: {}\nendpoints: []\n", "no endpoints"),
        ("version: 1\nproviders: {}\nendpoints: [{pattern: a.b, provider: x, category: dns}]\n", "unknown provider"),
        (
            "version: 1\nproviders: {x: {name: X, kind: k, jurisdiction: US}}\n"
            "endpoints: [{pattern: a.b, provider: x, category: weather}]\n",
            "category",
        ),
        (
            "version: 1\nproviders: {x: {name: X, kind: k, jurisdiction: US}}\n"
            "endpoints: [{pattern: 'a.*.b', provider: x, category: dns}]\n",
            "invalid pattern",
        ),
        (
            "version: 1\nproviders: {x: {name: X, kind: k, jurisdiction: US}}\n"
            "endpoints: [{pattern: a.b, provider: x, category: dns}, {pattern: a.b, provider: x, category: ntp}]\n",
            "twice",
        ),
        ("version: 1\nproviders: {x: {name: X, kind: k, jurisdiction: US}}\n"
         "endpoints: [{pattern: 10.0.0.1/8, provider: x, category: dns}]\n", "network"),
    ],
)
def test_bad_policy_refused(doc, needle):
    with pytest.raises(InputError) as info:
        SovereigntyPolicy.from_text(doc, source="p.yaml")
    assert needle in str(info.value) and "p.yaml" in str(info.value)


def test_load_from_path(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "version: 1\nproviders: {x: {name: X, kind: k, jurisdiction: US}}\n"
        "endpoints: [{pattern: registry.example.com, provider: x, category: registry}]\n"
    )
    assert SovereigntyPolicy.load(path).match("registry.example.com").provider == "X"
    with pytest.raises(InputError):
        SovereigntyPolicy.load(tmp_path / "missing.yaml")


# --- image sources --------------------------------------------------------------------


def test_image_source_refused_without_reason(policy):
    with pytest.raises(SovereigntyError) as info:
        policy.check_image_source("gcr.io", None, artifact="images[2].ref gcr.io/distroless/static:1")
    err = info.value
    assert err.exit_code == 1
    assert err.artifact == "images[2].ref gcr.io/distroless/static:1"
    assert err.reason == (
        "registry gcr.io belongs to Google (US hyperscaler); add allow.reason to the spec to accept it"
    )


def test_image_source_allowed_with_reason(policy):
    m = policy.check_image_source("gcr.io", "accepted by officer J., ticket 42")
    assert m is not None and m.provider == "Google"
    with pytest.raises(SovereigntyError):
        policy.check_image_source("gcr.io", "   ")


def test_internal_registry_passes(policy):
    assert policy.check_image_source("127.0.0.1:5000", None) is None
    assert policy.check_image_source("registry.pilot.internal:5000", None) is None


def test_check_images_of_a_spec(tmp_path, policy):
    from airgap.spec import load_spec

    (tmp_path / "bundle.yaml").write_text(
        "apiVersion: airgap/v1\nkind: Bundle\n"
        "metadata: {name: t, version: 1.0.0, target: t, expires: 1d}\n"
        "images:\n"
        "  - ref: 127.0.0.1:5000/pilot/status:1.0\n"
        "  - ref: mcr.microsoft.com/dotnet/runtime:8.0\n"
        "    allow: {reason: 'accepted for the pilot, ticket 7'}\n"
        "  - ref: docker.io/library/busybox:1.36\n"
    )
    spec = load_spec(tmp_path / "bundle.yaml", now=datetime(2026, 1, 1, tzinfo=UTC), env={})
    with pytest.raises(SovereigntyError) as info:
        policy.check_images(spec.images)
    assert info.value.artifact == "images[2].ref docker.io/library/busybox:1.36"
    assert "Docker, Inc." in info.value.reason
    accepted = policy.check_images(spec.images[:2])
    assert [(img.index, m.host) for img, m in accepted] == [(1, "mcr.microsoft.com")]


def test_module_level_helpers():
    assert sovereignty.match("ghcr.io").provider_id == "github"
    with pytest.raises(SovereigntyError):
        sovereignty.check_image_source("quay.io", None)


# --- scanning config text --------------------------------------------------------------------

CONFIG = """\
# /etc/chrony/chrony.conf
server time.google.com iburst
pool 2.debian.pool.ntp.org iburst
nameserver 8.8.8.8
nameserver [2606:4700:4700::1111]:53
unqualified-search-registries = ["docker.io"]
mirror = "https://eu.gcr.io/v2/"
"""


def test_scan_finds_endpoints_in_order():
    found = scan_text(CONFIG)
    assert [(f.line, f.match.host) for f in found] == [
        (2, "time.google.com"),
        (3, "2.debian.pool.ntp.org"),
        (4, "8.8.8.8"),
        (5, "2606:4700:4700::1111"),
        (6, "docker.io"),
        (7, "eu.gcr.io"),
    ]
    for f in found:
        start, end = f.span
        assert CONFIG[start:end].lower().strip("[]") == f.match.endpoint.lower().strip("[]")


CLEAN = """\
# Only internal endpoints here.
server ntp.pilot.internal iburst
nameserver 127.0.10.1
location = "registry.pilot.internal:5000"
# look-alikes: gcr.io.pilot.internal notgcr.io my_gcr.io gcr-io.internal docker.iox
# versions: v1.1.1.1 release-8.8.8.8a 18.8.8.8 8.8.8.80 1.1.1.1.1
# times and MACs: 12:30:00 aa:bb:cc:dd:ee:ff fe80::1
metadata.google.internal.example.nl
"""


def test_scan_no_false_positives():
    assert scan_text(CLEAN) == []


def test_scan_ipv4_mapped_and_fqdn():
    found = scan_text("a ::ffff:8.8.8.8 b gcr.io. c GCR.IO")
    assert [f.match.host for f in found] == ["8.8.8.8", "gcr.io", "gcr.io"]


def test_scan_sample_configs_are_clean():
    configs = Path(__file__).resolve().parents[1] / "bundles" / "geheim-pilot" / "configs"
    for path in sorted(configs.iterdir()):
        assert scan_text(path.read_text()) == [], path


# --- one matcher: domains cover their subdomains (as the check module documents) -----


def test_a_domain_pattern_matches_its_subdomains_and_nothing_else():
    p = SovereigntyPolicy.from_text(
        "version: 1\nproviders: {x: {name: X, kind: US company, jurisdiction: US}, y: {name: Y, kind: k, jurisdiction: US}}\n"
        "endpoints:\n  - {pattern: example.com, provider: x, category: cdn}\n"
        "  - {pattern: '*.example.com', provider: y, category: registry}\n"
        "  - {pattern: time.example.org, provider: x, category: ntp}\n"
    )
    assert p.match("example.com").pattern == "example.com"  # the apex: only the domain pattern
    assert p.match("a.b.example.com").pattern == "*.example.com"  # same suffix: *.d before d
    assert p.match("x.time.example.org").pattern == "time.example.org"
    for other in ("example.com.evil", "notexample.com", "time.example.org.x", "example.org"):
        assert p.match(other) is None, other


def test_the_build_and_the_check_module_share_one_matcher():
    from airgap._internal import endpoints

    policy = SovereigntyPolicy.load()
    assert isinstance(policy._set, endpoints.EndpointSet)
    shipped = Path(__file__).resolve().parents[1] / "playbooks" / "module_utils" / "airgap_endpoints.py"
    assert shipped.resolve() == Path(endpoints.__file__).resolve()
