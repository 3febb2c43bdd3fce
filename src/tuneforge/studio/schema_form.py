"""Form fields generated from the recipe's JSON Schema (``tuneforge.recipe.json_schema``).

A field per scalar key (string, number, integer, boolean, enum) of the top level and of each section
one level down; the method section's fields are its discriminator (``method.name``) and the keys of the
chosen method. Nested objects and lists (golden cases, stages, speed) are edited in the YAML view
beside the form: the form covers what most recipes set, and the schema decides what that is, so a
new method or key appears in the form without a change here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCALARS = ("string", "number", "integer", "boolean")


@dataclass(frozen=True)
class Field:
    path: str
    kind: str  # string | number | integer | boolean | enum
    choices: tuple[str, ...]
    default: Any
    help: str


@dataclass(frozen=True)
class Section:
    name: str
    help: str
    fields: tuple[Field, ...]


def _deref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _scalar(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any] | None:
    """The scalar form of ``node`` (``X | null`` counts as X), or None for objects, lists and unions."""
    node = _deref(schema, node)
    options = [o for o in node.get("anyOf", [node]) if o.get("type") != "null"]
    if len(options) != 1:
        return None
    option = _deref(schema, options[0])
    if "enum" in option:
        return {"kind": "enum", "choices": tuple(str(c) for c in option["enum"])}
    if option.get("type") in SCALARS:
        return {"kind": option["type"], "choices": ()}
    return None


def _field(schema: dict[str, Any], path: str, node: dict[str, Any]) -> Field | None:
    shape = _scalar(schema, node)
    if shape is None:
        return None
    return Field(path, shape["kind"], shape["choices"], node.get("default"), node.get("description", ""))


def _fields_of(schema: dict[str, Any], prefix: str, node: dict[str, Any]) -> list[Field]:
    props = _deref(schema, node).get("properties", {})
    return [f for key, sub in props.items() if (f := _field(schema, f"{prefix}{key}", sub)) is not None]


def _section_node(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any] | None:
    node = _deref(schema, node)
    options = [o for o in node.get("anyOf", [node]) if o.get("type") != "null"]
    if len(options) == 1 and "properties" in _deref(schema, options[0]):
        return _deref(schema, options[0])
    return None


def method_fields(schema: dict[str, Any], method: str) -> list[Field]:
    mapping = schema["properties"]["method"]["discriminator"]["mapping"]
    names = tuple(sorted(mapping))
    chosen = method if method in mapping else names[0]
    name = Field("method.name", "enum", names, chosen, schema["properties"]["method"].get("description", ""))
    node = _deref(schema, {"$ref": mapping[chosen]})
    return [name, *(f for f in _fields_of(schema, "method.", node) if f.path != "method.name")]


def sections(schema: dict[str, Any], method: str = "full") -> list[Section]:
    """The form: the top-level scalars first, then one section per object-valued key with scalar fields."""
    top = _fields_of(schema, "", schema)
    out = [Section("recipe", schema.get("description", ""), tuple(top)),
           Section("method", "", tuple(method_fields(schema, method)))]
    for key, node in schema["properties"].items():
        sub = _section_node(schema, node)
        if sub is None or key == "method":
            continue
        fields = tuple(_fields_of(schema, f"{key}.", sub))
        if fields:
            out.append(Section(key, sub.get("description", ""), fields))
    return out
