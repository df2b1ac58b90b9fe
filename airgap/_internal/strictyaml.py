"""YAML read strictly: one meaning per document, whoever reads it.

Two readers of the same YAML can disagree: PyYAML keeps the last of two
duplicate keys where Go's yaml.v3 refuses the document, an alias makes one
node appear in two places, ``<<`` merges are an extension, and YAML 1.1
reads ``2025-01-01`` as a date.  The bundle spec and the Kubernetes manifests
a bundle carries are read here, and everything that could be read two ways is
refused: duplicate keys, aliases, merge keys, non-text keys; timestamps stay
text.  Each refusal names the line.

*error* is how the caller wants a refusal raised: ``error(where, message, line)``
returns the exception, ``where`` being a field path such as
``spec.containers[0]`` and ``line`` the 1-based line (None if unknown).
A caller that passes *lines* gets the line of every field path, for errors
found later (a schema violation, a file that does not exist).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

# Field paths are written one way everywhere (schema.field_path).
from airgap._internal.schema import join

ErrorFactory = Callable[[str, str, "int | None"], Exception]


class StrictLoader(yaml.SafeLoader):
    """SafeLoader without the YAML 1.1 timestamp type (timestamps stay text)."""


StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

STR_TAG = "tag:yaml.org,2002:str"
YAML_KINDS = {
    "tag:yaml.org,2002:int": "number",
    "tag:yaml.org,2002:float": "number",
    "tag:yaml.org,2002:bool": "boolean",
    "tag:yaml.org,2002:null": "null",
}


def line(node: yaml.Node) -> str:
    return f"line {line_no(node)}"


def line_no(node: yaml.Node) -> int:
    return node.start_mark.line + 1




def check_nodes(node: yaml.Node, where: str, scalars: dict[str, str], seen: set[int], error: ErrorFactory,
                what: str = "this document", lines: dict[str, int] | None = None) -> None:
    """Refuse what two readers could read differently; record non-text scalars as written
    (and, into *lines*, where each field is written: a key's line, a list item's line)."""
    if lines is not None:
        lines.setdefault(where, line_no(node))
    if id(node) in seen:
        raise error(where, f"YAML aliases (*anchor) are not allowed in {what}", line_no(node))
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        if node.tag != STR_TAG:
            scalars[where] = node.value
        return
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            check_nodes(item, f"{where}[{i}]", scalars, seen, error, what, lines)
        return
    if isinstance(node, yaml.MappingNode):
        keys: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            at = line_no(key_node)
            if not isinstance(key_node, yaml.ScalarNode):
                raise error(where, "mapping keys must be plain text", at)
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise error(where, f"YAML merge keys (<<) are not allowed in {what}", at)
            if key_node.tag != STR_TAG:
                kind = YAML_KINDS.get(key_node.tag, key_node.tag)
                raise error(join(where, key_node.value), f"YAML reads the key {key_node.value!r} as a {kind}; quote it", at)
            key = key_node.value
            child = join(where, key)
            if key in keys:
                raise error(child, f"duplicate key {key!r} (first at {line(keys[key])}); "
                                   "YAML would silently keep only the last one", at)
            keys[key] = key_node
            if lines is not None:
                lines[child] = at  # the key's line: where the field is written
            check_nodes(value_node, child, scalars, seen, error, what, lines)
        return
    raise error(where, "unsupported YAML node", line_no(node))  # pragma: no cover


def _syntax(exc: yaml.YAMLError, error: ErrorFactory) -> Exception:
    """PyYAML's own refusal, with the line its mark gives."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = " ".join(str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p) or str(exc)
    return error("", f"not valid YAML: {problem}", mark.line + 1 if mark else None)


def load_one(text: str, artifact: str, error: ErrorFactory, what: str,
             lines: dict[str, int] | None = None) -> tuple[Any, dict[str, str]]:
    """One document: (data, {field: raw scalar as written}); refuses an empty stream or several documents."""
    loader = StrictLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise _syntax(exc, error) from None
        if node is None:
            raise error("", f"{what} is empty", None)
        scalars: dict[str, str] = {}
        check_nodes(node, "", scalars, set(), error, what, lines)
        try:
            return loader.construct_document(node), scalars
        except yaml.YAMLError as exc:
            raise _syntax(exc, error) from None
    finally:
        loader.dispose()


def load_all(text: str, artifact: str, error: ErrorFactory, what: str) -> list[Any]:
    """Every non-empty document of a stream (``---`` separated), each checked as :func:`load_one` checks."""
    loader = StrictLoader(text)
    docs: list[Any] = []
    try:
        try:
            while loader.check_node():
                node = loader.get_node()
                if node is None:  # pragma: no cover - check_node said there is one
                    break
                if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
                    continue  # an empty document between two '---'
                check_nodes(node, f"document {len(docs) + 1}", {}, set(), error, what)
                docs.append(loader.construct_document(node))
        except yaml.YAMLError as exc:
            raise _syntax(exc, error) from None
    finally:
        loader.dispose()
    return docs
