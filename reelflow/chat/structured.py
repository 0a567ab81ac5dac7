"""A model's JSON answer, validated against our pydantic schema, repaired only where safe.

Language models asked for JSON still damage it in a few recurring ways: they wrap it in a
Markdown code fence or a sentence, leave a comma before a closing bracket, or stop in the
middle because the output budget ran out. `parse_structured` undoes exactly those:

* code fences and text around the outermost object are dropped;
* a comma right before `}` or `]` (outside strings) is dropped;
* a truncated tail is closed only at the last point where every open value was complete:
  a half-written string, number or key is dropped with its member, never finished by us.

What is left must validate against the model; otherwise the answer is refused with
`FailureCode.ANALYSIS_INVALID`. A half object is never returned.

`json_schema_for` turns a pydantic model into the JSON Schema each provider's structured
output accepts (Gemini `response_json_schema`, OpenAI `response_format` strict json_schema,
Anthropic tool `input_schema`).
"""

from __future__ import annotations

import copy
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from reelflow.core.errors import DomainError
from schemas.failures import FailureCode

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

SchemaTarget = Literal["gemini", "openai", "anthropic"]

_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)
_OPEN_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_-]*\s*\n?", re.DOTALL)
_MAX_ERRORS_SHOWN = 3
_TRUNCATION_REPAIR = "closed a truncated answer at its last complete value"


def parse_structured(text: str, model: type[T], *, what: str = "the analysis") -> T:
    """Validate a model's JSON answer against `model`, repairing only recoverable damage.

    Args:
        text: The raw answer text.
        model: The pydantic model the answer must fit.
        what: How the message names the answer ("the analysis", "the script").

    Returns:
        A complete, valid instance.

    Raises:
        DomainError: `ANALYSIS_INVALID` when no safe repair gives a valid object.
    """
    if not text or not text.strip():
        raise DomainError(FailureCode.ANALYSIS_INVALID, f"The model returned no text for {what}.")
    body = _without_fences(text)
    data, repairs, prepared = _load_json(body)
    if data is not None:
        result = validate_structured(data, model, what=what)
        if repairs:
            logger.info("repaired %s before validation: %s", what, ", ".join(repairs))
        return result
    if prepared is None:
        raise DomainError(
            FailureCode.ANALYSIS_INVALID,
            f"The model's answer for {what} is not JSON, and no safe repair makes it JSON.",
        )
    return _from_truncated(prepared, model, what=what)


def _from_truncated(prepared: str, model: type[T], *, what: str) -> T:
    """A truncated answer closed at a complete value, if one still has every field.

    After a truncation, every declared field must still be there: defaults would otherwise
    fill what the model never wrote, and a half answer would pass as a whole one. The cut
    is tried at the last complete value of each nesting depth, deepest first, so a partial
    element of the last list is dropped whole rather than kept with missing fields.
    """
    schema = json_schema_for(model, target="openai")
    missing: list[str] = []
    for closed in _truncation_candidates(prepared):
        decoded = _try_loads(closed)
        if decoded is None:
            continue
        missing = _missing_fields(decoded[0], schema, "")
        if missing:
            continue
        try:
            result = validate_structured(decoded[0], model, what=what)
        except DomainError:
            continue
        logger.info("repaired %s: %s", what, _TRUNCATION_REPAIR)
        return result
    detail = f" before {', '.join(missing[:_MAX_ERRORS_SHOWN])}" if missing else ""
    raise DomainError(
        FailureCode.ANALYSIS_INVALID,
        f"The model's answer for {what} was cut off{detail}, and a shortened answer is not kept.",
    )


def validate_structured(data: object, model: type[T], *, what: str = "the analysis") -> T:
    """Validate already-decoded JSON (a tool call's input) against `model`.

    Raises:
        DomainError: `ANALYSIS_INVALID`, naming the first fields that do not fit.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
            for error in exc.errors()[:_MAX_ERRORS_SHOWN]
        ]
        more = exc.error_count() - len(problems)
        suffix = f" (and {more} more)" if more > 0 else ""
        raise DomainError(
            FailureCode.ANALYSIS_INVALID,
            f"The model's answer for {what} does not fit the schema: "
            f"{'; '.join(problems)}{suffix}.",
        ) from None


# --- repair ----------------------------------------------------------------------------------


def _without_fences(text: str) -> str:
    stripped = text.strip().lstrip("\ufeff")
    fenced = _FENCE.match(stripped)
    if fenced is not None:
        return fenced.group(1).strip()
    # A fence that was opened but never closed: the answer was cut off inside it.
    opened = _OPEN_FENCE.match(stripped)
    if opened is not None:
        return stripped[opened.end() :].strip()
    return stripped


def _load_json(body: str) -> tuple[object | None, list[str], str | None]:
    """The decoded answer and the repairs it took; else None and the text cleaned for a
    truncation repair (None when there is no JSON at all)."""
    repairs: list[str] = []
    start = _first_container(body)
    if start is None:
        return None, repairs, None
    if start > 0:
        repairs.append("dropped text before the JSON")
    body = body[start:]
    decoded = _try_loads(body)
    if decoded is not None:
        return decoded[0], repairs, body
    # Trailing prose after a complete object: decode the first value only.
    try:
        value, _ = json.JSONDecoder(strict=False).raw_decode(body)
    except json.JSONDecodeError:
        pass
    else:
        repairs.append("dropped text after the JSON")
        return value, repairs, body
    without_commas = _drop_trailing_commas(body)
    if without_commas != body:
        repairs.append("dropped trailing commas")
        decoded = _try_loads(without_commas)
        if decoded is not None:
            return decoded[0], repairs, without_commas
    return None, repairs, without_commas


def _first_container(text: str) -> int | None:
    # Our answers are pydantic models, so JSON objects: a "[" in leading prose is not the start.
    position = text.find("{")
    return position if position >= 0 else None


def _try_loads(text: str) -> tuple[object] | None:
    try:
        # strict=False lets raw newlines and tabs inside strings through: models write them.
        return (json.loads(text, strict=False),)
    except json.JSONDecodeError:
        return None


def _drop_trailing_commas(text: str) -> str:
    """Remove a `,` (and the blanks after it) that directly precedes `}` or `]`."""
    out: list[str] = []
    in_string = escaped = False
    index = 0
    while index < len(text):
        char = text[index]
        if in_string:
            out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            out.append(char)
        elif char == ",":
            lookahead = index + 1
            while lookahead < len(text) and text[lookahead] in " \t\r\n":
                lookahead += 1
            if lookahead < len(text) and text[lookahead] in "}]":
                index = lookahead
                continue
            out.append(char)
        else:
            out.append(char)
        index += 1
    return "".join(out)


_DELIMITERS = frozenset(",:}] \t\r\n")


def _truncation_candidates(text: str) -> list[str]:
    """`text` cut back to a complete value and closed: one candidate per nesting depth,
    the deepest (latest) first; empty when `text` is not a truncated JSON value.

    A safe point is right after a complete value in an array or a complete key/value pair
    in an object. Everything after the last safe point (a half string, a number that may be
    missing digits, a key without its value, a container with nothing complete in it yet)
    is dropped, then the open containers are closed in order. Nothing is invented, not even
    an empty list.
    """
    # Each frame: the container's closer, and for objects whether a value is awaited.
    stack: list[list[Any]] = []
    # Latest safe cut per depth: depth -> (end, closers).
    safe_by_depth: dict[int, tuple[int, str]] = {}
    in_string = escaped = False
    string_is_key = False
    in_primitive = False
    index = 0

    def mark_safe(end: int) -> None:
        safe_by_depth[len(stack)] = (end, "".join(frame[0] for frame in reversed(stack)))

    def value_done(end: int) -> None:
        # A value just ended at `end`: safe if it sits in an array or as an object's value.
        if not stack:
            return
        frame = stack[-1]
        if frame[0] == "]" or frame[1] == "value":
            if frame[0] == "}":
                frame[1] = "after_value"
            mark_safe(end)

    while index < len(text):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                if string_is_key:
                    stack[-1][1] = "colon"
                else:
                    value_done(index + 1)
            index += 1
            continue
        if in_primitive:
            if char in _DELIMITERS:
                in_primitive = False
                value_done(index)
            else:
                index += 1
                continue
        if char == '"':
            in_string = True
            string_is_key = bool(stack) and stack[-1][0] == "}" and stack[-1][1] == "key"
        elif char in "{[":
            stack.append(["}", "key"] if char == "{" else ["]", "value"])
        elif char in "}]":
            if not stack or stack[-1][0] != char:
                return []  # mismatched brackets: damage we do not guess about
            stack.pop()
            value_done(index + 1)
        elif char == ":":
            if stack and stack[-1][0] == "}":
                stack[-1][1] = "value"
        elif char == ",":
            if stack and stack[-1][0] == "}":
                stack[-1][1] = "key"
        elif char not in " \t\r\n":
            in_primitive = True
        index += 1
    if not stack:
        return []  # complete (or never opened): not a truncation
    # A cut deeper than what is still open now was closed later in the text: not a tail.
    cuts = sorted(
        (cut for depth, cut in safe_by_depth.items() if depth <= len(stack)),
        key=lambda cut: cut[0],
        reverse=True,
    )
    return [text[:end].rstrip().rstrip(",") + closers for end, closers in cuts]


def _missing_fields(data: object, schema: dict[str, Any], path: str) -> list[str]:
    """Fields the schema declares that a repaired answer lacks, at any depth.

    After a truncation, every declared field must still be there: defaults would otherwise
    fill what the model never wrote, and a half answer would pass as a whole one. Only the
    last list's partial element (dropped whole) can be lost this way.
    """
    if isinstance(data, dict):
        branches = schema.get("anyOf", [schema])
        object_schema = next((b for b in branches if b.get("type") == "object"), None)
        if object_schema is None:
            return []
        missing = [
            f"{path}{name}" for name in object_schema.get("required", []) if name not in data
        ]
        for name, sub in object_schema.get("properties", {}).items():
            if name in data:
                missing += _missing_fields(data[name], sub, f"{path}{name}.")
        return missing
    if isinstance(data, list):
        branches = schema.get("anyOf", [schema])
        array_schema = next((b for b in branches if b.get("type") == "array"), None)
        if array_schema is None or not isinstance(array_schema.get("items"), dict):
            return []
        missing = []
        for index, item in enumerate(data):
            missing += _missing_fields(item, array_schema["items"], f"{path.rstrip('.')}[{index}].")
        return missing
    return []


# --- schemas for the providers -----------------------------------------------------------------

_DROPPED_KEYS = frozenset({"title", "default", "examples"})
_BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def json_schema_for(model: type[BaseModel], *, target: SchemaTarget = "gemini") -> dict[str, Any]:
    """The JSON Schema of `model` in the shape a provider's structured output accepts.

    Common to all: `$ref`s are inlined (our models are not recursive), titles and defaults
    are dropped, every object lists all its properties as required and forbids others
    (OpenAI's strict mode demands both; for Gemini and Anthropic it asks for an explicit
    `null` instead of a silently missing field). Optional fields stay `anyOf [..., null]`.

    `anthropic`: numeric bounds move into the description, since Anthropic's structured
    output rejects `minimum`/`maximum` (its SDK's `transform_schema` does the same).

    Args:
        model: The pydantic model.
        target: `gemini` (`response_json_schema`), `openai` (`response_format` with
            `strict: true`) or `anthropic` (a tool's `input_schema`).
    """
    raw = model.model_json_schema(mode="validation")
    definitions = raw.get("$defs", {})
    normalised: dict[str, Any] = _normalise(raw, definitions, target)
    return normalised


def _normalise(node: object, definitions: dict[str, Any], target: SchemaTarget) -> Any:
    if isinstance(node, list):
        return [_normalise(item, definitions, target) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        merged = {
            **copy.deepcopy(definitions[name]),
            **{k: v for k, v in node.items() if k != "$ref"},
        }
        return _normalise(merged, definitions, target)
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or key == "$defs":
            continue
        if key == "properties" and isinstance(value, dict):
            result[key] = {
                name: _normalise(sub, definitions, target) for name, sub in value.items()
            }
        else:
            result[key] = _normalise(value, definitions, target)
    if result.get("type") == "object" and "properties" in result:
        result["required"] = list(result["properties"])
        result["additionalProperties"] = False
    if target == "anthropic":
        bounds = [f"{key} {result.pop(key)}" for key in _BOUND_KEYS if key in result]
        if bounds:
            note = f"({', '.join(bounds)})"
            result["description"] = (
                f"{result['description']} {note}" if result.get("description") else note
            )
    return result


@dataclass(frozen=True)
class TokenUsage:
    """Tokens a provider billed for one call (for the ledger)."""

    input_tokens: int
    output_tokens: int
