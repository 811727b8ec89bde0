"""Is a new event schema compatible with the published v1 one? Pure functions over two JSON Schemas.

A topic is a log that holds messages written by every producer version since it
started, and other teams read it with their own (older or newer) code. So a
change is compatible only when new readers still accept old messages AND old
readers still accept new ones:

- compatible: a new optional field, a new event type, a field that became
  optional (producers keep sending it), new descriptions, titles or examples;
- breaking: a removed event type, a removed field, a retyped field (nullable
  included), a new required field, a field that became required, a narrowed
  enum or literal (old messages carry the value that was removed), a widened
  enum or literal (v1 readers reject the new value), any other changed limit
  (length, range, pattern), in either direction, because v1 readers validate them.

Only local ``$ref`` (``#/...``) are followed, which is all pydantic writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

JsonSchema = Mapping[str, Any]

ChangeKind = Literal[
    "removed_event_type",
    "removed_field",
    "retyped_field",
    "new_required_field",
    "became_required",
    "narrowed_enum",
    "widened_enum",
    "changed_constraint",
    "added_event_type",
    "added_optional_field",
    "became_optional",
]

BREAKING_KINDS: frozenset[str] = frozenset(
    {
        "removed_event_type",
        "removed_field",
        "retyped_field",
        "new_required_field",
        "became_required",
        "narrowed_enum",
        "widened_enum",
        "changed_constraint",
    }
)

# Keywords that document a value without changing which values are accepted.
_ANNOTATIONS = frozenset(
    {"title", "description", "examples", "default", "$comment", "deprecated", "readOnly", "writeOnly", "$schema", "$id"}
)
_VALUE_SET_KEYWORDS = ("const", "enum")
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "dependentSchemas"})
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf"})
_SCHEMA_VALUES = frozenset({"items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else"})

HOW_TO_BREAK = (
    "v1 is a public contract that other teams build on: do not change it incompatibly. "
    "Keep the v1 event as it is and add a new event type, or a `.v2` topic with the new schema "
    "(publish both during the migration); see docs/topics.md, section Versioning."
)


@dataclass(frozen=True)
class Change:
    """One difference between the published schema and the new one."""

    kind: ChangeKind
    path: str
    detail: str

    @property
    def breaking(self) -> bool:
        """Whether v1 readers or v1 messages would stop working."""
        return self.kind in BREAKING_KINDS

    def __str__(self) -> str:
        label = "BREAKING" if self.breaking else "compatible"
        return f"{label} {self.kind} at {self.path}: {self.detail}"


def compare_contracts(old: Mapping[str, JsonSchema], new: Mapping[str, JsonSchema]) -> list[Change]:
    """Compare two sets of event schemas keyed by ``<topic>/<EventType>`` (the published ones and the new ones)."""
    changes: list[Change] = []
    for name in sorted(old.keys() - new.keys()):
        changes.append(Change("removed_event_type", name, "the event type is gone; v1 consumers may rely on it"))
    for name in sorted(new.keys() - old.keys()):
        changes.append(
            Change("added_event_type", name, "a new event type (consumers skip event types they do not know)")
        )
    for name in sorted(old.keys() & new.keys()):
        changes.extend(compare_event_schemas(old[name], new[name], name=name.rsplit("/", 1)[-1]))
    return changes


def compare_event_schemas(old: JsonSchema, new: JsonSchema, *, name: str = "$") -> list[Change]:
    """Compare one event's published schema with its new one."""
    changes: list[Change] = []
    _compare_value(old, new, name, old, new, changes)
    return changes


def breaking_changes(changes: Iterable[Change]) -> list[Change]:
    """Only the changes that break v1 readers or v1 messages."""
    return [change for change in changes if change.breaking]


def report(changes: Iterable[Change]) -> str:
    """A human-readable list of changes, with what to do instead when some are breaking."""
    changes = list(changes)
    lines = [str(change) for change in changes]
    if breaking_changes(changes):
        lines.append(HOW_TO_BREAK)
    return "\n".join(lines)


# --- comparison ------------------------------------------------------------------------


def _compare_value(
    old: JsonSchema, new: JsonSchema, path: str, old_root: JsonSchema, new_root: JsonSchema, out: list[Change]
) -> None:
    old = _resolve(old, old_root)
    new = _resolve(new, new_root)
    if _is_object(old) and _is_object(new):
        _compare_object(old, new, path, old_root, new_root, out)
        return
    old_c = _canonical(old, old_root)
    new_c = _canonical(new, new_root)
    if old_c == new_c:
        return
    old_values, new_values = _value_set(old_c), _value_set(new_c)
    if old_values is not None and new_values is not None and _without_values(old_c) == _without_values(new_c):
        if removed := sorted(old_values - new_values):
            out.append(Change("narrowed_enum", path, f"no longer accepts {', '.join(removed)}; old messages carry it"))
        if added := sorted(new_values - old_values):
            out.append(Change("widened_enum", path, f"now also allows {', '.join(added)}; v1 readers reject it"))
        return
    old_type, new_type = _type_summary(old_c), _type_summary(new_c)
    if old_type != new_type:
        out.append(Change("retyped_field", path, f"type {old_type} became {new_type}"))
        return
    out.append(Change("changed_constraint", path, _constraint_diff(old_c, new_c)))


def _compare_object(
    old: JsonSchema, new: JsonSchema, path: str, old_root: JsonSchema, new_root: JsonSchema, out: list[Change]
) -> None:
    old_props: Mapping[str, JsonSchema] = old.get("properties", {})
    new_props: Mapping[str, JsonSchema] = new.get("properties", {})
    old_required = set(old.get("required", ()))
    new_required = set(new.get("required", ()))
    for field in sorted(old_props.keys() - new_props.keys()):
        out.append(Change("removed_field", f"{path}.{field}", "the field is gone; v1 readers may rely on it"))
    for field in sorted(new_props.keys() - old_props.keys()):
        if field in new_required:
            out.append(Change("new_required_field", f"{path}.{field}", "a new required field; older messages lack it"))
        else:
            out.append(Change("added_optional_field", f"{path}.{field}", "a new optional field"))
    for field in sorted(old_props.keys() & new_props.keys()):
        field_path = f"{path}.{field}"
        if field in new_required and field not in old_required:
            out.append(Change("became_required", field_path, "optional before; messages may lack it"))
        elif field in old_required and field not in new_required:
            out.append(Change("became_optional", field_path, "required before: producers must keep sending it"))
        _compare_value(old_props[field], new_props[field], field_path, old_root, new_root, out)
    # Object-level keywords other than the fields (additionalProperties, ...) count as limits.
    old_rest = {k: v for k, v in _canonical(old, old_root).items() if k not in ("properties", "required")}
    new_rest = {k: v for k, v in _canonical(new, new_root).items() if k not in ("properties", "required")}
    if old_rest != new_rest:
        out.append(Change("changed_constraint", path, _constraint_diff(old_rest, new_rest)))


# --- helpers ---------------------------------------------------------------------------


def _is_object(schema: JsonSchema) -> bool:
    return schema.get("type") == "object" or "properties" in schema


def _resolve(schema: JsonSchema, root: JsonSchema) -> JsonSchema:
    """Follow ``$ref`` chains; keywords next to a ``$ref`` are kept and win."""
    seen: set[str] = set()
    while "$ref" in schema:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#") or ref in seen:
            raise ValueError(f"cannot follow $ref {ref!r}: only acyclic local references are supported")
        seen.add(ref)
        target: Any = root
        for part in ref[1:].split("/")[1:]:
            target = target[part.replace("~1", "/").replace("~0", "~")]
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **siblings}
    return schema


def _canonical(schema: Any, root: JsonSchema) -> Any:
    """The schema with references inlined and annotations dropped: equal canonical forms accept equal values."""
    if not isinstance(schema, Mapping):
        return schema  # `true` / `false` schemas
    out: dict[str, Any] = {}
    for key, item in _resolve(schema, root).items():
        if key in _ANNOTATIONS or key in ("$defs", "definitions") or key.startswith("x-"):
            continue
        if key in _SCHEMA_MAPS:  # field names are data here, not keywords
            out[key] = {name: _canonical(sub, root) for name, sub in item.items()}
        elif key in _SCHEMA_LISTS:  # branch order does not change what is accepted
            out[key] = sorted((_canonical(sub, root) for sub in item), key=lambda s: json.dumps(s, sort_keys=True))
        elif key in _SCHEMA_VALUES:
            out[key] = _canonical(item, root)
        else:
            out[key] = item
    return out


def _value_set(schema: Mapping[str, Any]) -> set[str] | None:
    if "const" in schema:
        return {json.dumps(schema["const"])}
    if "enum" in schema:
        return {json.dumps(item) for item in schema["enum"]}
    return None


def _without_values(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k not in _VALUE_SET_KEYWORDS}


def _type_summary(schema: Mapping[str, Any]) -> str:
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return " | ".join(sorted(_type_summary(branch) for branch in schema[combinator]))
    kind = schema.get("type", "any")
    text = "|".join(sorted(kind)) if isinstance(kind, list) else str(kind)
    if "format" in schema:
        text += f" ({schema['format']})"
    return text


def _constraint_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    parts = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key, "(none)"), new.get(key, "(none)")
        if before != after:
            parts.append(f"{key} {json.dumps(before, sort_keys=True)} became {json.dumps(after, sort_keys=True)}")
    return "; ".join(parts) + " (v1 readers validate these limits)"
