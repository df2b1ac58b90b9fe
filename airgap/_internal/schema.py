"""A small JSON Schema (draft 2020-12) validator for the schemas verify reads on every run.

``verify`` validates the trust policy and the manifest on every run, and
importing ``jsonschema`` (with ``referencing``, ``attrs`` and ``rpds``) costs
more start-up time than everything else verify imports together.  The two
schemas use a small set of keywords; this module implements exactly those and
refuses a schema that uses any other, so it can never silently ignore a rule.
A test runs it and ``jsonschema`` side by side over valid and broken documents
and requires the same verdict (tests/test_schema.py).

Messages follow ``jsonschema``'s wording, so errors read the same whichever
validator produced them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from airgap._internal.text import plural
from airgap.exceptions import InvalidValueError

_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description", "$comment"}
_KEYWORDS = {"type", "properties", "required", "additionalProperties", "propertyNames", "maxProperties", "items",
             "minItems", "maxItems", "uniqueItems", "pattern", "minLength", "maxLength", "minimum", "maximum", "enum",
             "const", "oneOf", "$ref"}
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


@dataclass
class SchemaError:
    """One violation: where (``absolute_path``), which keyword, and jsonschema's message."""

    message: str
    validator: str
    absolute_path: list[Any] = field(default_factory=list)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


class Validator:
    """Validates instances against *schema* (a dict using only the supported keywords)."""

    def __init__(self, schema: dict[str, Any]):
        self.schema = schema
        _check_schema(schema, schema)

    def iter_errors(self, instance: Any) -> Iterator[SchemaError]:
        yield from self._errors(instance, self.schema, [])

    def is_valid(self, instance: Any) -> bool:
        return next(self.iter_errors(instance), None) is None

    def _resolve(self, ref: str) -> dict[str, Any]:
        node: Any = self.schema
        for part in ref[2:].split("/"):
            node = node[part]
        return node

    def _errors(self, inst: Any, schema: dict[str, Any], path: list[Any]) -> Iterator[SchemaError]:
        if "$ref" in schema:
            yield from self._errors(inst, self._resolve(schema["$ref"]), path)
        if "type" in schema and not _TYPES[schema["type"]](inst):
            yield SchemaError(f"{inst!r} is not of type {schema['type']!r}", "type", path)
            return
        if "const" in schema and not _equal(inst, schema["const"]):
            yield SchemaError(f"{schema['const']!r} was expected", "const", path)
        if "enum" in schema and not any(_equal(inst, e) for e in schema["enum"]):
            yield SchemaError(f"{inst!r} is not one of {schema['enum']!r}", "enum", path)
        if "oneOf" in schema:
            yield from self._one_of(inst, schema["oneOf"], path)
        if isinstance(inst, dict):
            yield from self._object(inst, schema, path)
        elif isinstance(inst, list):
            yield from self._array(inst, schema, path)
        elif isinstance(inst, str):
            if "pattern" in schema and not _regex(schema["pattern"]).search(inst):
                yield SchemaError(f"{inst!r} does not match {schema['pattern']!r}", "pattern", path)
            if "minLength" in schema and len(inst) < schema["minLength"]:
                yield SchemaError(f"{inst!r} is too short", "minLength", path)
            if "maxLength" in schema and len(inst) > schema["maxLength"]:
                yield SchemaError(f"{inst!r} is too long", "maxLength", path)
        elif isinstance(inst, int) and not isinstance(inst, bool):
            if "minimum" in schema and inst < schema["minimum"]:
                yield SchemaError(f"{inst!r} is less than the minimum of {schema['minimum']!r}", "minimum", path)
            if "maximum" in schema and inst > schema["maximum"]:
                yield SchemaError(f"{inst!r} is greater than the maximum of {schema['maximum']!r}", "maximum", path)

    def _one_of(self, inst: Any, options: list[dict[str, Any]], path: list[Any]) -> Iterator[SchemaError]:
        matched = [i for i, sub in enumerate(options) if next(self._errors(inst, sub, path), None) is None]
        if not matched:
            yield SchemaError(f"{inst!r} is not valid under any of the given schemas", "oneOf", path)
        elif len(matched) > 1:
            yield SchemaError(f"{inst!r} is valid under each of {', '.join(map(str, matched))}", "oneOf", path)

    def _object(self, inst: dict[str, Any], schema: dict[str, Any], path: list[Any]) -> Iterator[SchemaError]:
        for name in schema.get("required", ()):
            if name not in inst:
                yield SchemaError(f"{name!r} is a required property", "required", path)
        if "maxProperties" in schema and len(inst) > schema["maxProperties"]:
            yield SchemaError(f"{inst!r} has too many properties", "maxProperties", path)
        if "propertyNames" in schema:
            for name in inst:
                for err in self._errors(name, schema["propertyNames"], path):
                    yield SchemaError(err.message, err.validator, path)
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        unexpected = []
        for name, value in inst.items():
            if name in props:
                yield from self._errors(value, props[name], [*path, name])
            elif extra is False:
                unexpected.append(name)
            elif isinstance(extra, dict):
                yield from self._errors(value, extra, [*path, name])
        if unexpected:
            verb = "was" if len(unexpected) == 1 else "were"
            yield SchemaError(f"Additional properties are not allowed ({', '.join(map(repr, unexpected))} {verb} unexpected)",
                              "additionalProperties", path)

    def _array(self, inst: list[Any], schema: dict[str, Any], path: list[Any]) -> Iterator[SchemaError]:
        if "minItems" in schema and len(inst) < schema["minItems"]:
            yield SchemaError(f"{inst!r} should be non-empty" if schema["minItems"] == 1 else f"{inst!r} is too short",
                              "minItems", path)
        if "maxItems" in schema and len(inst) > schema["maxItems"]:
            yield SchemaError(f"list of {plural(len(inst), 'item')} is too long (at most {schema['maxItems']})", "maxItems", path)
        if schema.get("uniqueItems"):
            seen: set[str] = set()
            for item in inst:
                key = json.dumps(item, sort_keys=True)
                if key in seen:
                    yield SchemaError(f"{inst!r} has non-unique elements", "uniqueItems", path)
                    break
                seen.add(key)
        if "items" in schema:
            for i, item in enumerate(inst):
                yield from self._errors(item, schema["items"], [*path, i])


def _equal(a: Any, b: Any) -> bool:
    # JSON equality: true is not 1, 1 is not "1".
    return type(a) is type(b) and a == b


def _check_schema(node: Any, root: dict[str, Any]) -> None:
    if not isinstance(node, dict):
        raise InvalidValueError(f"schema node {node!r} is not an object")
    unknown = set(node) - _KEYWORDS - _ANNOTATIONS
    if unknown:
        raise InvalidValueError(f"schema keyword(s) {sorted(unknown)} not supported by airgap's validator")
    if "type" in node and node["type"] not in _TYPES:
        raise InvalidValueError(f"schema type {node['type']!r} not supported")
    if "$ref" in node and not node["$ref"].startswith("#/"):
        raise InvalidValueError(f"only local references are supported, not {node['$ref']!r}")
    if "pattern" in node:
        _regex(node["pattern"])
    for key in ("items", "propertyNames"):
        if key in node:
            _check_schema(node[key], root)
    if isinstance(node.get("additionalProperties"), dict):
        _check_schema(node["additionalProperties"], root)
    for sub in node.get("properties", {}).values():
        _check_schema(sub, root)
    for sub in node.get("oneOf", ()):
        _check_schema(sub, root)
    for sub in node.get("$defs", {}).values():
        _check_schema(sub, root)


def join(where: str, key: str) -> str:
    """*where*'s field *key*: ``images[2]`` + ``ref`` is ``images[2].ref``."""
    return f"{where}.{key}" if where else key


def field_path(parts: Iterable[str | int]) -> str:
    """``images[2].ref``: the one way airgap names a place in a document, in every message.

    *parts* is a schema error's ``absolute_path`` (this module's or
    jsonschema's), keys and list indexes; the YAML readers build the same
    form field by field (:func:`join`, ``[i]``).  The document itself is ``""``.
    """
    out = ""
    for part in parts:
        out = f"{out}[{part}]" if isinstance(part, int) else join(out, str(part))
    return out


def describe(error: Any) -> str:
    """``where: message`` for a schema error of either validator; the whole document is ``(top level)``."""
    return f"{field_path(error.absolute_path) or '(top level)'}: {error.message}"


def best_match(errors: list[SchemaError]) -> SchemaError | None:
    """The error to show: the shallowest, preferring a concrete keyword over ``oneOf``."""
    if not errors:
        return None
    return min(errors, key=lambda e: (len(e.absolute_path), e.validator == "oneOf"))
