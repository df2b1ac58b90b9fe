"""The bundle spec: what an engineer asks a bundle to carry.

A spec is a small YAML file (``bundles/<name>/bundle.yaml``)::

    apiVersion: airgap/v1
    kind: Bundle
    metadata: {name: geheim-pilot, version: 1.0.0, target: geheim-pilot, expires: 180d}
    images:
      - ref: ${AIRGAP_SOURCE_REGISTRY:-127.0.0.1:5000}/pilot/status:1.0
      - ref: oci:images/layout:status-1.0
        platforms: [linux/amd64]
        allow: {reason: "..."}
    files:
      - {src: configs/, dest: configs/, mode: "0644"}
    wheels: true

Loading is strict, because a spec is the root of everything a bundle claims:

* YAML is parsed with the safe loader, but duplicate keys, aliases, merge keys,
  non-text keys and YAML 1.1 timestamps are refused or kept as text, and a
  value YAML silently turned into a number (``version: 1.0``, ``mode: 0644``)
  is refused with a message that says to quote it;
* the document is validated against ``schemas/spec.schema.json`` (JSON Schema
  2020-12, ``additionalProperties: false`` everywhere) and the most relevant
  error is reported with a field path such as ``images[2].ref``;
* semantic checks follow: files stay inside the spec's directory (no ``..``,
  no symlink escape, no devices or FIFOs), destinations are normalised and do
  not collide, image references are unique, ``expires`` lies in the future.

Every failure is a :class:`~airgap.exceptions.SpecError` (exit code 2).

Variable substitution is deliberately tiny: only in ``images[].ref``, only the
variables in :data:`ALLOWED_VARIABLES`, syntax ``${NAME}`` or
``${NAME:-default}``, and the value must be a registry ``host[:port]``.  The
reference as written stays available (:attr:`ImageSource.spec_ref`) next to
the resolved one (:attr:`ImageSource.ref`), and :attr:`BundleSpec.variables`
records what was substituted, so a bundle manifest can show both.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import posixpath
import re
import stat
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import jsonschema.exceptions

from airgap import caps
from airgap._internal import fsutil, strictyaml, timefmt
from airgap._internal.schema import field_path
from airgap._internal.text import escape, refusal
from airgap.exceptions import InputError, InvalidValueError, SpecError
from airgap.reference import Reference, internal_repository, parse_reference

__all__ = [
    "ALLOWED_VARIABLES",
    "API_VERSION",
    "BundleSpec",
    "FileSource",
    "ImageSource",
    "KIND",
    "MAX_FILES",
    "MAX_SPEC_BYTES",
    "Metadata",
    "PackagesSource",
    "RESERVED_DESTS",
    "WorkloadSource",
    "load_spec",
    "resolve_expires",
    "spec_digest",
    "spec_schema",
]

API_VERSION = "airgap/v1"
KIND = "Bundle"

MAX_SPEC_BYTES = 1 << 20
"""A spec larger than this is refused unread (it is a few hundred bytes in practice)."""

MAX_FILES = caps.MAX_MEMBERS
"""Upper bound on the number of files all ``files`` entries may expand to (a bundle holds no more members)."""

ALLOWED_VARIABLES: dict[str, str] = {
    "AIRGAP_SOURCE_REGISTRY": "the connected-side registry the images are pulled from (host[:port])",
}
"""Variables that may be substituted into ``images[].ref`` (name -> meaning)."""

_VAR_RE = re.compile(r"\$\{([^}:]*)(?::-([^}]*))?\}")
_HOST_PORT_RE = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:]+\])(?::[0-9]{1,5})?"
)
_DURATION_RE = re.compile(r"([1-9][0-9]{0,5})([smhdw])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


# --- typed result ------------------------------------------------------------


@dataclass(frozen=True)
class Metadata:
    """``metadata``: identity of the bundle and how long it is valid."""

    name: str
    version: str
    target: str
    expires: str
    """As written: a duration such as ``180d`` or an RFC 3339 UTC time."""
    expires_at: datetime
    """``expires`` resolved against the ``now`` given to :func:`load_spec` (UTC, whole seconds)."""
    description: str | None = None


@dataclass(frozen=True)
class ImageSource:
    """One ``images[]`` entry."""

    ref: str
    """The reference after variable substitution (what is pulled)."""
    kind: str
    """``"registry"`` or ``"oci-layout"``."""
    layout_path: Path | None = None
    """Absolute, resolved path of the OCI layout (``oci-layout`` kind only)."""
    tag: str | None = None
    platforms: tuple[str, ...] | None = None
    """Platforms to take from a multi-arch index; ``None`` means all."""
    allow_reason: str | None = None
    """The written reason for a sovereignty exception, if any."""
    spec_ref: str = ""
    """The reference exactly as written in the spec (before substitution)."""
    digest: str | None = None
    """``sha256:…`` if the reference pins a digest."""
    reference: Reference | None = None
    """Parsed, normalised registry reference (``registry`` kind only)."""
    index: int = 0
    """Position in ``images`` (for messages: ``images[{index}].ref``)."""
    alias: str | None = None
    """The ``sources`` alias the reference is written with (``pilot`` in ``pilot/status:1.0``), if any."""
    internal: str = ""
    """The repository path import gives the image in the internal registry: ``ALIAS/PATH`` for
    an aliased reference, else ``HOST[_PORT]/PATH`` (:func:`airgap.reference.internal_repository`)."""

    @property
    def registry(self) -> str | None:
        """Registry host[:port] of a ``registry`` source, ``None`` for a local layout."""
        return self.reference.registry if self.reference else None

    @property
    def field(self) -> str:
        """``images[i].ref``: where this source is written in the spec."""
        return f"images[{self.index}].ref"


@dataclass(frozen=True)
class FileSource:
    """One ``files[]`` entry, expanded to the files it contributes."""

    src: Path
    """Absolute, resolved source path (a file or a directory)."""
    dest: str
    """Normalised relative path inside the bundle's ``files/`` tree (no trailing '/')."""
    mode: int | None = None
    """Permission override (e.g. ``0o644``) for every file of the entry, or ``None``."""
    is_dir: bool = False
    entries: tuple[tuple[str, Path], ...] = ()
    """Every regular file: (path relative to ``files/``, absolute resolved source), sorted."""
    index: int = 0


@dataclass(frozen=True)
class WorkloadSource:
    """One ``workloads[]`` entry: Kubernetes manifests carried under ``files/workloads/<name>/``."""

    name: str
    entries: tuple[tuple[str, Path], ...]
    """Every YAML file: (path relative to the workload, absolute resolved source), sorted."""
    index: int = 0


@dataclass(frozen=True)
class PackagesSource:
    """``packages``: Debian packages resolved by apt on the connected side."""

    release: str
    architecture: str
    sources: Path
    """Absolute path of the apt sources file (one-line ``.list`` or deb822 ``.sources``)."""
    baseline: Path | None
    """dpkg status of the target's base system (what it holds is not carried), or None (carry everything)."""
    names: tuple[str, ...]


RESERVED_DESTS = ("wheels", "workloads", "packages")
"""Top directories of ``files/`` that the bundle fills itself; ``files[].dest`` may not use them."""


@dataclass(frozen=True)
class BundleSpec:
    """A validated bundle spec."""

    path: Path
    """Absolute path of the spec file."""
    base_dir: Path
    """Resolved directory of the spec file; every ``src`` stays inside it."""
    digest: str
    """``sha256:<hex>`` of the exact spec bytes that were validated."""
    metadata: Metadata
    images: tuple[ImageSource, ...] = ()
    files: tuple[FileSource, ...] = ()
    wheels: bool = False
    variables: Mapping[str, str] = field(default_factory=dict)
    """Variables substituted into image references and sources (name -> value used)."""
    sources: Mapping[str, str] = field(default_factory=dict)
    """Source aliases (``pilot`` -> ``127.0.0.1:5000/pilot``), variables substituted."""
    workloads: tuple[WorkloadSource, ...] = ()
    packages: PackagesSource | None = None
    lines: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)
    """Where each field is written (``images[0].ref`` -> line), for :meth:`locate`."""

    def locate(self, exc: SpecError) -> SpecError:
        """A SpecError raised after loading (while building) with this spec's file and line."""
        return exc.located(str(self.path), line_of(self.lines, exc.field))


# --- public functions ----------------------------------------------------------


def spec_digest(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of the spec file's bytes (raises InputError if unreadable)."""
    return "sha256:" + hashlib.sha256(_read_spec_bytes(Path(path))).hexdigest()


def resolve_expires(expires: str, now: datetime) -> datetime:
    """Turn ``expires`` (``180d`` or ``2026-06-30T00:00:00Z``) into an aware UTC datetime.

    Durations count from *now* (which must be timezone-aware) and are rounded down
    to whole seconds.  Raises SpecError on ``metadata.expires``; does not check that
    the result lies in the future (:func:`load_spec` does).
    """
    if now.tzinfo is None:
        raise InvalidValueError("now must be timezone-aware")
    if not isinstance(expires, str):
        raise SpecError("metadata.expires", f"must be text, not {type(expires).__name__}")
    m = _DURATION_RE.fullmatch(expires)
    try:
        if m:
            delta = timedelta(**{_DURATION_UNITS[m.group(2)]: int(m.group(1))})
            return (now.astimezone(UTC) + delta).replace(microsecond=0)
        return timefmt.to_datetime(expires)
    except OverflowError:
        raise SpecError("metadata.expires", f"{expires!r} lies beyond the year 9999") from None
    except ValueError:
        raise SpecError(
            "metadata.expires",
            f"{expires!r} must be a duration such as \"180d\" (s, m, h, d, w) "
            "or a valid RFC 3339 UTC time such as \"2026-06-30T00:00:00Z\"",
        ) from None


def load_spec(
    path: str | os.PathLike[str],
    *,
    now: datetime | None = None,
    env: Mapping[str, str] | None = None,
) -> BundleSpec:
    """Read, validate and resolve a bundle spec; raise SpecError (exit 2) naming the field.

    *now* (default: the current UTC time) resolves and checks ``expires``;
    *env* (default: ``os.environ``) supplies :data:`ALLOWED_VARIABLES`.
    """
    path = Path(path).absolute()
    now = now or datetime.now(UTC)
    env = os.environ if env is None else env
    raw = _read_spec_bytes(path)
    lines: dict[str, int] = {}
    try:
        return _load(path, raw, now, env, lines)
    except SpecError as exc:
        raise exc.located(str(path), line_of(lines, exc.field)) from None


def line_of(lines: Mapping[str, int], field: str) -> int | None:
    """The line where *field* (``images[2].ref``) is written, else where its nearest parent is."""
    where = field.split(" ", 1)[0]
    while where:
        if where in lines:
            return lines[where]
        where = where[: max(where.rfind("."), where.rfind("["), 0)]
    return lines.get("")


def _load(path: Path, raw: bytes, now: datetime, env: Mapping[str, str], lines: dict[str, int]) -> BundleSpec:
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError("", f"not valid UTF-8 (byte {exc.start})") from None
    data, scalars = _parse_yaml(text, path, lines)
    if not isinstance(data, dict):
        raise SpecError("", "the spec must be a YAML mapping (apiVersion, kind, metadata, ...)")
    _check_text(data, "")
    variables, written = _substitute(data, env)
    _validate_schema(data, scalars)

    base_dir = path.parent.resolve()
    md = data["metadata"]
    expires_at = resolve_expires(md["expires"], now)
    if expires_at <= now:
        raise SpecError(
            "metadata.expires",
            f"{md['expires']} ({timefmt.format_time(expires_at)}) is not in the future (now is {timefmt.format_time(now)})",
        )
    metadata = Metadata(
        name=md["name"],
        version=md["version"],
        target=md["target"],
        expires=md["expires"],
        expires_at=expires_at,
        description=md.get("description"),
    )
    sources = dict(data.get("sources", {}))
    images = _images(data.get("images", []), base_dir, written, sources)
    files = _files(data.get("files", []), base_dir)
    wheels = bool(data.get("wheels", False))
    workloads = _workloads(data.get("workloads", []), base_dir)
    packages = _packages(data.get("packages"), base_dir)
    if not images and not files and not wheels and not packages:
        raise SpecError("images", "the bundle carries nothing: list at least one image or file")
    if workloads and not images:
        raise SpecError("workloads", "workloads run images: list them under images")
    return BundleSpec(
        path=path,
        base_dir=base_dir,
        digest=digest,
        metadata=metadata,
        images=images,
        files=files,
        wheels=wheels,
        variables=variables,
        sources=sources,
        workloads=workloads,
        packages=packages,
        lines=lines,
    )


@functools.cache
def spec_schema() -> dict:
    """The JSON Schema (2020-12) of a spec, as shipped in ``airgap/schemas``."""
    text = resources.files("airgap").joinpath("schemas/spec.schema.json").read_text("utf-8")
    return json.loads(text)


# --- YAML ------------------------------------------------------------------------


def _read_spec_bytes(path: Path) -> bytes:
    # The file names itself as FILE (the spec error's place), not inside the message.
    return fsutil.read_capped(path, MAX_SPEC_BYTES, "the bundle spec", too_large=lambda _msg: SpecError(
        "", f"larger than {MAX_SPEC_BYTES} bytes; not a bundle spec", file=str(path)))


def _parse_yaml(text: str, path: Path, lines: dict[str, int]) -> tuple[Any, dict[str, str]]:
    """Parse strictly (see :mod:`airgap._internal.strictyaml`).  Returns (data, {field: raw scalar});
    *lines* gets the line of every field."""
    def error(where: str, message: str, line: int | None) -> SpecError:
        return SpecError(where, message, line=line)

    return strictyaml.load_one(text, str(path), error, "a bundle spec", lines=lines)


_join = strictyaml.join


def _check_text(obj: Any, where: str) -> None:
    """Refuse control characters (line feeds too), separators and bidi controls anywhere."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            _check_text(value, _join(where, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            _check_text(value, f"{where}[{i}]")
    elif isinstance(obj, str):
        reason = refusal(obj)
        if reason:
            hint = " (write it on one line: a YAML '>-' block folds lines)" if "\n" in obj else ""
            raise SpecError(where, f"{escape(obj)} {reason}; such text can show one thing and mean another{hint}")


# --- variables -----------------------------------------------------------------


def _substitute(data: dict, env: Mapping[str, str]) -> tuple[dict[str, str], dict[int, str]]:
    """Substitute allowed variables in ``images[].ref`` and ``sources`` values in place;
    return (used, {i: ref as written})."""
    used: dict[str, str] = {}
    originals: dict[int, str] = {}
    places: list[tuple[str, dict, Any]] = []
    if isinstance(data.get("images"), list):
        places += [(f"images[{i}].ref", image, "ref") for i, image in enumerate(data["images"]) if isinstance(image, dict)]
    if isinstance(data.get("sources"), dict):
        places += [(f"sources.{alias}", data["sources"], alias) for alias in data["sources"]]
    for where, holder, key in places:
        if not isinstance(holder.get(key), str) or "$" not in holder[key]:
            continue

        def replace(m: re.Match, where: str = where) -> str:
            name, default = m.group(1), m.group(2)
            if name not in ALLOWED_VARIABLES:
                raise SpecError(
                    where,
                    f"variable ${{{name}}} is not allowed (allowed: {', '.join(sorted(ALLOWED_VARIABLES))})",
                )
            value = env.get(name) or default
            if not value:
                raise SpecError(where, f"variable {name} is not set and has no default (${{{name}:-host:port}})")
            if not _HOST_PORT_RE.fullmatch(value):
                raise SpecError(where, f"variable {name}={value!r} is not a lower-case registry host[:port]")
            if used.get(name, value) != value:  # pragma: no cover - env is one mapping
                raise SpecError(where, f"variable {name} resolved to two values")
            used[name] = value
            return value

        resolved = _VAR_RE.sub(replace, holder[key])
        if "$" in resolved:
            raise SpecError(where, "a '$' outside a ${NAME} or ${NAME:-default} variable")
        if where.startswith("images["):
            originals[int(where[len("images["):].split("]", 1)[0])] = holder[key]
        holder[key] = resolved
    return used, originals


# --- schema --------------------------------------------------------------------


def _validator() -> jsonschema.Draft202012Validator:
    return _cached_validator()


@functools.cache
def _cached_validator() -> jsonschema.Draft202012Validator:
    schema = spec_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _validate_schema(data: dict, scalars: dict[str, str]) -> None:
    error = jsonschema.exceptions.best_match(_validator().iter_errors(data))
    if error is not None:
        raise SpecError(*_describe(error, scalars))


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "empty (null)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "text"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(error: jsonschema.exceptions.ValidationError, scalars: dict[str, str]) -> tuple[str, str]:
    where = field_path(error.absolute_path)
    v, inst, schema = error.validator, error.instance, error.schema
    if v == "additionalProperties" and isinstance(inst, dict):
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(k for k in inst if k not in allowed)
        return _join(where, extra[0]), f"unknown field (allowed here: {', '.join(allowed)})"
    if v == "required" and isinstance(inst, dict):
        missing = [k for k in error.validator_value if k not in inst]
        return _join(where, missing[0]), "required field is missing"
    if v == "type":
        expected = error.validator_value
        raw = scalars.get(where)
        if expected == "string" and raw is not None and not isinstance(inst, (list, dict)):
            if where == "metadata.version":
                return where, (
                    f"YAML reads {raw} as {_json_type(inst)}, not a version; quote it and give "
                    f'all three parts of a semantic version, e.g. version: "{_semver_hint(raw)}"'
                )
            if where.endswith(".mode") and isinstance(inst, int):
                return where, (
                    f"YAML reads {raw} as the number {inst}; quote it as an octal string, "
                    f'e.g. mode: "{raw if raw.startswith("0") else "0" + raw}"'
                )
            return where, f"YAML reads {raw} as {_json_type(inst)}; quote it if text is meant"
        names = {"string": "text", "object": "a mapping", "array": "a list", "boolean": "true or false"}
        want = names.get(expected, expected) if isinstance(expected, str) else " or ".join(expected)
        return where, f"must be {want}, not {_json_type(inst)}"
    if v in ("pattern", "minLength", "maxLength") and "x-message" in schema:
        return where, f"{_short(inst)} {schema['x-message']}"
    if v == "const":
        return where, f"must be {error.validator_value!r}, not {_short(inst)}"
    if v == "uniqueItems":
        return where, "lists the same entry twice"
    return where, error.message


def _semver_hint(raw: str) -> str:
    parts = raw.split(".")
    if all(p.isdigit() for p in parts) and 1 <= len(parts) <= 3:
        return ".".join([str(int(p)) for p in parts] + ["0"] * (3 - len(parts)))
    return "1.0.0"


# --- images ----------------------------------------------------------------------


def _source_of(ref: str, sources: Mapping[str, str], where: str) -> tuple[str | None, Reference, str]:
    """(alias or None, the reference to pull, the internal repository path) of a registry *ref*."""
    first, _, rest = ref.partition("/")
    if "." in first or ":" in first or first == "localhost" or first.startswith("["):
        try:
            parsed = parse_reference(ref)
        except InputError as exc:
            raise SpecError(where, str(exc)) from None
        return None, parsed, internal_repository(parsed)
    if first not in sources:
        declared = ", ".join(sorted(sources)) or "none"
        raise SpecError(where, f"{first!r} is neither a registry host (it has no '.' or ':PORT') nor an alias declared "
                               f"under sources (declared: {declared}); declare it (sources: {{{first}: HOST:PORT}}) or "
                               "write the registry host: a bare name would silently mean Docker Hub")
    from airgap.manifest import names_of

    try:  # the derivation verify holds the signed record to
        names = names_of(ref, sources[first])
    except InvalidValueError as exc:
        raise SpecError(where, f"through sources.{first} ({sources[first]}): {exc}") from None
    return first, Reference(names.registry, names.repository, names.tag, names.pinned), names.destination


def _images(items: list[dict], base_dir: Path, written: dict[int, str],
            sources: Mapping[str, str]) -> tuple[ImageSource, ...]:
    out: list[ImageSource] = []
    seen: dict[Any, int] = {}
    for i, item in enumerate(items):
        where = f"images[{i}].ref"
        ref = item["ref"]
        spec_ref = written.get(i, ref)
        platforms = tuple(item["platforms"]) if "platforms" in item else None
        allow = item.get("allow", {}).get("reason")
        allow = allow.strip() if allow else None
        if ref.startswith("oci:"):
            rel, _, tag = ref[len("oci:") :].rpartition(":")
            layout = _inside(base_dir, rel, where, what="OCI layout")
            if not layout.is_dir() or not (layout / "oci-layout").is_file():
                raise SpecError(where, f"{rel} is not an OCI image layout (no oci-layout file)")
            keys: list[tuple[str, ...]] = [("oci", str(layout), tag)]
            src = ImageSource(
                ref=ref, kind="oci-layout", layout_path=layout, tag=tag, platforms=platforms,
                allow_reason=allow, spec_ref=spec_ref, index=i,
            )
        else:
            alias, parsed, internal = _source_of(ref, sources, where)
            keys = [("ref", str(parsed))]
            if parsed.tag:
                keys += [("tag", parsed.name, parsed.tag), ("internal tag", internal, parsed.tag)]
            if parsed.digest:
                keys.append(("digest", parsed.name, parsed.digest))
            src = ImageSource(
                ref=ref, kind="registry", tag=parsed.tag, platforms=platforms, allow_reason=allow,
                spec_ref=spec_ref, digest=parsed.digest, reference=parsed, index=i, alias=alias, internal=internal,
            )
        for key in keys:
            if key in seen and key[0] == "internal tag":
                raise SpecError(where, f"{ref} would be imported as {key[1]}:{key[2]}, like images[{seen[key]}].ref; "
                                       "rename the alias")
            if key in seen:
                raise SpecError(where, f"{ref} names the same image as images[{seen[key]}].ref")
        for key in keys:
            seen[key] = i
        out.append(src)
    return tuple(out)


# --- files -----------------------------------------------------------------------


def _inside(base_dir: Path, rel: str, where: str, *, what: str) -> Path:
    """Resolve *rel* under *base_dir*; refuse '..', escapes via symlinks, and absence."""
    if rel.startswith("/") or ".." in PurePosixPath(rel).parts:
        raise SpecError(where, f"{rel} must stay inside the spec's directory (no '/' prefix, no '..')")
    candidate = base_dir / rel
    try:
        resolved = candidate.resolve(strict=True)
    except FileNotFoundError:
        raise SpecError(where, f"{rel}: {what} does not exist (relative to {base_dir})") from None
    except (OSError, RuntimeError) as exc:
        raise SpecError(where, f"{rel}: cannot resolve ({exc})") from None
    if not resolved.is_relative_to(base_dir):
        raise SpecError(where, f"{rel} resolves to {resolved}, outside the spec's directory {base_dir}")
    return resolved


def _normalise_dest(dest: str, where: str) -> str:
    body = dest[:-1] if dest.endswith("/") else dest
    parts = body.split("/")
    if not body or any(p in ("", ".", "..") for p in parts) or "\\" in body:
        raise SpecError(
            where,
            f"{dest!r} must be a normalised relative path inside files/ (no '.', '..', '//' or '\\')",
        )
    return body


def _collision_key(path: str) -> str:
    return unicodedata.normalize("NFC", path).casefold()


def _files(items: list[dict], base_dir: Path) -> tuple[FileSource, ...]:
    out: list[FileSource] = []
    owner: dict[str, tuple[int, str]] = {}  # collision key -> (entry index, path)
    total = 0
    for i, item in enumerate(items):
        src_rel: str = item["src"]
        src_where, dest_where = f"files[{i}].src", f"files[{i}].dest"
        src = _inside(base_dir, src_rel, src_where, what="source")
        dest = _normalise_dest(item["dest"], dest_where)
        if dest.split("/", 1)[0] in RESERVED_DESTS:
            raise SpecError(dest_where, f"{item['dest']!r}: files/{dest.split('/', 1)[0]}/ is filled by the bundle itself "
                                        f"({', '.join(RESERVED_DESTS)}); choose another destination")
        mode = int(item["mode"], 8) if "mode" in item else None
        st = src.stat()
        entries: list[tuple[str, Path]] = []
        if src_rel.endswith("/"):
            if not stat.S_ISDIR(st.st_mode):
                raise SpecError(src_where, f"{src_rel} ends with '/' but is not a directory")
            for rel, path in _walk(src, base_dir, src_where, src_rel):
                entries.append((f"{dest}/{rel}", path))
            if not entries:
                raise SpecError(src_where, f"{src_rel} contains no files")
        else:
            if stat.S_ISDIR(st.st_mode):
                raise SpecError(src_where, f"{src_rel} is a directory; write {src_rel + '/'!r} to copy it")
            if not stat.S_ISREG(st.st_mode):
                raise SpecError(src_where, f"{src_rel} is not a regular file")
            target = f"{dest}/{PurePosixPath(src_rel).name}" if item["dest"].endswith("/") else dest
            entries.append((target, src))
        total += len(entries)
        if total > MAX_FILES:
            raise SpecError(src_where, f"the files entries expand to more than {MAX_FILES} files")
        for rel, _ in entries:
            key = _collision_key(rel)
            if key in owner:
                j, other = owner[key]
                raise SpecError(dest_where, f"{rel} collides with {other} from files[{j}]")
            owner[key] = (i, rel)
        out.append(
            FileSource(src=src, dest=dest, mode=mode, is_dir=src_rel.endswith("/"),
                       entries=tuple(sorted(entries)), index=i)
        )
    # A file may not also be a directory on another entry's path (a and a/b).
    for key, (i, rel) in owner.items():
        parent = posixpath.dirname(key)
        while parent:
            if parent in owner:
                j, other = owner[parent]
                raise SpecError(
                    f"files[{max(i, j)}].dest", f"{rel} needs {other} (from files[{j}]) to be a directory"
                )
            parent = posixpath.dirname(parent)
    return tuple(out)


def _workloads(items: list[dict], base_dir: Path) -> tuple[WorkloadSource, ...]:
    out: list[WorkloadSource] = []
    names: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"workloads[{i}].src"
        name, src_rel = item["name"], item["src"]
        if name in names:
            raise SpecError(f"workloads[{i}].name", f"{name!r} is already the name of workloads[{names[name]}]")
        names[name] = i
        src = _inside(base_dir, src_rel, where, what="workload")
        if src_rel.endswith("/"):
            if not src.is_dir():
                raise SpecError(where, f"{src_rel} ends with '/' but is not a directory")
            entries = [(rel, path) for rel, path in _walk(src, base_dir, where, src_rel)
                       if rel.endswith((".yaml", ".yml"))]
            if not entries:
                raise SpecError(where, f"{src_rel} holds no .yaml or .yml file")
        else:
            if not src.is_file() or not src_rel.endswith((".yaml", ".yml")):
                raise SpecError(where, f"{src_rel} must be a .yaml or .yml file, or a directory written with a trailing '/'")
            entries = [(PurePosixPath(src_rel).name, src)]
        out.append(WorkloadSource(name=name, entries=tuple(sorted(entries)), index=i))
    return tuple(out)


def _packages(item: dict | None, base_dir: Path) -> PackagesSource | None:
    if item is None:
        return None
    sources = _inside(base_dir, item["sources"], "packages.sources", what="apt sources file")
    if not sources.is_file():
        raise SpecError("packages.sources", f"{item['sources']} is not a file")
    baseline = None
    if "baseline" in item:
        baseline = _inside(base_dir, item["baseline"], "packages.baseline", what="dpkg status file")
        if not baseline.is_file():
            raise SpecError("packages.baseline", f"{item['baseline']} is not a file")
    return PackagesSource(release=item["release"], architecture=item.get("architecture", "amd64"),
                          sources=sources, baseline=baseline, names=tuple(item["names"]))


def _walk(root: Path, base_dir: Path, where: str, src_rel: str):
    """Yield (relative posix path, resolved source) of every regular file under *root*."""
    def fail(exc: OSError) -> None:
        raise SpecError(where, f"{src_rel}: cannot read {exc.filename} ({exc.strerror})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=fail, followlinks=False):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(dirnames):
            full = here / name
            if full.is_symlink():
                rel = full.relative_to(root).as_posix()
                raise SpecError(where, f"{src_rel}{rel} is a symlink to a directory; symlinked directories are not followed")
        for name in sorted(filenames):
            full = here / name
            rel = full.relative_to(root).as_posix()
            if "\\" in rel or refusal(rel):
                raise SpecError(where, f"{src_rel}{escape(rel)}: file names with control or bidi characters or '\\' are refused")
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = full.resolve(strict=True)
                except (OSError, RuntimeError):
                    raise SpecError(where, f"{src_rel}{rel} is a dangling symlink") from None
                if not target.is_relative_to(base_dir):
                    raise SpecError(
                        where, f"{src_rel}{rel} is a symlink to {target}, outside the spec's directory {base_dir}"
                    )
                if not target.is_file():
                    raise SpecError(where, f"{src_rel}{rel} is a symlink to something that is not a regular file")
                yield rel, target
            elif stat.S_ISREG(st.st_mode):
                yield rel, full
            else:
                raise SpecError(where, f"{src_rel}{rel} is not a regular file (device, FIFO or socket)")


