"""What a bundle contains and how two bundles differ, for people and for scripts.

Inspection reads only the manifest and the signature envelope (milliseconds for
any size); it never claims the content is intact: that is ``verify``'s job, and
the summary says so.
"""

from __future__ import annotations

import os
from typing import Any

from airgap import sbom
from airgap._internal.text import escape, plural
from airgap.bundle import Bundle
from airgap.dsse import PAYLOAD_TYPE
from airgap.manifest import SIGNATURES_MEMBER, BundleManifest

__all__ = [
    "diff",
    "format_diff",
    "format_sbom",
    "format_summary",
    "has_differences",
    "human_size",
    "sbom_summary",
    "summary",
]


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def summary(path: str | os.PathLike, *, trust_path: str | None = None, against: str | None = None,
            history_dir: str | None = None) -> dict[str, Any]:
    """The manifest, totals, signatures and the review plan (:mod:`airgap.review`) of a bundle."""
    from airgap import review, trust

    # Inspection reports who signed even under an expired policy; verify judges expiry.
    policy = trust.TrustPolicy.load(trust_path, now=None) if trust_path else None
    with Bundle.open(path) as bundle:
        manifest = bundle.manifest()
        envelope = bundle.envelope()
        # What inspect shows is the manifest the signatures cover, or nothing.
        report = trust.verify_envelope(policy, envelope, PAYLOAD_TYPE, bundle.manifest_bytes, artifact=SIGNATURES_MEMBER,
                                       payload_name="the bundle's manifest.json", enforce=False)
        total = bundle.source.size
        plan, _ = review.for_bundle(bundle, manifest, policy, against=against, history_dir=history_dir)
        sboms = plan.sboms
    blobs = [m for m in manifest.members if m.path.startswith("blobs/")]
    files = [m for m in manifest.members if m.path.startswith("files/")]
    out: dict[str, Any] = {
        "bundle": os.fspath(path),
        "size": total,
        "manifest_digest": manifest.digest,
        "manifest": manifest.to_dict(),
        "totals": {
            "images": len(manifest.images),
            "blobs": len(blobs),
            "blob_bytes": sum(m.size for m in blobs),
            "files": len(files),
            "file_bytes": sum(m.size for m in files),
            "external_blobs": len(manifest.external_blobs),
        },
        "signatures": [{"keyid": s.keyid} for s in envelope.signatures],
        # The exact names import writes (REGISTRY is the --registry of the import).
        "destinations": [{"ref": i.ref, "repository": i.destination, "tag": i.tag, "digest": i.digest} for i in manifest.images],
        "review": plan.to_dict(),
        "packages": {i.ref: sbom.count_text(sboms.get(i.digest)) for i in manifest.images},
        "verified": False,
    }
    if report is not None:
        out["trust"] = report.to_dict()
        out["trust_summary"] = report.summary()
    return out


def format_summary(s: dict[str, Any]) -> str:
    m = s["manifest"]
    t = s["totals"]
    lines = [
        f"Bundle    {m['name']} {m['version']}   (target {m['target']})",
        f"File      {s['bundle']} ({human_size(s['size'])})",
        f"Manifest  {s['manifest_digest']}",
        f"Created   {m['created']}   expires {m['expires']}",
        f"Spec      {m['spec']['name']} sha256:{m['spec']['sha256']}",
        f"Toolkit   airgap {m['toolkit']['version']}",
    ]
    if m.get("description"):
        lines.append(f"About     {escape(m['description'])}")
    if m["base"]:
        lines.append(f"Base      differential against {m['base']['kind']} {m['base']['digest']} ({m['base']['description']}); {t['external_blobs']} blobs not carried")
    lines.append(f"Content   {plural(t['images'], 'image')} ({plural(t['blobs'], 'blob')}, {human_size(t['blob_bytes'])}), "
                 f"{plural(t['files'], 'file')} ({human_size(t['file_bytes'])})")
    for img in m["images"]:
        plats = ", ".join(img["platforms"]) or "-"
        extra = [f"chosen from index {img['source_index']}"] if img["source_index"] else []
        if img.get("source"):  # an alias ref: where it was pulled from (the internal name does not depend on it)
            extra.insert(0, f"pulled from {img['registry']}/{img['repository']}")
        if img["sovereignty"]:
            extra.append(f"sovereignty exception: {img['sovereignty']['provider']}: {escape(img['sovereignty']['reason'])}")
        if extra or plats != "-":
            lines.append(f"  {img['ref']}  [{plats}]" + "".join(f"; {e}" for e in extra))
    lines.append("")
    from airgap.review import render

    lines += render(s["review"], show_unchanged=True, limit=None)
    lines.append("")
    if "trust" in s:
        lines.append("Signatures (against the trust policy):")
        lines.append("  " + s["trust_summary"])
    else:
        lines.append(f"Signatures ({len(s['signatures'])}): " + ", ".join(x["keyid"][:16] for x in s["signatures"]))
        lines.append("  (give --trust to see roles and thresholds)")
    lines.append("Not verified: run 'airgap verify' to check signatures, content and policy.")
    return "\n".join(lines)


def sbom_summary(path: str | os.PathLike) -> dict[str, Any]:
    """``inspect --sbom``: every image's packages, from the SBOMs the manifest pins."""
    with Bundle.open(path) as bundle:
        manifest = bundle.manifest()
        sboms = sbom.read_bundle(bundle, manifest)
    images = []
    for i in manifest.images:
        s = sboms.get(i.digest)
        images.append({
            "ref": i.ref,
            "digest": i.digest,
            "sbom": sbom.member_path(i.digest) if s else None,
            "summary": sbom.count_text(s),
            "incomplete": s.incomplete if s else None,
            "notes": s.notes if s else [],
            "packages": sbom.package_rows(s) if s else [],
        })
    return {"bundle": os.fspath(path), "manifest_digest": manifest.digest, "images": images, "verified": False}


def format_sbom(d: dict[str, Any]) -> str:
    lines = []
    for img in d["images"]:
        lines.append(f"{img['ref']}  {img['digest']}")
        lines.append(f"  {img['summary']}" + (f"  ({img['sbom']})" if img["sbom"] else ""))
        if img["packages"]:
            width = max(len(p["name"]) for p in img["packages"])
            vwidth = max(len(p["version"]) for p in img["packages"])
            multi = _multi(img)
            lines.append(f"  {'TYPE':5} {'NAME':{width}}  {'VERSION':{vwidth}}  ARCH")
            for p in img["packages"]:
                plats = f"  [{', '.join(p['platforms'])}]" if multi else ""
                lines.append(f"  {p['type']:5} {p['name']:{width}}  {p['version']:{vwidth}}  {p['arch'] or '-'}{plats}")
        for note in img["notes"]:
            lines.append(f"  note: {note}")
        lines.append("")
    lines.append("Not verified: run 'airgap verify' to check signatures, content and policy.")
    return "\n".join(lines)


def _multi(img: dict[str, Any]) -> bool:
    return len({tuple(p["platforms"]) for p in img["packages"]}) > 1 or any(len(p["platforms"]) > 1 for p in img["packages"])


def _images(m: BundleManifest) -> dict[str, Any]:
    return {i.ref: i for i in m.images}


def _files(m: BundleManifest) -> dict[str, Any]:
    return {x.path[6:]: x for x in m.members if x.path.startswith("files/")}


def _repository(ref: str) -> str:
    """*ref* without its tag and digest: what stays the same when an image is bumped."""
    rest = (ref[len("oci:"):] if ref.startswith("oci:") else ref).split("@", 1)[0]
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        rest = rest[:colon]
    return ("oci:" if ref.startswith("oci:") else "") + rest


def _image_changes(ia: dict[str, Any], ib: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """Added, removed and changed images: a changed digest under the same reference, or a new
    tag or digest of the same repository (one on each side), is a change, not a removal and an addition."""
    changed = [{"ref": r, "from": ia[r].digest, "to_ref": r, "to": ib[r].digest}
               for r in sorted(set(ia) & set(ib)) if ia[r].digest != ib[r].digest]
    only_a, only_b = sorted(set(ia) - set(ib)), sorted(set(ib) - set(ia))
    for repo in sorted({_repository(r) for r in only_a}):
        olds = [r for r in only_a if _repository(r) == repo]
        news = [r for r in only_b if _repository(r) == repo]
        if len(olds) == 1 and len(news) == 1:
            changed.append({"ref": olds[0], "from": ia[olds[0]].digest, "to_ref": news[0], "to": ib[news[0]].digest})
            only_a.remove(olds[0])
            only_b.remove(news[0])
    return {
        "added": [{"ref": r, "digest": ib[r].digest} for r in only_b],
        "removed": [{"ref": r, "digest": ia[r].digest} for r in only_a],
        "changed": sorted(changed, key=lambda c: c["ref"]),
    }


def diff(path_a: str | os.PathLike, path_b: str | os.PathLike) -> dict[str, Any]:
    with Bundle.open(path_a) as a, Bundle.open(path_b) as b:
        ma, mb = a.manifest(), b.manifest()
        sa, sb = sbom.read_bundle(a, ma), sbom.read_bundle(b, mb)
    ia, ib = _images(ma), _images(mb)
    fa, fb = _files(ma), _files(mb)
    blobs_a = {x.path: x.size for x in ma.members if x.path.startswith("blobs/")}
    blobs_b = {x.path: x.size for x in mb.members if x.path.startswith("blobs/")}
    new_blobs = set(blobs_b) - set(blobs_a)
    return {
        "a": {"name": ma.name, "version": ma.version, "manifest_digest": ma.digest},
        "b": {"name": mb.name, "version": mb.version, "manifest_digest": mb.digest},
        "images": _image_changes(ia, ib),
        "files": {
            "added": sorted(set(fb) - set(fa)),
            "removed": sorted(set(fa) - set(fb)),
            "changed": sorted(p for p in set(fa) & set(fb) if (fa[p].sha256, fa[p].mode) != (fb[p].sha256, fb[p].mode)),
        },
        "packages": {
            r: sbom.diff_packages(sa.get(ia[r].digest), sb.get(ib[r].digest))
            for r in sorted(set(ia) & set(ib))
            if ia[r].digest != ib[r].digest
        },
        "blobs": {
            "shared": len(set(blobs_a) & set(blobs_b)),
            "new": len(new_blobs),
            "new_bytes": sum(blobs_b[p] for p in new_blobs),
        },
        "workloads": _changes(_workload_images(ma), _workload_images(mb)),
        "os_packages": _changes(_package_versions(ma), _package_versions(mb)),
    }


def _workload_images(m: BundleManifest) -> dict[str, str]:
    """``workload object field`` -> the digest it runs."""
    return {f"{w.name} {i.object} {i.field}": i.digest for w in m.workloads for i in w.images}


def _package_versions(m: BundleManifest) -> dict[str, str]:
    return {f"{d.package}:{d.architecture}": d.version for d in (m.packages.debs if m.packages else ())}


def _changes(a: dict[str, str], b: dict[str, str]) -> dict[str, list]:
    return {
        "added": [{"name": k, "value": b[k]} for k in sorted(set(b) - set(a))],
        "removed": [{"name": k, "value": a[k]} for k in sorted(set(a) - set(b))],
        "changed": [{"name": k, "from": a[k], "to": b[k]} for k in sorted(set(a) & set(b)) if a[k] != b[k]],
    }


def format_diff(d: dict[str, Any]) -> str:
    lines = [diff_summary(d)]
    im, fl = d["images"], d["files"]
    if any(im.values()):
        lines.append("images:")
        for x in im["changed"]:
            to = x["to"] if x["to_ref"] == x["ref"] else f"{x['to_ref']} {x['to']}"
            lines.append(f"  changed: {x['ref']} {x['from']} → {to}")
        lines += [f"  added:   {x['ref']} {x['digest']}" for x in im["added"]]
        lines += [f"  removed: {x['ref']} {x['digest']}" for x in im["removed"]]
    if any(fl.values()):
        lines.append("files:")
        lines += [f"  changed: {p}" for p in fl["changed"]]
        lines += [f"  added:   {p}" for p in fl["added"]]
        lines += [f"  removed: {p}" for p in fl["removed"]]
    packages = {ref: pk for ref, pk in d.get("packages", {}).items() if any(pk.values())}
    if packages:
        lines.append("packages:")

        def what(x):
            return f"{x['type']} {x['name']}" + (f" ({x['arch']})" if x["arch"] else "") + (f" [{x['platform']}]" if x["platform"] else "")
        for ref, pk in packages.items():
            lines += [f"  changed: {ref}  {what(x)} {x['from']} → {x['to']}" for x in pk["changed"]]
            lines += [f"  added:   {ref}  {what(x)} {x['version']}" for x in pk["added"]]
            lines += [f"  removed: {ref}  {what(x)} {x['version']}" for x in pk["removed"]]
    for section, title in (("workloads", "workloads (which digest each container runs)"), ("os_packages", "os packages")):
        ch = d.get(section) or {"added": [], "removed": [], "changed": []}
        if any(ch.values()):
            lines.append(f"{title}:")
            lines += [f"  changed: {x['name']}  {x['from']} → {x['to']}" for x in ch["changed"]]
            lines += [f"  added:   {x['name']}  {x['value']}" for x in ch["added"]]
            lines += [f"  removed: {x['name']}  {x['value']}" for x in ch["removed"]]
    bl = d["blobs"]
    lines.append(f"blobs: {bl['shared']} shared, {bl['new']} new ({human_size(bl['new_bytes'])})")
    return "\n".join(lines)


def diff_summary(d: dict[str, Any]) -> str:
    """One line: the two bundles and how many images and files differ."""
    head = f"{d['a']['name']} {d['a']['version']} -> {d['b']['name']} {d['b']['version']}"
    counts = [f"{plural(len(d[section][kind]), noun)} {kind}" for section, noun in (("images", "image"), ("files", "file"))
              for kind in ("changed", "added", "removed") if d[section][kind]]
    for kind in ("changed", "added", "removed"):
        n = sum(len(pk[kind]) for pk in d.get("packages", {}).values())
        if n:
            counts.append(f"{plural(n, 'package')} {kind}")
    for section, noun in (("workloads", "workload container"), ("os_packages", "OS package")):
        counts += [f"{plural(len(d[section][kind]), noun)} {kind}" for kind in ("changed", "added", "removed")
                   if d.get(section, {}).get(kind)]
    return f"{head}: {', '.join(counts)}" if counts else f"{head}: no image, file or package differs"


def has_differences(d: dict[str, Any]) -> bool:
    return (any(d["images"][k] for k in d["images"]) or any(d["files"][k] for k in d["files"])
            or any(v for pk in d.get("packages", {}).values() for v in pk.values())
            or any(v for section in ("workloads", "os_packages") for v in d[section].values()))
