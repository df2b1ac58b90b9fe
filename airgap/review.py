"""What an officer approves: the review plan that ``sign`` and ``inspect`` both print.

Four eyes are only four eyes if the second pair can see what it approves.  A
plan compares the bundle, member class by member class, with the previous
bundle of the same name (``--against PREVIOUS`` or the officer's history, see
:mod:`airgap.history`): images with their old and new digests, files with
sizes, modes and digests, wheels with whether a toolkit release covers them.

Anything that will run as code on the isolated hosts comes first, marked
``CODE``: wheels, OS packages, files with an exec bit, scripts and Ansible
content (:func:`runs_as_code`).  What of it is added or changed needs its own
explicit yes (:attr:`Review.code_to_approve`).

The plan is a list of :class:`Section` objects built by the functions in
:data:`SECTIONS`; a new member class (SBOM packages, files' destinations)
adds a builder there or notes to the items, and both verbs print it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airgap import history, sbom, toolkit
from airgap._internal.text import escape
from airgap.history import History, Previous
from airgap.manifest import BundleManifest, ImageRecord, MemberRecord

__all__ = ["SECTIONS", "Item", "Review", "Section", "build", "for_bundle", "render", "runs_as_code"]

ADDED, REMOVED, CHANGED, UNCHANGED = "added", "removed", "changed", "unchanged"
_MARK = {ADDED: "+", REMOVED: "-", CHANGED: "~", UNCHANGED: "="}
FILES = "files/"

_SCRIPT_SUFFIXES = {".sh": "shell script", ".bash": "shell script", ".py": "Python script", ".pl": "Perl script",
                    ".rb": "Ruby script", ".ps1": "PowerShell script"}
_PACKAGE_SUFFIXES = {".deb": "OS package", ".rpm": "OS package", ".apk": "OS package"}
_UNIT_SUFFIXES = (".service", ".timer", ".socket", ".path")
_ANSIBLE_DIRS = {"playbooks", "roles", "library", "module_utils", "filter_plugins", "action_plugins", "tasks",
                 "handlers"}


def runs_as_code(path: str, mode: int) -> str | None:
    """Why a bundle member will run as code on an isolated host, or None for data."""
    if not path.startswith(FILES):
        return None
    rel = path[len(FILES):]
    name = rel.rsplit("/", 1)[-1]
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if rel.startswith("wheels/") and suffix == ".whl":
        return "wheel: installed with pip, runs as the toolkit"
    if suffix in _PACKAGE_SUFFIXES:
        return f"{_PACKAGE_SUFFIXES[suffix]}: installed by the package manager, runs maintainer scripts as root"
    if mode & 0o111:
        return "executable: exec bit set"
    if suffix in _SCRIPT_SUFFIXES:
        return _SCRIPT_SUFFIXES[suffix]
    if suffix in _UNIT_SUFFIXES:
        return "systemd unit: starts programs"
    if _ANSIBLE_DIRS & set(rel.split("/")[:-1]):
        return "Ansible content"
    return None


# --------------------------------------------------------------------------- the plan


@dataclass
class Item:
    """One member of a class, and how it differs from the previous bundle's."""

    kind: str  # "image", "file", "wheel", ...
    name: str
    status: str  # added | removed | changed | unchanged
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    code: str | None = None  # why it runs as code, if it does
    notes: list[str] = field(default_factory=list)
    warn: bool = False  # shown even when unchanged (a wheel no release covers)

    @property
    def needs_approval(self) -> bool:
        """New or changed code: what the officer must say yes to separately."""
        return self.status in (ADDED, CHANGED) and self.new is not None and self.code is not None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "status": self.status, "old": self.old, "new": self.new,
                "code": self.code, "notes": self.notes, "warn": self.warn}


@dataclass
class Section:
    key: str
    title: str
    items: list[Item] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # about the class as a whole

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in self.items:
            out[i.status] = out.get(i.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "counts": self.counts(), "lines": self.lines,
                "items": [i.to_dict() for i in self.items]}


@dataclass
class Context:
    """What a section builder may look at."""

    manifest: BundleManifest
    previous: BundleManifest | None
    coverage: toolkit.Coverage | None
    sboms: dict = field(default_factory=dict)  # image digest -> sbom.ImageSbom of this bundle
    previous_sboms: dict = field(default_factory=dict)
    previous_sbom_problem: str | None = None


@dataclass
class Review:
    manifest: BundleManifest
    previous: Previous | None
    sections: list[Section]
    notes: list[str] = field(default_factory=list)
    coverage: toolkit.Coverage | None = None
    sboms: dict = field(default_factory=dict)  # image digest -> sbom.ImageSbom (for inspect's counts)
    sbom_members: dict = field(default_factory=dict)  # member path -> bytes, kept in the history by sign

    @property
    def code_to_approve(self) -> list[Item]:
        return [i for s in self.sections for i in s.items if i.needs_approval]

    def to_dict(self) -> dict[str, Any]:
        prev = self.previous
        return {
            "previous": None if prev is None else {
                "name": prev.manifest.name, "version": prev.manifest.version,
                "manifest_digest": prev.manifest.digest, "source": prev.source,
                "signatures": prev.signatures, "problem": prev.problem,
            },
            "notes": self.notes,
            "sections": [s.to_dict() for s in self.sections],
            "code_to_approve": [i.name for i in self.code_to_approve],
            "toolkit": self.coverage.to_dict() if self.coverage else None,
        }

    def render(self, *, show_unchanged: bool = False, limit: int | None = 200) -> list[str]:
        return render(self.to_dict(), show_unchanged=show_unchanged, limit=limit)


def render(doc: dict[str, Any], *, show_unchanged: bool = False, limit: int | None = 200) -> list[str]:
    """The plan for people, from its JSON form (so ``--json`` and the text never disagree).

    Code is never shortened; other classes show at most *limit* changed items
    (``--json`` has every one) and count what is unchanged unless *show_unchanged*.
    """
    prev = doc["previous"]
    if prev is None:
        lines = ["No earlier bundle of this name to compare with: everything below is new"]
    else:
        lines = [f"Compared with {prev['name']} {prev['version']} (manifest {prev['manifest_digest'][:23]}…, "
                 f"{prev['source']})"]
        if prev["problem"]:
            lines.append(f"  WARNING: that bundle is not accepted by the trust policy: {prev['problem']}")
    lines += [f"  note: {n}" for n in doc["notes"]]
    for section in doc["sections"]:
        lines += _render_section(section, show_unchanged, None if section["key"] == "code" else limit)
    return lines


def _render_section(section: dict[str, Any], show_unchanged: bool, limit: int | None) -> list[str]:
    counts = section["counts"]
    summary = ", ".join(f"{n} {s}" for s in (ADDED, REMOVED, CHANGED, UNCHANGED) if (n := counts.get(s)))
    lines = [f"{section['title']} ({summary or 'none'}):"]
    lines += [f"  {x}" for x in section["lines"]]
    shown = [i for i in section["items"] if show_unchanged or i["status"] != UNCHANGED or i["warn"]]
    cut = shown[limit:] if limit is not None else []
    for item in shown[:len(shown) - len(cut)]:
        lines += _render_item(item)
    if cut:
        lines.append(f"  … and {len(cut)} more (--json lists every one)")
    hidden = counts.get(UNCHANGED, 0) - sum(1 for i in shown if i["status"] == UNCHANGED)
    if hidden:
        lines.append(f"  = {hidden} unchanged")
    return lines


def _render_item(item: dict[str, Any]) -> list[str]:
    mark = _MARK[item["status"]] + (" CODE" if item["code"] else "")
    old, new = item["old"], item["new"]
    # Names come from the bundle: escaped, so the officer reads what the machine will use.
    if item["kind"] in ("image", "workload"):
        # A workload's item is one image reference as written, and the digest it runs.
        label, sep = ("image ", "  ") if item["kind"] == "image" else ("", " -> ")
        lines = [f"  {mark} {label}{escape(item['name'])}"]
        if item["status"] == CHANGED:
            lines += [f"      {escape(old['ref'])}{sep}{old['digest']}", f"   -> {escape(new['ref'])}{sep}{new['digest']}"]
        else:
            state = new or old
            lines.append(f"      {escape(state['ref'])}{sep}{state['digest']}")
        if new is not None and new.get("writes"):
            lines.append(f"      import writes {escape(new['writes'])}")
    elif item["kind"] == "package":
        desc = f"{old['version']} -> {new['version']}" if item["status"] == CHANGED else (new or old)["version"]
        lines = [f"  {mark} package {escape(item['name'])}  {escape(desc)}"]
    else:
        desc = f"{_state(old)} -> {_state(new)}" if item["status"] == CHANGED else _state(new or old)
        lines = [f"  {mark} {item['kind']} {escape(item['name'])}  {desc}"]
    if item["code"]:
        lines.append(f"      ({item['code']})")
    lines += [f"      {n}" for n in item["notes"]]
    return lines


def _state(s: dict[str, Any]) -> str:
    from airgap.inspect import human_size

    return f"{s['mode']:04o} {human_size(s['size'])} sha256:{s['sha256'][:16]}…"


# --------------------------------------------------------------------------- building it


def _pair(new: dict[str, Any], old: dict[str, Any]):
    for key in sorted(set(new) | set(old)):
        a, b = old.get(key), new.get(key)
        if a is None:
            yield key, ADDED, None, b
        elif b is None:
            yield key, REMOVED, a, None
        else:
            yield key, (UNCHANGED if a == b else CHANGED), a, b


def _file_state(m: MemberRecord) -> dict[str, Any]:
    return {"size": m.size, "sha256": m.sha256, "mode": m.mode}


def _files(manifest: BundleManifest | None) -> dict[str, MemberRecord]:
    return {} if manifest is None else {m.path: m for m in manifest.members if m.path.startswith(FILES)}


def _file_items(ctx: Context, want_code: bool) -> list[Item]:
    new, old = _files(ctx.manifest), _files(ctx.previous)
    items = []
    for path, status, a, b in _pair(new, old):
        code = runs_as_code(path, b.mode) if b else None
        code = code or (runs_as_code(path, a.mode) if a else None)
        if bool(code) != want_code:
            continue
        # The toolkit's own test of what it installs: coverage() judged exactly these.
        kind = "wheel" if toolkit.is_bundle_wheel(path) else "file"
        item = Item(kind, path[len(FILES):], status, a and _file_state(a), b and _file_state(b), code)
        if kind == "wheel" and b is not None and ctx.coverage is not None:
            why = ctx.coverage.uncovered.get(path)
            item.warn = why is not None
            if why is not None:
                item.notes.append(f"NOT COVERED, will not be installed: {why}")
            else:
                # coverage() put every carried wheel in covered or uncovered, and
                # covers one only against a release.
                assert ctx.coverage.release is not None
                item.notes.append(f"covered by toolkit release {ctx.coverage.release.version}")
        items.append(item)
    return items


def _code_section(ctx: Context) -> Section:
    section = Section("code", "RUNS AS CODE on the isolated hosts", _file_items(ctx, True))
    cov = ctx.coverage
    if cov is not None and (cov.wheels or cov.release is not None):
        if cov.release is not None:
            head = f"toolkit release {cov.release.short}"
            section.lines.append(f"{head}: {cov.signers}" if cov.statement_problem is None
                                 else f"{head}: DOES NOT COUNT: {cov.statement_problem}")
        else:
            section.lines.append(f"NO toolkit release counts: {cov.statement_problem}; isolated hosts keep their "
                                 "installed toolkit")
        section.lines += [f"{toolkit.RELEASE_MEMBER} lists {f}, which the bundle does not carry" for f in cov.missing]
    approve = [i for i in section.items if i.needs_approval]
    if approve:
        section.title += f"; {len(approve)} added or changed, each needs your separate yes"
    return section


def _image_key(images: tuple[ImageRecord, ...], other: tuple[ImageRecord, ...]):
    """Images are matched by repository (so a new tag is a change), by reference when a repository repeats."""
    mine, theirs = Counter(i.repository for i in images), Counter(i.repository for i in other)
    return lambda i: i.repository if mine[i.repository] == 1 and theirs[i.repository] <= 1 else i.ref


def _image_pairs(ctx: Context):
    """(key, status, old image state, new image state) for every image of either bundle."""
    old_images = ctx.previous.images if ctx.previous else ()
    key_new = _image_key(ctx.manifest.images, old_images)
    key_old = _image_key(old_images, ctx.manifest.images)
    # "writes": the exact repository path, tag and digest import writes (derived from the ref).
    new = {key_new(i): {"ref": i.ref, "digest": i.digest, "writes": i.destination_text()} for i in ctx.manifest.images}
    old = {key_old(i): {"ref": i.ref, "digest": i.digest, "writes": _writes(i)} for i in old_images}
    for key, status, a, b in _pair(new, old):
        if status == CHANGED and a["digest"] == b["digest"] and a["writes"] == b["writes"]:
            status = UNCHANGED  # the same content under another spelling of the same name
        yield key, status, a, b


def _writes(record: ImageRecord) -> str | None:
    try:
        return record.destination_text()
    except ValueError:  # an older bundle whose ref gives no valid internal name
        return None


def _images_section(ctx: Context) -> Section:
    items = []
    for key, status, a, b in _image_pairs(ctx):
        item = Item("image", key, status, a, b)
        if b is not None and ctx.sboms is not None:
            item.notes.append(f"SBOM: {sbom.count_text(ctx.sboms.get(b['digest']))}")
        items.append(item)
    return Section("images", "Images", items)


def _packages_section(ctx: Context) -> Section | None:
    """What the SBOMs say changed inside each changed image: packages added, removed, other versions."""
    section = Section("packages", "Packages in changed images (from the SBOMs)")
    for key, status, a, b in _image_pairs(ctx):
        if status != CHANGED:
            continue
        new, old = ctx.sboms.get(b["digest"]), ctx.previous_sboms.get(a["digest"])
        if new is None or old is None:
            why = ctx.previous_sbom_problem or "the previous bundle carries no SBOM for it" if old is None else \
                "this bundle carries no SBOM for it"
            section.lines.append(f"{escape(key)}: packages not compared: {why}")
            continue
        d = sbom.diff_packages(old, new)
        for status_, rows in ((ADDED, d["added"]), (REMOVED, d["removed"]), (CHANGED, d["changed"])):
            for r in rows:
                name = f"{key}: {r['type']} {r['name']}" + (f" ({r['arch']})" if r["arch"] else "") + (
                    f" [{r['platform']}]" if r["platform"] else "")
                if status_ == CHANGED:
                    section.items.append(Item("package", name, CHANGED, {"version": r["from"]}, {"version": r["to"]}))
                else:
                    state = {"version": r["version"]}
                    section.items.append(Item("package", name, status_, None if status_ == ADDED else state,
                                              state if status_ == ADDED else None))
    return section if section.items or section.lines else None


def _other_files_section(ctx: Context) -> Section:
    return Section("files", "Files", _file_items(ctx, False))


def _workloads_section(ctx: Context) -> Section | None:
    """Each workload's image references and the digest each runs (the manifest's own record)."""
    def uses(manifest: BundleManifest | None) -> dict[str, dict[str, Any]]:
        return {f"{w.name}: {u.object} {u.field}": {"ref": u.ref, "digest": u.digest}
                for w in (manifest.workloads if manifest else ()) for u in w.images}

    new, old = uses(ctx.manifest), uses(ctx.previous)
    if not new and not old:
        return None
    section = Section("workloads", "Workloads (Kubernetes manifests): the digest each container runs",
                      [Item("workload", key, status, a, b) for key, status, a, b in _pair(new, old)])
    section.lines += [f"{w.name}: {', '.join(w.objects)}" for w in ctx.manifest.workloads]
    return section


def _os_packages_section(ctx: Context) -> Section | None:
    """The nodes' OS packages: what was asked for; the .deb files are under RUNS AS CODE."""
    def versions(manifest: BundleManifest | None) -> dict[str, dict[str, Any]]:
        p = manifest.packages if manifest else None
        return {f"{d.package} ({d.architecture})": {"version": d.version} for d in (p.debs if p else ())}

    p = ctx.manifest.packages
    new, old = versions(ctx.manifest), versions(ctx.previous)
    if p is None and not old:
        return None
    section = Section("os_packages", "OS packages for the nodes (dependency-closed by apt)",
                      [Item("package", key, status, a, b) for key, status, a, b in _pair(new, old)])
    if p is not None:
        section.lines.append(f"for {p.release}/{p.architecture}, asked for: {', '.join(p.names)}; "
                             "installed with apt from the bundle's own repository")
    return section


#: The section builders, in the order they are printed (code first).  Another
#: member class adds its builder here.
SECTIONS: list[Callable[[Context], Section | None]] = [_code_section, _images_section, _packages_section,
                                                      _workloads_section, _os_packages_section,
                                                      _other_files_section]


def build(manifest: BundleManifest, *, previous: Previous | None, policy=None, statement: bytes | None = None,
          notes: list[str] | None = None, sboms: dict | None = None) -> Review:
    """The plan for *manifest*: *statement* is the toolkit release member's bytes (None: not carried),
    *sboms* its SBOMs by image digest."""
    carries_wheels = bool(toolkit.bundle_wheels(manifest)) or statement is not None
    coverage = toolkit.coverage(manifest, policy, statement) if carries_wheels else None
    ctx = Context(manifest, previous.manifest if previous else None, coverage, sboms or {},
                  previous.sboms if previous else {}, previous.sbom_problem if previous else None)
    sections = [s for s in (builder(ctx) for builder in SECTIONS) if s is not None]
    return Review(manifest, previous, sections, list(notes or []), coverage, sboms or {})


def for_bundle(bundle, manifest: BundleManifest, policy=None, *, against: str | os.PathLike | None = None,
               history_dir: str | os.PathLike | None = None) -> tuple[Review, History | None]:
    """The plan for an opened bundle: compared with *against*, else with the history (which
    needs the policy, to judge its records).  Returns the history too, for ``sign`` to record in."""
    statement = toolkit.read_member_checked(bundle, manifest, toolkit.RELEASE_MEMBER, toolkit.MAX_RELEASE_BYTES)
    members = {m.path: toolkit.read_record_checked(bundle, m, sbom.MAX_SBOM_BYTES)
               for m in manifest.members if m.path.startswith(sbom.PREFIX)}
    sboms = sbom.read_bundle(history.MemberBytes(members), manifest)
    notes: list[str] = []
    hist = History(Path(history_dir), manifest.target) if history_dir is not None and policy is not None else None
    previous = None
    if against is not None:
        previous = history.from_bundle(against, policy)
        old = previous.manifest
        if old.name != manifest.name:
            notes.append(f"--against is a bundle of {old.name}, this one is {manifest.name}")
        if old.digest == manifest.digest:
            notes.append("--against is this very bundle: nothing can differ")
    elif hist is not None:
        previous = hist.previous(manifest, policy)
        notes += [f"passed over {s}" for s in hist.skipped]
        if previous is None:
            notes.append(f"no earlier bundle of {manifest.name} signed under this policy in {hist.directory}")
    else:
        notes.append("no trust policy, so no history to compare with: give --trust, or --against PREVIOUS")
    plan = build(manifest, previous=previous, policy=policy, statement=statement, notes=notes, sboms=sboms)
    plan.sbom_members = members
    return plan, hist
