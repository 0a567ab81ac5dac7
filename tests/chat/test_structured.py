"""parse_structured repairs what is safe to repair and refuses the rest; schemas per provider."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, Field

from reelflow.chat.structured import json_schema_for, parse_structured
from reelflow.core.errors import DomainError
from schemas.discover import ScriptAdaptation, VideoAnalysis
from schemas.failures import FailureCode


class Item(BaseModel):
    name: str
    score: float = Field(ge=0, le=10)


class Answer(BaseModel):
    title: str
    items: list[Item] = Field(default_factory=list)
    note: str | None = None


GOOD = {
    "title": "Top picks",
    "items": [{"name": "a", "score": 7}, {"name": "b", "score": 3}],
    "note": "ok",
}


def refused(text: str) -> DomainError:
    with pytest.raises(DomainError) as raised:
        parse_structured(text, Answer)
    assert raised.value.code == FailureCode.ANALYSIS_INVALID
    return raised.value


def test_valid_json_passes_unchanged() -> None:
    assert parse_structured(json.dumps(GOOD), Answer) == Answer.model_validate(GOOD)


@pytest.mark.parametrize(
    "text",
    [
        f"```json\n{json.dumps(GOOD)}\n```",
        f"```\n{json.dumps(GOOD, indent=2)}\n```",
        f"Here is the JSON you asked for:\n{json.dumps(GOOD)}\nHope it helps!",
        '{"title": "Top picks", "items": [{"name": "a", "score": 7,}, {"name": "b", "score": 3},], '
        '"note": "ok",}',
    ],
    ids=["fence", "bare-fence", "prose-around", "trailing-commas"],
)
def test_common_damage_is_repaired(text: str) -> None:
    assert parse_structured(text, Answer) == Answer.model_validate(GOOD)


def test_a_comma_inside_a_string_is_left_alone() -> None:
    text = '{"title": "a, ]", "items": [], "note": "x,}",}'
    assert parse_structured(text, Answer).title == "a, ]"


def test_a_tail_cut_in_the_closing_brackets_is_closed() -> None:
    text = json.dumps(GOOD)[:-1]  # the final } never arrived
    assert parse_structured(text, Answer) == Answer.model_validate(GOOD)


def test_a_partial_last_list_element_is_dropped_whole_not_completed() -> None:
    text = (
        '{"title": "Top picks", "note": "ok", '
        '"items": [{"name": "a", "score": 7}, {"name": "b", "sc'
    )
    answer = parse_structured(text, Answer)
    assert answer.items == [Item(name="a", score=7)]


def test_a_number_cut_short_is_not_guessed() -> None:
    # "score": 7 might have been 7.5 or 75: the element is dropped, not kept as 7.
    text = (
        '{"title": "t", "note": null, "items": [{"name": "a", "score": 1}, {"name": "b", "score": 7'
    )
    assert parse_structured(text, Answer).items == [Item(name="a", score=1)]


def test_a_cut_that_loses_a_field_is_refused_rather_than_defaulted() -> None:
    # Closing this would give {"title": "Top picks", "items": [...]} and `note` would
    # silently default to None: a half answer.
    error = refused('{"title": "Top picks", "items": [{"name": "a", "score": 7}], "note": "o')
    assert "cut off before note" in error.message


def test_a_cut_inside_the_first_field_is_refused() -> None:
    refused('{"title": "Top pi')


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "no json here",
        '{"title": 5]',
        '{"items": []}',
        '{"title": "t", "items": [{"name": "a", "score": 11}]}',
    ],
    ids=["empty", "blank", "prose", "mismatched", "missing-required", "out-of-range"],
)
def test_what_cannot_be_made_valid_is_refused(text: str) -> None:
    refused(text)


def test_validation_messages_name_the_fields_not_the_data() -> None:
    error = refused('{"title": "t", "items": [{"name": "a", "score": 11}]}')
    assert "items.0.score" in error.message


def _walk(node: object) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    if isinstance(node, dict):
        found.append(node)
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                for sub in value.values():  # property names are not schema keywords
                    found += _walk(sub)
            else:
                found += _walk(value)
    elif isinstance(node, list):
        for value in node:
            found += _walk(value)
    return found


@pytest.mark.parametrize("model", [VideoAnalysis, ScriptAdaptation])
@pytest.mark.parametrize("target", ["gemini", "openai", "anthropic"])
def test_schemas_are_inlined_strict_objects(model: type[BaseModel], target: str) -> None:
    schema = json_schema_for(model, target=target)  # type: ignore[arg-type]
    text = json.dumps(schema)
    assert "$ref" not in text and "$defs" not in text
    for node in _walk(schema):
        assert "default" not in node and "title" not in node
        if node.get("type") == "object":
            assert node["additionalProperties"] is False
            properties = node["properties"]
            assert isinstance(properties, dict)
            assert node["required"] == list(properties)


def test_numeric_bounds_move_into_descriptions_for_anthropic_only() -> None:
    def score_schema(target: str) -> dict[str, object]:
        schema = json_schema_for(VideoAnalysis, target=target)  # type: ignore[arg-type]
        branch = schema["properties"]["viral_score"]["anyOf"][0]
        return branch["properties"]["score"]  # type: ignore[no-any-return]

    assert score_schema("openai")["maximum"] == 10
    assert score_schema("gemini")["minimum"] == 0
    anthropic = score_schema("anthropic")
    assert "maximum" not in anthropic
    assert "maximum 10" in str(anthropic["description"])


def test_an_answer_to_the_strict_schema_validates() -> None:
    # What a provider following the strict schema sends: every field present, nulls included.
    answer = {
        "title": "t",
        "hook": "h",
        "scenes": [
            {
                "start_s": 0,
                "end_s": 2,
                "original": None,
                "direction": "d",
                "voiceover": None,
                "on_screen_text": None,
            }
        ],
        "call_to_action": "c",
        "audience_fit": {"score": 6.5, "reasons": ["r"]},
        "adapter": "m",
        "is_template": False,
    }
    assert parse_structured(json.dumps(answer), ScriptAdaptation).audience_fit.score == 6.5
