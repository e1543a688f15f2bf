"""JSON Schema errors worded for the person who wrote the document."""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from kbuild.errors import Problem
from kbuild.load.positions import (
    _TYPE_NAMES,
    Document,
    Parts,
    dedupe_sorted,
    describe,
    did_you_mean,
    show,
)
from kbuild.load.resources import data_dir


def load_schema(name: str) -> dict[str, Any]:
    """A schema from kbuild's schemas/ folder.

    `name` is "pipeline", "pipeline.schema.json" or any file name in the folder.
    """
    file = name if name.endswith(".json") else f"{name}.schema.json"
    return copy.deepcopy(_read_schema(file))


@functools.cache
def _read_schema(file: str) -> dict[str, Any]:
    path = data_dir("schemas") / file
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"kbuild schema {file!r} not found (kbuild is not installed correctly)") from None
    schema: dict[str, Any] = json.loads(text)
    return schema


def _types_phrase(types: Any) -> str:
    if isinstance(types, str):
        types = [types]
    return " or ".join(_TYPE_NAMES.get(t, t) for t in types)


def schema_problems(doc: Document, schema: Mapping[str, Any]) -> list[Problem]:
    """Every way `doc` fails `schema` (plus doc.problems), friendly, in file order."""
    validator = Draft202012Validator(schema)
    problems = list(doc.problems)
    try:
        for error in validator.iter_errors(doc.data):
            problems.extend(_problems_for(doc, error))
    except RecursionError:
        problems.append(doc.problem((), "the document is nested too deeply to validate"))
    return dedupe_sorted(problems)


def _label(parts: Parts, schema: Mapping[str, Any]) -> str:
    title = schema.get("title") if isinstance(schema, Mapping) else None
    if isinstance(title, str):
        return title
    if parts and isinstance(parts[-1], str):
        return parts[-1]
    return "value"


def _branch_errors(error: ValidationError) -> dict[int, list[ValidationError]]:
    branches: dict[int, list[ValidationError]] = {}
    for sub in error.context or []:
        index = sub.relative_schema_path[0] if sub.relative_schema_path else 0
        branches.setdefault(int(index), []).append(sub)
    return branches


def _required_alternatives(subschemas: Any) -> list[str] | None:
    """For oneOf/anyOf: [{required: [a]}, {required: [b]}] -> [a, b]."""
    if not isinstance(subschemas, list):
        return None
    names: list[str] = []
    for sub in subschemas:
        if not isinstance(sub, Mapping) or set(sub) != {"required"}:
            return None
        names.extend(sub["required"])
    return names


def _quoted_alternatives(names: Sequence[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _problems_for(doc: Document, error: ValidationError) -> list[Problem]:
    parts: Parts = tuple(error.absolute_path)
    keyword = error.validator
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    value = error.instance
    expected = schema.get("x-expected")
    rule: Any = error.validator_value  # the keyword's value in the schema

    if "propertyNames" in error.absolute_schema_path and isinstance(value, str):
        # jsonschema reports a bad key at its mapping; point at the key itself.
        child = parts + (value,)
        what = expected or f"a name matching {schema.get('pattern', 'the allowed names')}"
        return [doc.problem(child, f"invalid name {value!r}: expected {what}", at_key=True)]

    if keyword in ("oneOf", "anyOf"):
        return _alternatives(doc, error, parts)

    if keyword in ("additionalProperties", "unevaluatedProperties") and isinstance(value, Mapping):
        allowed = list(_property_names(schema))
        patterns = list((schema.get("patternProperties") or {}).keys())
        extras = [k for k in value if k not in allowed and not any(re.search(p, k) for p in patterns)]
        if keyword == "unevaluatedProperties":
            named = re.findall(r"'([^']*)'", error.message)
            extras = [k for k in extras if k in named] or [k for k in named if k in value]
        where = f" in {schema['title']}" if isinstance(schema.get("title"), str) else ""
        out = []
        for key in extras:
            guess = did_you_mean(key, allowed)
            message = f"unknown field {key!r}{where}"
            if guess:
                message += f"; did you mean {guess!r}?"
            elif allowed:
                message += f"; allowed fields: {', '.join(allowed)}"
            out.append(doc.problem(parts + (key,), message, at_key=True))
        if out:
            return out

    if keyword == "required" and isinstance(value, Mapping):
        out = []
        properties = schema.get("properties") or {}
        where = f" in {schema['title']}" if isinstance(schema.get("title"), str) else ""
        for name in rule:
            if name in value:
                continue
            message = f"missing required field {name!r}{where}"
            hint = (properties.get(name) or {}).get("x-required") if isinstance(properties.get(name), Mapping) else None
            if hint:
                message += f": {hint}"
            out.append(doc.problem(parts, message, at_key=True))
        return out

    if keyword == "type":
        message = f"expected {_types_phrase(rule)}, got {describe(value)}"
        wanted = rule if isinstance(rule, list) else [rule]
        if "string" in wanted and isinstance(value, (int, float, bool)):
            message += "; put the value in quotes if it is meant as text"
        return [doc.problem(parts, message)]

    if keyword == "enum":
        allowed_values = list(rule)
        label = _label(parts, schema)
        listed = ", ".join(str(v) if isinstance(v, str) else show(v) for v in allowed_values)
        if isinstance(value, str):
            message = f"unknown {label} {value!r}"
            guess = did_you_mean(value, allowed_values, schema.get("x-aliases"))
            if guess is not None:
                message += f"; did you mean {guess!r}? Expected one of: {listed}"
            else:
                message += f"; expected one of: {listed}"
        else:
            message = f"expected one of: {listed}; got {describe(value)}"
        return [doc.problem(parts, message)]

    if keyword == "const":
        custom = schema.get("x-message")
        if isinstance(custom, str):
            return [doc.problem(parts, custom.replace("{value}", show(value)))]
        return [doc.problem(parts, f"expected {show(rule)}, got {show(value)}")]

    if expected:
        return [doc.problem(parts, f"expected {expected}, got {show(value)}")]

    if keyword == "pattern":
        custom = schema.get("x-message")
        if isinstance(custom, str):
            return [doc.problem(parts, custom.replace("{value}", show(value)))]
        return [doc.problem(parts, f"{show(value)} does not match the pattern {rule}")]
    if keyword == "minimum":
        return [doc.problem(parts, f"must be at least {rule}, got {show(value)}")]
    if keyword == "maximum":
        return [doc.problem(parts, f"must be at most {rule}, got {show(value)}")]
    if keyword == "exclusiveMinimum":
        return [doc.problem(parts, f"must be greater than {rule}, got {show(value)}")]
    if keyword == "exclusiveMaximum":
        return [doc.problem(parts, f"must be less than {rule}, got {show(value)}")]
    if keyword in ("minItems", "maxItems") and isinstance(value, list):
        low, high = schema.get("minItems"), schema.get("maxItems")
        if low is not None and low == high:
            message = f"expected exactly {low} item{'s' if low != 1 else ''}, got {len(value)}"
        elif keyword == "minItems":
            message = "must not be empty" if rule == 1 else f"needs at least {rule} items, got {len(value)}"
        else:
            message = f"may have at most {rule} items, got {len(value)}"
        return [doc.problem(parts, message)]
    if keyword in ("minProperties", "minLength") and rule == 1:
        return [doc.problem(parts, "must not be empty")]
    if keyword == "uniqueItems" and isinstance(value, list):
        seen: list[Any] = []
        repeated: list[Any] = []
        for item in value:
            if item in seen and item not in repeated:
                repeated.append(item)
            seen.append(item)
        return [doc.problem(parts, "contains duplicates: " + ", ".join(show(r) for r in repeated))]
    message = error.message
    if len(message) > 200:
        message = message[:199] + "…"
    return [doc.problem(parts, message)]


def _property_names(schema: Mapping[str, Any]) -> Iterator[str]:
    yield from (schema.get("properties") or {}).keys()


def _alternatives(doc: Document, error: ValidationError, parts: Parts) -> list[Problem]:
    """Collapse a failed oneOf/anyOf into the problems of its most relevant branch."""
    names = _required_alternatives(error.validator_value)
    if not error.context:  # oneOf: more than one branch matched
        if names:
            extra = "not both" if len(names) == 2 else "not several"
            return [doc.problem(parts, f"give only one of {_quoted_alternatives(names)}, {extra}", at_key=True)]
        return [doc.problem(parts, "matches more than one of the allowed forms; make it unambiguous")]
    branches = _branch_errors(error)
    depth0 = len(parts)

    def at_root(e: ValidationError) -> bool:
        return len(e.absolute_path) == depth0

    if names and all(all(e.validator == "required" and at_root(e) for e in errs) for errs in branches.values()):
        return [doc.problem(parts, f"missing one of the fields {_quoted_alternatives(names)}", at_key=True)]

    if all(any(e.validator == "type" and at_root(e) for e in errs) for errs in branches.values()):
        types: list[str] = []
        for errs in branches.values():
            for e in errs:
                if e.validator == "type" and at_root(e):
                    rule: Any = e.validator_value
                    wanted: list[str] = rule if isinstance(rule, list) else [rule]
                    types.extend(t for t in wanted if t not in types)
        return [doc.problem(parts, f"expected {_types_phrase(types)}, got {describe(error.instance)}")]

    def score(item: tuple[int, list[ValidationError]]) -> tuple[int, int, int, int]:
        _, errs = item
        wrong_type = any(e.validator == "type" and at_root(e) for e in errs)
        wrong_kind = any(e.validator in ("const", "enum") and len(e.absolute_path) <= depth0 + 1 for e in errs)
        deepest = max(len(e.absolute_path) for e in errs)
        return (int(wrong_type), int(wrong_kind), len(errs), -deepest)

    _, best = min(branches.items(), key=score)
    out: list[Problem] = []
    for sub in best:
        out.extend(_problems_for(doc, sub))
    return out
