"""The JSON documents grading exchanges with other programs, checked against the schemas in schemas/.

    classroom50-result-v1.json  the result.json a Classroom 50 autograder leaves (classroom50/result/v1)
    shard-run.json              run.json of a grading run, which grade-merge reads from every shard
    grades.json                 grades.json, every check of every learner graded, which grade-merge merges

The schemas are ordinary JSON Schema (the tests check them with `jsonschema`); the grader itself checks
them with the small validator below, which knows the few keywords they use, so that neither the
Gradescope nor the Classroom 50 autograder needs one more dependency. Files are read with a size cap and
refused with a message that names the file and the field.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from ..judge.untrusted import load_json, read_capped

SCHEMAS = Path(__file__).resolve().parent / "schemas"
RESULT_V1 = "classroom50-result-v1"
SHARD_RUN = "shard-run"
GRADES = "grades"

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


class ContractError(ValueError):
    """A document that does not keep its contract; the message names the file (or document) and field."""


@cache
def schema(name: str) -> dict[str, Any]:
    """One of the schemas in schemas/, by file name without .json."""
    return json.loads((SCHEMAS / f"{name}.json").read_text(encoding="utf-8"))


def _is(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False  # JSON's true is not a number, whatever Python says
    return isinstance(value, _TYPES[kind])


def problems(value: Any, rules: dict[str, Any], where: str = "") -> list[str]:
    """What is wrong with `value` under schema `rules`, as 'field: reason' lines (none if it keeps them)."""
    here = where or "(top)"
    if "const" in rules and value != rules["const"]:
        return [f"{here}: must be {rules['const']!r}, not {value!r}"]
    if "enum" in rules and value not in rules["enum"]:
        return [f"{here}: must be one of {rules['enum']}, not {value!r}"]
    kinds = rules.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, kind) for kind in kinds):
            return [f"{here}: must be {' or '.join(kinds)}, not {type(value).__name__}"]
    found: list[str] = []
    if isinstance(value, str):
        if len(value) < rules.get("minLength", 0):
            found.append(f"{here}: must not be empty" if not value else f"{here}: too short")
        if "maxLength" in rules and len(value) > rules["maxLength"]:
            found.append(f"{here}: longer than {rules['maxLength']} characters")
        if "pattern" in rules and not re.search(rules["pattern"], value):
            found.append(f"{here}: {value[:80]!r} does not match {rules['pattern']}")
    if _is(value, "number") and "minimum" in rules and value < rules["minimum"]:
        found.append(f"{here}: must be at least {rules['minimum']}, not {value}")
    if isinstance(value, list):
        if "maxItems" in rules and len(value) > rules["maxItems"]:
            found.append(f"{here}: more than {rules['maxItems']} items")
        elif "items" in rules:
            for index, item in enumerate(value):
                found += problems(item, rules["items"], f"{where}[{index}]")
    if isinstance(value, dict):
        properties = rules.get("properties", {})
        found += [
            f"{where}.{key}: missing".lstrip(".") for key in rules.get("required", ()) if key not in value
        ]
        for key, item in value.items():
            path = f"{where}.{key}".lstrip(".")
            if key in properties:
                found += problems(item, properties[key], path)
            elif rules.get("additionalProperties") is False:
                found.append(f"{path}: not a field of this document")
    return found


def check(document: Any, name: str, source: str) -> None:
    """Raise ContractError naming `source` and the first fields that break schema `name`."""
    found = problems(document, schema(name))
    if found:
        shown = "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")
        raise ContractError(f"{source}: {shown}")


def read(path: Path, name: str, limit: int) -> dict[str, Any]:
    """A JSON document from `path` that keeps schema `name`, read with a cap of `limit` bytes."""
    if not path.is_file():
        raise ContractError(f"{path}: missing")
    data = read_capped(path, limit)
    if data is None:
        raise ContractError(f"{path}: not a regular file of at most {limit:,} bytes")
    document = load_json(data)
    if document is None:
        raise ContractError(f"{path}: not JSON")
    check(document, name, str(path))
    return document
