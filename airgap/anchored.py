"""The isolated side's one durable record: the audit log, and the caches stamped from it.

The audit log (``STATE/audit.log``) is the history.  ``state.json`` (rollback
state), ``trust.json`` (the trusted policy) and ``bundles/<name>/imported.json``
are caches of it:

* every acceptance that changes the state is an audit entry whose ``detail.state``
  names the trusted policy (version and sha256 of its signed part) and the
  bundle accepted (name, version, manifest digest, build time); the first
  pinning of a policy in a state directory with no history is an entry of its
  own (action ``first-use``);
* ``state.json`` and ``imported.json`` carry ``audit: {seq, head}``, the entry
  they were written for; ``state.json`` names the policy ``trust.json`` must be.

Write order (:func:`commit`, under the exclusive state lock): the audit entry
(or entries), then ``trust.json``, ``manifest.json`` and ``imported.json``,
then ``state.json`` last.  A ``kill -9`` anywhere leaves the log at or ahead of
the caches: the entries after ``state.json``'s stamp are *pending*, and a rerun
of the same bundle under the same policy completes them.  Anything else
refuses (exit 1, :class:`~airgap.exceptions.StateError`) with the file named:
caches that disagree with the log, a log behind a cache, a cache missing while
the log records what it held, a log missing while caches exist.  Only a state
directory with no history at all pins the policy it is given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airgap._internal.fsutil import Dir, read_capped, record_names
from airgap._internal.jsonutil import loads_strict, pretty_bytes
from airgap.audit import GENESIS, Actor, AuditEntry, AuditLog
from airgap.exceptions import AirgapError, FormatError, StateError
from airgap.state import PolicyRef, State, StateStore

__all__ = ["Anchored", "Record", "commit", "load", "RECORD_ACTIONS", "FIRST_USE"]

AUDIT_LOG = "audit.log"
TRUST_FILE = "trust.json"
FIRST_USE = "first-use"
RECORD_ACTIONS = frozenset({FIRST_USE, "verify", "import"})
_MAX_RECORD = 1 << 24
WHAT_TO_DO = (
    "the audit log is this host's record and state.json, trust.json and imported.json are caches of it; "
    "check the log against the head written down outside the box (airgap audit verify --state DIR "
    "--expect-head SEQ:HASH) and treat this host's history as tampered with until an officer has investigated "
    "(restore the state directory from a copy that holds the anchored head)"
)


@dataclass(frozen=True)
class Record:
    """An audit entry that changed the state: the policy it pinned and the bundle it accepted."""

    seq: int
    digest: str
    action: str
    policy: PolicyRef
    bundle: dict[str, str] | None

    def describe(self) -> str:
        what = (f"accepted {self.bundle['name']} {self.bundle['version']} (manifest {self.bundle['manifest_digest']})"
                if self.bundle else "pinned the trust policy (first use)")
        return f"entry {self.seq} ({self.action}) {what} under trust policy version {self.policy.version}"


def _record(entry: AuditEntry, log: Path) -> Record | None:
    if entry.action not in RECORD_ACTIONS or entry.result != "accepted" or "state" not in entry.detail:
        return None
    where = f"{log}:{entry.seq}"
    st = entry.detail["state"]
    if not isinstance(st, dict) or not set(st) <= {"policy", "bundle"} or "policy" not in st:
        raise StateError(where, "detail.state must hold policy (and bundle)")
    bundle = st.get("bundle")
    keys = {"name", "version", "manifest_digest", "created"}
    if bundle is not None and (not isinstance(bundle, dict) or set(bundle) != keys
                               or not all(isinstance(v, str) for v in bundle.values())):
        raise StateError(where, f"detail.state.bundle must hold exactly {', '.join(sorted(keys))}")
    try:
        policy = PolicyRef.parse(st["policy"], where)
    except AirgapError as exc:
        raise StateError(where, getattr(exc, "reason", str(exc))) from None
    return Record(entry.seq, entry.digest, entry.action, policy, bundle)


@dataclass
class Anchored:
    """A state directory whose caches were checked against its audit log."""

    dir: Path
    count: int  # entries in the log
    records: list[Record]
    state: State | None
    trust: PolicyRef | None  # what trust.json holds
    digests: dict[int, str] = field(default_factory=dict)  # seq -> digest of the entries that matter

    @property
    def committed(self) -> int:
        return self.state.audit[0] if self.state is not None else 0

    @property
    def pending(self) -> list[Record]:
        """Records after ``state.json``'s stamp: an interrupted write, completed by rerunning it."""
        return [r for r in self.records if r.seq > self.committed]

    @property
    def pinned(self) -> PolicyRef | None:
        """The policy the history trusts (None: no history, the next record is a first use)."""
        return self.records[-1].policy if self.records else None

    def check_policy(self, policy) -> None:
        """The policy a verification runs under must be the one pending records were written under."""
        ref = PolicyRef.of(policy)
        for r in self.pending:
            if r.policy != ref:
                raise StateError(
                    str(self.dir / "state.json"),
                    f"is behind the audit log: {r.describe()} (sha256 {r.policy.sha256}), but state.json was last "
                    f"written at entry {self.committed}. If that run was interrupted, rerun it with that trust "
                    f"policy (this one is version {ref.version}, sha256 {ref.sha256}) to complete it; otherwise "
                    f"{WHAT_TO_DO}",
                )

    def check_bundle(self, manifest) -> None:
        """Pending records must be this bundle; then the rollback rules by name and destination."""
        for r in self.pending:
            if r.bundle is not None and r.bundle["manifest_digest"] != manifest.digest:
                raise StateError(
                    str(self.dir / "state.json"),
                    f"is behind the audit log: {r.describe()}, but state.json was last written at entry "
                    f"{self.committed}. If that import was interrupted, rerun it with the same bundle and trust "
                    f"policy to complete it before anything else; otherwise {WHAT_TO_DO}",
                )
        if self.state is not None:
            self.state.check(manifest)


def load(state_dir: str | os.PathLike) -> Anchored:
    """Read and cross-check the log and every cache of *state_dir* (under the shared state lock)."""
    store = StateStore(state_dir)
    with store.lock(shared=True):
        return _load(Path(state_dir), store)


def _load(d: Path, store: StateStore) -> Anchored:
    log = d / AUDIT_LOG
    records: list[Record] = []
    digests: dict[int, str] = {}
    count = 0
    for entry in AuditLog(log).entries():
        count = entry.seq
        digests[entry.seq] = entry.digest
        rec = _record(entry, log)
        if rec is not None:
            records.append(rec)
    state = _read(store.path, store.load)
    trust = _read(d / TRUST_FILE, lambda: _trust_ref(d / TRUST_FILE))
    imported = _imported(d)
    a = Anchored(d, count, records, state, trust, digests)
    if count == 0:
        present = [str(p) for p, there in ((store.path, state), (d / TRUST_FILE, trust)) if there is not None]
        present += [path for path, _ in imported.values()]
        if present:
            raise StateError(str(log), f"is {'empty' if log.exists() else 'missing'} but {present[0]} exists: "
                                       f"the history the state was written from is gone; {WHAT_TO_DO}")
        return a
    _check_state(a, log)
    _check_trust(a)
    _check_imported(a, imported, log)
    return a


def _read(path: Path, reader):
    try:
        return reader()
    except StateError:
        raise
    except (AirgapError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise StateError(str(path), f"cannot be read ({reason}); {WHAT_TO_DO}") from None


def _trust_ref(path: Path) -> PolicyRef | None:
    from airgap.trust import TrustPolicy

    if not os.path.lexists(path):
        return None
    return PolicyRef.of(TrustPolicy.from_file(path, f"trusted policy {path}"))


def _check_state(a: Anchored, log: Path) -> None:
    path = str(a.dir / "state.json")
    if a.state is None:
        committed = [r for r in a.records if r.bundle is not None]
        if len({r.bundle["manifest_digest"] for r in a.records if r.bundle is not None}) > 1:
            raise StateError(path, f"is missing, but the audit log records {len(committed)} acceptances (the last: "
                                   f"{committed[-1].describe()}); {WHAT_TO_DO}")
        return  # at most one bundle's records: an interrupted first write, completed by rerunning it
    seq, head = a.state.audit
    if seq > a.count:
        raise StateError(path, f"was written at audit entry {seq}, but the log ({log}) ends at entry {a.count}: "
                               f"the log is behind the state ({seq - a.count} entries cut from its end); {WHAT_TO_DO}")
    if a.digests[seq] != head:
        raise StateError(path, f"was written at audit entry {seq}:{head}, but entry {seq} of the log is "
                               f"{seq}:{a.digests[seq]}: state and log disagree (one of them was rewritten); {WHAT_TO_DO}")
    by_seq = {r.seq: r for r in a.records}
    stamp = by_seq.get(seq)
    if stamp is None or stamp.policy != a.state.policy:
        raise StateError(path, f"names audit entry {seq}, which did not record this state (trust policy "
                               f"version {a.state.policy.version}); state and log disagree; {WHAT_TO_DO}")
    last: dict[str, tuple[Record, dict[str, str]]] = {}
    for r in a.records:
        if r.seq <= seq and r.bundle is not None:
            last[r.bundle["name"]] = (r, r.bundle)
    for name, (r, bundle) in last.items():
        have = a.state.bundles.get(name)
        if have is None or have.manifest_digest != bundle["manifest_digest"]:
            held = f"{have.version} ({have.manifest_digest})" if have else "nothing"
            raise StateError(path, f"holds {held} for {name}, but the audit log's {r.describe()}; "
                                   f"state and log disagree; {WHAT_TO_DO}")
    extra = sorted(set(a.state.bundles) - set(last))
    if extra:
        raise StateError(path, f"records bundle {extra[0]}, which no audit entry up to {seq} accepted; "
                               f"state and log disagree; {WHAT_TO_DO}")


def _check_trust(a: Anchored) -> None:
    path = str(a.dir / TRUST_FILE)
    allowed = {r.policy for r in a.pending}
    if a.state is not None:
        allowed.add(a.state.policy)
    if a.trust is None:
        if a.state is not None:
            raise StateError(path, f"is missing, but state.json (audit entry {a.committed}) trusts policy version "
                                   f"{a.state.policy.version} (sha256 {a.state.policy.sha256}); {WHAT_TO_DO}")
        return
    if a.trust not in allowed:
        want = (f"version {a.state.policy.version} (sha256 {a.state.policy.sha256}) as state.json says"
                if a.state is not None else "a policy the audit log recorded")
        raise StateError(path, f"holds trust policy version {a.trust.version} (sha256 {a.trust.sha256}), not "
                               f"{want}: the trusted policy and the log disagree; {WHAT_TO_DO}")


def _imported(d: Path) -> dict[str, tuple[str, Any]]:
    """``{name: (path, parsed imported.json)}`` for every bundle directory in the state."""
    out: dict[str, tuple[str, Any]] = {}
    bundles = d / "bundles"
    if not bundles.is_dir():
        return out
    for sub in sorted(bundles.iterdir()):
        path = sub / "imported.json"
        if os.path.lexists(path):
            out[sub.name] = (str(path), _read(path, lambda p=path: _imported_doc(p)))
    return out


def _imported_doc(path: Path) -> Any:
    doc = loads_strict(read_capped(path, _MAX_RECORD, "an import record",
                                   too_large=lambda _msg: FormatError(str(path), f"larger than {_MAX_RECORD} bytes")),
                       str(path))
    stamp = doc.get("audit") if isinstance(doc, dict) else None
    if (not isinstance(stamp, dict) or type(stamp.get("seq")) is not int or not isinstance(stamp.get("head"), str)
            or not isinstance(doc.get("manifest_digest"), str)):
        raise StateError(str(path), f"has no audit stamp (written by an airgap without anchored state?); {WHAT_TO_DO}")
    return doc


def _check_imported(a: Anchored, imported: dict[str, tuple[str, Any]], log: Path) -> None:
    imports = {r.seq: r for r in a.records if r.action == "import"}
    for name, (path, doc) in imported.items():
        seq, head = doc["audit"]["seq"], doc["audit"]["head"]
        r = imports.get(seq)
        if seq > a.count:
            raise StateError(path, f"was written at audit entry {seq}, but the log ({log}) ends at entry {a.count}: "
                                   f"the log is behind the state; {WHAT_TO_DO}")
        if a.digests.get(seq) != head or r is None or r.bundle is None or r.bundle["name"] != name \
                or r.bundle["manifest_digest"] != doc["manifest_digest"]:
            raise StateError(path, f"names audit entry {seq}:{head}, which is not the import of {name} "
                                   f"{doc.get('version')} in the log: imported.json and the log disagree; {WHAT_TO_DO}")
    last: dict[str, Record] = {}
    for r in imports.values():
        if r.seq <= a.committed and r.bundle is not None:
            last[r.bundle["name"]] = r
    for name, r in last.items():
        if name not in imported:
            raise StateError(str(a.dir / "bundles" / name / "imported.json"),
                             f"is missing, but the audit log's {r.describe()} (import); {WHAT_TO_DO}")
        if imported[name][1]["audit"]["seq"] < r.seq:
            raise StateError(imported[name][0], f"was written at entry {imported[name][1]['audit']['seq']}, before the "
                                                f"audit log's {r.describe()}: it is an older copy; {WHAT_TO_DO}")


def bundle_ref(manifest) -> dict[str, str]:
    return {"name": manifest.name, "version": manifest.version, "manifest_digest": manifest.digest,
            "created": manifest.created}


def commit(state_dir: str | os.PathLike, verified, action: str, obj: dict[str, Any], detail: dict[str, Any],
           *, imported: dict[str, Any] | None = None, now: str | None = None) -> AuditEntry:
    """Record an accepted bundle: audit entries first, then the caches stamped with them.

    *verified* is the :class:`~airgap.verified.VerifiedBundle` that was accepted
    (its policy came from this state directory's TrustStore).  The officer
    overrides of its report, a first use of the policy, and the acceptance
    (*action*, *obj*, *detail*) are appended; then ``trust.json``, for an import
    ``bundles/<name>/manifest.json`` and ``imported.json`` (*imported* plus the
    stamp), and ``state.json`` last.  Everything is checked again under the
    exclusive lock first, so a concurrent writer cannot slip in between.
    """
    from airgap import trust

    d = Path(state_dir)
    store = StateStore(d)
    manifest, policy = verified.manifest, verified.policy
    ref = PolicyRef.of(policy)
    with store.lock(shared=False):
        a = _load(d, store)
        a.check_policy(policy)
        a.check_bundle(manifest)
        base = a.state or State((0, GENESIS), ref)
        new = base.accept(manifest, time=now)  # raises before anything is written
        log = AuditLog(d / AUDIT_LOG)
        for o in verified.report.overrides:
            log.append("override", record_names({"bundle": verified.report.bundle, "manifest": manifest.digest}),
                       "accepted", actor=Actor.current(o["keyid"]), detail=record_names(o))
        if a.pinned is None:
            log.append(FIRST_USE, {"policy": str(policy.artifact), "target": policy.target, **ref.to_dict()},
                       "accepted", detail={"state": {"policy": ref.to_dict()}})
        entry = log.append(action, record_names(obj), "accepted",
                           detail={**record_names(detail), "state": {"policy": ref.to_dict(),
                                                                     "bundle": bundle_ref(manifest)}})
        stamp = {"seq": entry.seq, "head": entry.digest}
        if a.trust != ref:
            trust.TrustStore(d).record(verified.accepted_policy)
        if imported is not None:
            with Dir.open_root(d) as root, root.walk(f"bundles/{manifest.name}", create=True) as records:
                records.write_atomic("manifest.json", manifest.to_bytes())
                records.write_atomic("imported.json", pretty_bytes(record_names({**imported, "audit": stamp})))
        new.audit, new.policy = (entry.seq, entry.digest), ref
        store.write(new)
    return entry

