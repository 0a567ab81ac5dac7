"""Script exports as the production team reads them: Markdown, JSON and PDF.

The PDFs are parsed back here (objects, Flate streams, each font's ToUnicode map, the
`Tj` strings of the pages), so the tests read the text a PDF viewer would extract.
"""

from __future__ import annotations

import json
import re
import uuid
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reelflow.discover import export
from reelflow.discover.export import ScriptDocument
from schemas.discover import AdaptedScene, ScriptContent
from schemas.discover_tables import Script

TITLE = "Crème brûlée at 6 am 😀 中 — “Standoff”"


def _script(scenes: int = 2, **overrides: object) -> Script:
    content = ScriptContent(
        hook="Your kid just said no to the iPad.\nHere's why. 😀",
        scenes=[
            AdaptedScene(
                start_s=i * 4.5,
                end_s=i * 4.5 + 4.5,
                original="Parent holds a tablet" if i == 0 else None,
                direction=f"Scene {i + 1}: café table | warm light",
                voiceover=f"Line {i + 1}: what if screen time ended without a fight?",
                on_screen_text="No more standoffs" if i % 2 == 0 else None,
            )
            for i in range(scenes)
        ],
        call_to_action="Get the Core Deck — link in bio",
        notes_for_production="Shoot vertical, natural light.",
    )
    fields: dict[str, object] = {
        "id": uuid.UUID("00000000-0000-4000-8000-000000000002"),
        "tenant_id": uuid.uuid4(),
        "product_id": uuid.UUID("00000000-0000-4000-8000-00000000000a"),
        "brand_id": uuid.UUID("00000000-0000-4000-8000-00000000000b"),
        "parent_script_id": uuid.UUID("00000000-0000-4000-8000-000000000001"),
        "project_id": None,
        "adaptation_id": None,
        "source_video_id": None,
        "produced_video_id": None,
        "published_post_id": None,
        "version": 2,
        "title": TITLE,
        "content": content.model_dump(mode="json"),
        "notes": "Sharper hook, shorter CTA",
        "status": "in_production",
        "status_history": [
            {"from": None, "to": "draft", "by": "cli", "at": "2026-11-28T10:00:00+00:00"},
            {
                "from": "draft",
                "to": "review",
                "by": "rf_abc1234",
                "at": "2026-11-28T11:00:00+00:00",
            },
        ],
        "predicted_viral_score": 7.5,
        "created_at": datetime(2026, 11, 28, 10, tzinfo=UTC),
        "updated_at": datetime(2026, 11, 28, 11, tzinfo=UTC),
    }
    fields.update(overrides)
    return Script(**fields)


NAMES: dict[str, str | None] = {"product_name": "Core Deck", "brand_name": "Ungrind"}


# --- reading a PDF back --------------------------------------------------------------------

_OBJECT = re.compile(rb"(\d+) 0 obj(.*?)endobj", re.S)
_STREAM = re.compile(rb"stream\r?\n(.*?)\r?\nendstream", re.S)
_LITERAL = re.compile(rb"\((?:\\.|[^\\)])*\)", re.S)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def _objects(pdf: bytes) -> dict[int, tuple[bytes, bytes | None]]:
    """Each object's dictionary text and its (inflated) stream."""
    found: dict[int, tuple[bytes, bytes | None]] = {}
    for match in _OBJECT.finditer(pdf):
        body = match.group(2)
        stream = _STREAM.search(body)
        data = None
        if stream is not None:
            data = stream.group(1)
            if b"/FlateDecode" in body[: stream.start()]:
                data = zlib.decompress(data)
        found[int(match.group(1))] = (body if stream is None else body[: stream.start()], data)
    return found


def _unescape(literal: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(literal):
        byte = literal[i : i + 1]
        if byte == b"\\":
            following = literal[i + 1 : i + 2]
            octal = re.match(rb"[0-7]{1,3}", literal[i + 1 : i + 4])
            if octal:
                out.append(int(octal.group(0), 8) & 0xFF)
                i += 1 + len(octal.group(0))
                continue
            out += _ESCAPES.get(following, following)
            i += 2
            continue
        out += byte
        i += 1
    return bytes(out)


def _to_unicode(cmap: bytes) -> dict[int, str]:
    mapping: dict[int, str] = {}
    for block in re.findall(rb"beginbfchar(.*?)endbfchar", cmap, re.S):
        for code, text in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
            mapping[int(code, 16)] = bytes.fromhex(text.decode()).decode("utf-16-be")
    for block in re.findall(rb"beginbfrange(.*?)endbfrange", cmap, re.S):
        for low, high, start in re.findall(
            rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block
        ):
            for offset in range(int(high, 16) - int(low, 16) + 1):
                mapping[int(low, 16) + offset] = chr(int(start, 16) + offset)
    return mapping


def pdf_text(pdf: bytes) -> str:
    """The text of every page, one line per `Tj`, decoded through each font's ToUnicode."""
    objects = _objects(pdf)
    fonts: dict[bytes, dict[int, str] | None] = {}
    for body, _ in objects.values():
        for name, ref in re.findall(rb"/(F\d+) (\d+) 0 R", body):
            font_body = objects[int(ref)][0]
            unicode_ref = re.search(rb"/ToUnicode (\d+) 0 R", font_body)
            fonts[name] = None
            if unicode_ref is not None:
                cmap = objects[int(unicode_ref.group(1))][1]
                assert cmap is not None
                fonts[name] = _to_unicode(cmap)
    lines: list[str] = []
    for body, data in objects.values():
        if data is None or b"Tj" not in data or b"/Subtype" in body:
            continue
        font: dict[int, str] | None = None
        for match in re.finditer(rb"/(F\d+) [\d.]+ Tf|(\((?:\\.|[^\\)])*\)) Tj", data, re.S):
            if match.group(1):
                font = fonts[match.group(1)]
                continue
            raw = _unescape(match.group(2)[1:-1])
            if font is None:
                lines.append(raw.decode("latin-1"))
            else:
                codes = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
                lines.append("".join(font.get(code, "") for code in codes))
    return "\n".join(lines)


def page_count(pdf: bytes) -> int:
    """The page objects, checked against the page tree's own count."""
    bodies = [body for body, _ in _objects(pdf).values()]
    pages = sum(1 for body in bodies if re.search(rb"/Type /Page\b(?!s)", body))
    trees = [body for body in bodies if b"/Type /Pages" in body]
    assert len(trees) == 1
    count = re.search(rb"/Count (\d+)", trees[0])
    assert count is not None and int(count.group(1)) == pages
    return pages


def _flat(text: str) -> str:
    """Lines joined with spaces: the PDF wraps long cells and paragraphs."""
    return " ".join(text.split())


# --- Markdown ------------------------------------------------------------------------------


def test_markdown_is_a_production_document() -> None:
    md = export.to_markdown(_script(), **NAMES)
    assert md.startswith(f"# {TITLE}\n")
    for fact in (
        "| **Version** | 2 |",
        "| **Status** | in production |",
        "| **Product** | Core Deck |",
        "| **Brand** | Ungrind |",
        "| **Predicted viral score** | 7.5 / 10 |",
    ):
        assert fact in md
    assert "## Hook\n\n> Your kid just said no to the iPad.\n> Here's why. 😀\n" in md
    assert "| # | Time | Direction | Voiceover | On-screen text | Original |" in md
    # Times as a clock, a pipe in the text escaped so the row keeps its six cells.
    assert (
        "| 1 | 0:00–0:04.5 | Scene 1: café table \\| warm light | Line 1: what if screen time "
        "ended without a fight? | No more standoffs | Parent holds a tablet |"
    ) in md
    assert "| 2 | 0:04.5–0:09 | Scene 2: café table \\| warm light |" in md
    assert "## Call to action\n\nGet the Core Deck — link in bio\n" in md
    assert "## Notes for production\n\nShoot vertical, natural light.\n" in md
    assert "## Version 2 notes\n\nSharper hook, shorter CTA\n" in md


def test_markdown_without_scenes_product_or_original_says_so() -> None:
    content = ScriptContent(hook="Hook", scenes=[AdaptedScene(start_s=0, end_s=1, direction="d")])
    md = export.to_markdown(
        _script(
            content=content.model_dump(mode="json"), product_id=None, brand_id=None, notes=None
        ),
        product_name=None,
        brand_name=None,
    )
    assert "| **Product** | — |" in md and "| **Brand** | — |" in md
    assert "| # | Time | Direction | Voiceover | On-screen text |\n" in md
    assert "Version 2 notes" not in md and "Notes for production" not in md
    empty = export.to_markdown(
        _script(content=ScriptContent(hook="h").model_dump(mode="json")), **NAMES
    )
    assert "_No scenes yet._" in empty


# --- JSON ----------------------------------------------------------------------------------


def test_json_has_the_documented_shape() -> None:
    raw = export.to_json(_script(), **NAMES)
    body = json.loads(raw)
    assert list(body) == list(ScriptDocument.model_fields) and body["format"] == "reelflow.script/1"
    assert body["product"] == {"id": "00000000-0000-4000-8000-00000000000a", "name": "Core Deck"}
    assert body["brand"]["name"] == "Ungrind" and body["status"] == "in_production"
    assert body["content"]["scenes"][1]["start_s"] == 4.5
    assert body["status_history"][0] == {
        "from": None,
        "to": "draft",
        "by": "cli",
        "at": "2026-11-28T10:00:00Z",
    }
    assert body["project_id"] is None and body["produced_video_id"] is None
    # Unicode stays readable, and the shape reads back.
    assert "Crème brûlée at 6 am 😀".encode() in raw
    assert ScriptDocument.model_validate_json(raw).content.hook.endswith("😀")
    assert export.to_json(_script(), **NAMES) == raw


# --- PDF -----------------------------------------------------------------------------------


def test_pdf_with_the_unicode_font_keeps_accents_and_emoji() -> None:
    # deploy/bootstrap.sh installs fonts-dejavu-core; without it this is a missing install.
    assert export.find_unicode_font() is not None, "DejaVu Sans is missing: run bootstrap"
    pdf = export.to_pdf(_script(), product_name="Core Deck", brand_name="Ungrind")
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert page_count(pdf) == 1
    text = pdf_text(pdf)
    flat = _flat(text)
    assert "Crème brûlée at 6 am 😀" in flat  # DejaVu has this emoji
    assert "\ufffd" in flat and "中" not in flat  # …but no CJK glyph: shown as U+FFFD
    assert "“Standoff”" in flat
    for expected in (
        "Core Deck",
        "Ungrind",
        "in production",
        "7.5 / 10",
        "Here's why. 😀",
        "0:00–0:04.5",
        "Scene 1: café table | warm light",
        "No more standoffs",
        "Parent holds a tablet",
        "Get the Core Deck — link in bio",
        "Shoot vertical, natural light.",
        "Sharper hook, shorter CTA",
    ):
        assert expected in flat, expected
    assert "page1/1" in flat.replace(" ", "")


def test_a_long_script_breaks_across_pages_with_every_scene() -> None:
    assert export.find_unicode_font() is not None, "DejaVu Sans is missing: run bootstrap"
    pdf = export.to_pdf(_script(scenes=40), product_name="Core Deck", brand_name="Ungrind")
    pages = page_count(pdf)
    assert pages >= 3
    flat = _flat(pdf_text(pdf))
    assert all(f"Line {i}: what if" in flat for i in range(1, 41))
    # The total is written in afterwards, as a separate string.
    assert f"page{pages}/{pages}" in flat.replace(" ", "")


def test_pdf_without_a_unicode_font_transliterates_to_latin1() -> None:
    pdf = export.to_pdf(_script(), product_name="Core Deck", brand_name="Ungrind", font=None)
    assert pdf.startswith(b"%PDF-") and page_count(pdf) == 1
    flat = _flat(pdf_text(pdf))
    # Latin-1 letters kept; quotes and dashes made ASCII; emoji and CJK become "?".
    assert 'Crème brûlée at 6 am ? ? - "Standoff"' in flat
    assert "Get the Core Deck - link in bio" in flat
    assert "Scene 1: café table | warm light" in flat


def test_a_configured_font_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    found = export.find_unicode_font()
    assert found is not None, "DejaVu Sans is missing: run bootstrap"
    monkeypatch.setenv(export.FONT_ENV, str(found[0]))
    assert export.find_unicode_font() == (found[0], None)
    monkeypatch.setenv(export.FONT_ENV, str(tmp_path / "missing.ttf"))
    assert export.find_unicode_font() == found


def test_transliteration_and_clock() -> None:
    assert export.transliterate_latin1("Zürich ő ł … €5 ™") == "Zürich o ? ... EUR5 (TM)"
    assert [export.clock(s) for s in (0, 4.5, 75.5, 9.96, 600)] == [
        "0:00",
        "0:04.5",
        "1:15.5",
        "0:10",
        "10:00",
    ]


def test_export_file_names_are_ascii() -> None:
    assert export.export_filename(_script(), "pdf") == "creme-brulee-at-6-am-standoff-v2.pdf"
    assert export.export_filename(_script(title="中文"), "md") == "script-v2.md"


def test_a_scene_too_tall_for_a_table_row_is_set_as_paragraphs() -> None:
    # fpdf2 cannot split a table row across pages; such a scene must still print in full.
    long_direction = " ".join(f"step{i}" for i in range(330))  # about 2,000 characters
    content = ScriptContent(
        hook="h",
        scenes=[
            AdaptedScene(start_s=0, end_s=2, direction="short one"),
            AdaptedScene(
                start_s=2,
                end_s=60,
                direction=long_direction,
                voiceover=long_direction.replace("step", "say"),
                on_screen_text=long_direction.replace("step", "show"),
                original=long_direction.replace("step", "was"),
            ),
            AdaptedScene(start_s=60, end_s=61, direction="after the long one"),
        ],
    )
    for font in ("auto", None):
        pdf = export.to_pdf(
            _script(content=content.model_dump(mode="json")),
            product_name=None,
            brand_name=None,
            font=font,
        )
        assert page_count(pdf) >= 2
        flat = _flat(pdf_text(pdf))
        for word in ("short one", "step329", "say329", "show329", "was329", "after the long one"):
            assert word in flat, (font, word)
        assert re.search(r"Scene 2 0:02[-–]1:00", flat)
