"""Reference pages generated from airgap's JSON Schemas, so the docs cannot drift from
what the loaders accept.

    python -m airgap._internal.specdoc             # (re)write docs/*-reference.md
    python -m airgap._internal.specdoc --check     # exit 1 if a committed page is stale

Each page is one table: every field as a path (``images[].ref``), its type, whether
it is required, and what it means: the schema's ``description``, its default, and
its constraints (airgap's ``x-message`` where the schema has one, else the
pattern, bounds and allowed values).  A schema's ``examples`` follow as YAML.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from airgap._internal.fsutil import atomic_write
from airgap._internal.text import plural
from airgap.exceptions import InvalidValueError

PAGES: dict[str, tuple[str, str]] = {
    "spec-reference.md": ("spec.schema.json", "Bundle spec reference"),
    "manifest-reference.md": ("manifest.schema.json", "Bundle manifest reference"),
    "trust-reference.md": ("trust.schema.json", "Trust policy reference"),
    "toolkit-release-reference.md": ("toolkit-release.schema.json", "Toolkit release reference"),
}
"""Page name -> (schema in airgap/schemas, page title)."""

GENERATOR = "python -m airgap._internal.specdoc"


def load_schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files("airgap").joinpath(f"schemas/{name}").read_text("utf-8"))


def render(schema: dict[str, Any], title: str, source: str) -> str:
    """The reference page for *schema* (read from *source*) as Markdown."""
    out = [f"# {title}", "",
           f"Generated from `{source}` by `{GENERATOR}`: edit the schema, not this page.", ""]
    if schema.get("description"):
        out += [schema["description"], ""]
    out += ["| Field | Type | Required | Meaning |", "| --- | --- | --- | --- |"]
    for path, node, required in fields(schema):
        out.append(f"| `{path}` | {_cell(type_text(schema, node))} | {'yes' if required else 'no'} | "
                   f"{_cell(meaning(schema, node))} |")
    for example in schema.get("examples", []):
        out += ["", "## Example", "", "```yaml", yaml.safe_dump(example, sort_keys=False, width=100).rstrip(), "```"]
    return "\n".join(out) + "\n"


def fields(schema: dict[str, Any], node: dict[str, Any] | None = None, prefix: str = "") -> Iterator[tuple[str, dict, bool]]:
    """(path, resolved node, required) for every property below *node* (default: the root), depth first."""
    node = resolve(schema, schema if node is None else node)
    required = set(node.get("required", ()))
    for name, prop in node.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        prop = resolve(schema, prop)
        yield path, prop, name in required
        yield from _children(schema, prop, path)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        key = node.get("propertyNames", {}).get("$ref", "#/KEY").rsplit("/", 1)[-1]
        path = f"{prefix}.<{key}>" if prefix else f"<{key}>"
        value = resolve(schema, extra)
        yield path, value, False
        yield from _children(schema, value, path)


def _children(schema: dict[str, Any], prop: dict[str, Any], path: str) -> Iterator[tuple[str, dict, bool]]:
    for variant in [prop, *(resolve(schema, v) for v in prop.get("oneOf", ()))]:
        if variant.get("type") == "object" or "properties" in variant:
            yield from fields(schema, variant, path)
        items = resolve(schema, variant.get("items", {}))
        if variant.get("type") == "array" and (items.get("type") == "object" or "properties" in items):
            yield from fields(schema, items, f"{path}[]")


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """*node* with a local ``$ref`` merged in (the node's own keywords, such as its description, win)."""
    if "$ref" not in node:
        return node
    ref = node["$ref"]
    if not ref.startswith("#/$defs/"):
        raise InvalidValueError(f"only local $defs references are rendered, not {ref}")
    target = resolve(schema, schema["$defs"][ref[len("#/$defs/"):]])
    merged = {k: v for k, v in target.items() if k != "description"}
    merged.update({k: v for k, v in node.items() if k != "$ref"})
    merged.setdefault("description", target.get("description", ""))
    return merged


def type_text(schema: dict[str, Any], node: dict[str, Any]) -> str:
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if "oneOf" in node:
        return " or ".join(type_text(schema, resolve(schema, v)) for v in node["oneOf"])
    kind = node.get("type", "any")
    if kind == "array":
        items = resolve(schema, node.get("items", {}))
        inner = "objects" if items.get("type") == "object" else f"{type_text(schema, items)}s"
        return f"list of {inner}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return "map"
    return {"string": "text", "integer": "integer", "boolean": "true/false", "object": "mapping",
            "null": "null"}.get(kind, kind)


def meaning(schema: dict[str, Any], node: dict[str, Any]) -> str:
    parts = [node.get("description", "").strip()]
    if "default" in node:
        parts.append(f"Default: `{json.dumps(node['default'])}`.")
    parts += constraints(schema, node)
    return " ".join(p for p in parts if p)


def constraints(schema: dict[str, Any], node: dict[str, Any]) -> list[str]:
    """The limits a value must meet, in words."""
    out = []
    if "if" in node:  # a value read two ways (image references): say both
        for branch in ("then", "else"):
            sub = resolve(schema, node.get(branch, {}))
            if sub.get("description"):
                out.append(f"{sub['description'].rstrip('.')}: " + " ".join(constraints(schema, sub)))
            else:
                out += constraints(schema, sub)
        return out
    if node.get("x-message"):
        message = node["x-message"]
        out.append(message[0].upper() + message[1:] + ".")
    elif "pattern" in node:
        out.append(f"Matches `{node['pattern']}`.")
    bounds = [("minLength", "at least", "character"), ("maxLength", "at most", "character"),
              ("minItems", "at least", "entry"), ("maxItems", "at most", "entry"),
              ("minimum", "at least", ""), ("maximum", "at most", ""), ("maxProperties", "at most", "entry")]
    said = [f"{word} {plural(node[key], noun) if noun else node[key]}" for key, word, noun in bounds
            if key in node and not (key == "minLength" and node.get("x-message"))]
    if node.get("uniqueItems"):
        said.append("no entry twice")
    if said:
        out.append("Limits: " + ", ".join(said) + ".")
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def pages() -> dict[str, str]:
    """Page name -> the Markdown the schemas give today."""
    return {page: render(load_schema(name), title, f"airgap/schemas/{name}") for page, (name, title) in PAGES.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=GENERATOR, description="Write docs/*-reference.md from airgap's JSON Schemas.")
    parser.add_argument("--docs", default="docs", help="the docs directory (default: docs)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page differs from the schema")
    args = parser.parse_args(argv)
    stale = []
    for page, text in pages().items():
        path = Path(args.docs) / page
        current = path.read_text("utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(path))
        else:
            atomic_write(path, text.encode("utf-8"))
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run {GENERATOR}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
