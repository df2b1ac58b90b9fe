"""What the commands print for people: diff's changes, counts in the right number,
short keyids wherever a keyid is typed, sign refusing media parts before anything else."""

from __future__ import annotations

import json

from airgap._internal.text import article, plural
from tests.fixtures.images import push_layout
from tests.helpers import airgap, write_spec

# --------------------------------------------------------------------------- diff


def _build(tmp_path, name, keyring, images):
    spec = write_spec(tmp_path / f"spec-{name}", version=name, images=images, files=[])
    out = tmp_path / f"pilot-{name}.tar"
    r = airgap("build", spec, "-o", out, "--key", keyring.key_path("builder-1"), "--plain-http", "--quiet")
    assert r.code == 0, r.err
    return out


def test_diff_reports_a_new_tag_and_a_moved_tag_as_changes(tmp_path, registry, seeded_registry, keyring):
    """pilot/status goes from tag 1.0 to 1.1 (another digest), pilot/multi:1.0 now names
    another digest: two changes, nothing added or removed."""
    layout, host = seeded_registry.layout, registry.host
    push_layout(layout, "status", host, "pilot/status", dest_tag="1.0")
    push_layout(layout, "multi", host, "pilot/multi", dest_tag="1.0")
    a = _build(tmp_path, "1.0.0", keyring, [f"{host}/pilot/status:1.0", f"{host}/pilot/multi:1.0"])
    push_layout(layout, "notes", host, "pilot/status", dest_tag="1.1")
    push_layout(layout, "status", host, "pilot/multi", dest_tag="1.0")
    b = _build(tmp_path, "1.1.0", keyring, [f"{host}/pilot/status:1.1", f"{host}/pilot/multi:1.0"])
    status, multi, notes = (seeded_registry.images[f"pilot/{n}"].digest for n in ("status", "multi", "notes"))

    d = airgap("diff", a, b, "--json").json()
    assert d["images"]["added"] == [] and d["images"]["removed"] == []
    assert d["images"]["changed"] == [
        {"ref": f"{host}/pilot/multi:1.0", "from": multi, "to_ref": f"{host}/pilot/multi:1.0", "to": status},
        {"ref": f"{host}/pilot/status:1.0", "from": status, "to_ref": f"{host}/pilot/status:1.1", "to": notes},
    ]
    r = airgap("diff", a, b)
    assert r.code == 0, r.err
    assert f"  changed: {host}/pilot/status:1.0 {status} → {host}/pilot/status:1.1 {notes}" in r.out.splitlines()
    assert f"  changed: {host}/pilot/multi:1.0 {multi} → {status}" in r.out.splitlines()
    assert "added" not in r.out and "removed" not in r.out
    assert r.out.splitlines()[0] == "geheim-pilot 1.0.0 -> geheim-pilot 1.1.0: 2 images changed"
    assert airgap("diff", a, b, "--quiet").out == r.out.splitlines()[0] + "\n"


def test_diff_pairs_references_of_one_repository_only_when_unambiguous(tmp_path, registry, seeded_registry, keyring):
    """One old and one new reference of a repository are a change; a new one next to a kept
    one is an addition; two new ones for one old cannot be paired: removal and additions."""
    layout, host = seeded_registry.layout, registry.host
    for name, tag in (("status", "1.0"), ("notes", "2.0"), ("multi", "3.0")):
        push_layout(layout, name, host, "pilot/app", dest_tag=tag)
    v1, v2, v3 = (f"{host}/pilot/app:{t}" for t in ("1.0", "2.0", "3.0"))
    a = _build(tmp_path, "1.0.0", keyring, [v1])

    def images(*refs):
        return airgap("diff", a, _build(tmp_path, f"1.{len(list(tmp_path.glob('*.tar')))}.0", keyring, list(refs)),
                      "--json").json()["images"]

    d = images(v2)
    assert [(c["ref"], c["to_ref"]) for c in d["changed"]] == [(v1, v2)] and d["added"] == d["removed"] == []
    d = images(v1, v2)
    assert [x["ref"] for x in d["added"]] == [v2] and d["removed"] == [] and d["changed"] == []
    d = images(v2, v3)
    assert [x["ref"] for x in d["added"]] == [v2, v3] and [x["ref"] for x in d["removed"]] == [v1] and d["changed"] == []


# --------------------------------------------------------------------------- counts and articles


def test_plural_and_article():
    assert [plural(n, "part") for n in (0, 1, 2)] == ["0 parts", "1 part", "2 parts"]
    assert plural(1, "entry") == "1 entry" and plural(3, "entry") == "3 entries"
    assert plural(2, "repository") == "2 repositories" and plural(2, "child", "children") == "2 children"
    assert article("officer key") == "an officer key" and article("builder key") == "a builder key"


def test_one_of_a_kind_is_said_in_the_singular(tmp_path, signed_bundle, keyring):
    media = tmp_path / "media"
    r = airgap("split", signed_bundle.path, "--size", "1G", "-o", media)
    assert r.code == 0, r.err
    assert r.out.startswith(f"split {signed_bundle.path} into 1 part in {media}\n")
    b = signed_bundle.copy(tmp_path, builder_only=True)
    r = airgap("sign", b, "--key", keyring.key_path("officer-1"), "--trust", signed_bundle.trust, "--yes")
    assert ", 2 files" in r.out  # the sample carries two files: the plural stays where it belongs
    assert "1 parts" not in r.out + r.err and " 1 files" not in r.out
    r = airgap("trust", "init", "--help")
    assert "an officer key" in r.out.replace("\n", " ").replace("  ", " ") and "a officer" not in r.out


def test_no_count_is_printed_with_a_fixed_plural():
    """Counts in messages go through plural(): no f-string puts a number before a fixed plural noun."""
    import re

    from tests.helpers import REPO

    nouns = "parts|files|images|members|blobs|entries|signatures|keys|repositories|manifests|tags|bytes|nodes|wheels|items"
    fixed = re.compile(r"\{(len\([^{}]*\)|[a-z_.\[\]'\"]*(?:count|total|parts|size|have|seq|missing)[a-z_\]'\"]*)\} "
                       r"(?:more )?(?:[a-z]+ )?(" + nouns + r")\b")
    offenders = []
    for path in sorted((REPO / "airgap").rglob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if fixed.search(line) and "exceeds" not in line and "cap" not in line:
                offenders.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not offenders, "use plural():\n" + "\n".join(offenders)


# --------------------------------------------------------------------------- sign and media parts


def test_sign_refuses_media_parts_before_asking_for_a_passphrase_or_showing_the_plan(tmp_path, signed_bundle, keyring):
    media = tmp_path / "media"
    assert airgap("split", signed_bundle.path, "--size", "64K", "-o", media).code == 0
    for target in (media, next(media.glob("*.parts.json"))):
        # A wrong passphrase would be the first error if the key were loaded first.
        r = airgap("sign", target, "--key", keyring.key_path("officer-1"), env={"AIRGAP_PASSPHRASE": "wrong"})
        assert r.code == 2
        assert r.out == "", "no plan is shown for parts that cannot be signed"
        assert "sign the bundle file before splitting it" in r.err and "airgap split' again" in r.err


# --------------------------------------------------------------------------- short keyids


def test_short_keyid_in_trust_show_rotate_and_audit(tmp_path, signed_bundle, keyring):
    trust = signed_bundle.trust
    officer_1, officer_2 = keyring.pub("officer-1").keyid, keyring.pub("officer-2").keyid
    r = airgap("trust", "show", trust, "--keyid", officer_2[:8] + "…", "--json")
    assert r.code == 0, r.err
    assert r.json()["keyid"] == officer_2 and r.json()["roles"] == ["officer"] and not r.json()["revoked"]
    assert airgap("trust", "show", trust, "--keyid", officer_2[:8]).out.startswith(f"officer-2 {officer_2[:8]}…: officer key")

    # rotate: keep officer-2 by its short keyid, drop officer-1 from the role
    v2 = tmp_path / "v2.json"
    r = airgap("trust", "rotate", trust, "--officer", officer_2[:10], "--key", keyring.key_path("root-1"),
               "--key", keyring.key_path("root-2"), "-o", v2)
    assert r.code == 0, r.err
    roles = json.loads(v2.read_text())["signed"]["roles"]
    assert roles["officer"]["keyids"] == [officer_2]
    r = airgap("trust", "rotate", trust, "--officer", "0000000000", "--key", keyring.key_path("root-1"), "-o", tmp_path / "x")
    assert r.code == 2 and "--officer 0000000000: no key in" in r.err

    # audit show: only the entries made with that key
    from airgap.audit import AuditLog

    log = tmp_path / "audit.log"
    AuditLog(log).append("sign", {"bundle": "a"}, "accepted", actor={"user": "u", "host": "h", "keyid": officer_1})
    AuditLog(log).append("verify", {"bundle": "a"}, "accepted", actor={"user": "u", "host": "h", "keyid": None})
    AuditLog(log).append("sign", {"bundle": "b"}, "accepted", actor={"user": "u", "host": "h", "keyid": officer_2})
    r = airgap("audit", "show", "--log", log, "--keyid", officer_2[:8], "--json")
    assert r.code == 0, r.err
    assert [e["object"]["bundle"] for e in r.json()] == ["b"]
    assert airgap("audit", "show", "--log", log, "--keyid", officer_2[:8], "--quiet").out.startswith("1 entry of 3")
    r = airgap("audit", "show", "--log", log, "--keyid", "abcdef12")
    assert r.code == 2 and "no key in the entries of" in r.err
