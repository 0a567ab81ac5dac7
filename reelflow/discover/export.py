"""A script version as a document for the production team: Markdown, JSON or PDF.

All three carry the same facts: title, version, status, product and brand, predicted viral
score, hook, the scene table (times, what to film, voiceover, on-screen text, and what the
original video did there), call to action, production notes and the version's notes.

JSON has one documented shape, :class:`ScriptDocument` (`"format": "reelflow.script/1"`);
fields are never removed or renamed within a format version, and absent values are `null`.

PDF text is Unicode. fpdf2's built-in fonts only cover latin-1, so the PDF is set in DejaVu
Sans when its TTF is on the machine (Debian/Ubuntu `fonts-dejavu-core`, also Fedora and Arch
paths, or `REELFLOW_PDF_FONT` naming a TTF); a character that font has no glyph for (CJK,
most emoji) is printed as U+FFFD. Without DejaVu the PDF falls back to Helvetica and
transliterates: accents kept where latin-1 has the letter, typographic quotes and dashes
made ASCII, decomposable letters stripped of their marks, anything else `?`. Either way no
text is silently dropped from the line it was in.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.discover import ScriptContent, ScriptStatus
from schemas.discover_tables import Script

if TYPE_CHECKING:
    from fpdf import FPDF

JSON_FORMAT: Literal["reelflow.script/1"] = "reelflow.script/1"

FONT_ENV = "REELFLOW_PDF_FONT"
"""A regular-weight TTF to set PDFs in, instead of looking for DejaVu Sans."""

_FONT_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),  # Debian, Ubuntu
    Path("/usr/share/fonts/dejavu-sans-fonts"),  # Fedora
    Path("/usr/share/fonts/dejavu"),
    Path("/usr/share/fonts/TTF"),  # Arch
)


class NamedRef(BaseModel):
    """An object a script points at, with the name a person reads."""

    id: uuid.UUID
    name: str | None


class StatusChange(BaseModel):
    """One recorded move of a script's status; `from` is null for the creation."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    from_: ScriptStatus | None = Field(alias="from")
    to: ScriptStatus
    by: str
    at: datetime


class ScriptDocument(BaseModel):
    """The JSON export of one script version (`format` = `reelflow.script/1`)."""

    format: Literal["reelflow.script/1"] = JSON_FORMAT
    script_id: uuid.UUID
    parent_script_id: uuid.UUID | None
    version: int
    title: str
    status: ScriptStatus
    product: NamedRef | None
    brand: NamedRef | None
    project_id: uuid.UUID | None
    adaptation_id: uuid.UUID | None
    source_video_id: uuid.UUID | None
    predicted_viral_score: float | None
    notes: str | None
    content: ScriptContent
    status_history: list[StatusChange]
    produced_video_id: uuid.UUID | None
    published_post_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


def status_changes(script: Script) -> list[StatusChange]:
    """The recorded moves of a version, oldest first."""
    return [StatusChange.model_validate(entry) for entry in script.status_history or []]


def script_document(
    script: Script, *, product_name: str | None, brand_name: str | None
) -> ScriptDocument:
    """The export's facts, as one model every format is written from."""
    return ScriptDocument(
        script_id=script.id,
        parent_script_id=script.parent_script_id,
        version=script.version,
        title=script.title,
        status=ScriptStatus(script.status),
        product=None
        if script.product_id is None
        else NamedRef(id=script.product_id, name=product_name),
        brand=None if script.brand_id is None else NamedRef(id=script.brand_id, name=brand_name),
        project_id=script.project_id,
        adaptation_id=script.adaptation_id,
        source_video_id=script.source_video_id,
        predicted_viral_score=script.predicted_viral_score,
        notes=script.notes,
        content=ScriptContent.model_validate(script.content),
        status_history=status_changes(script),
        produced_video_id=script.produced_video_id,
        published_post_id=script.published_post_id,
        created_at=script.created_at,
        updated_at=script.updated_at,
    )


def export_filename(script: Script, extension: str) -> str:
    """An ASCII file name from the title and version, e.g. `screen-time-standoff-v2.pdf`."""
    ascii_title = (
        unicodedata.normalize("NFKD", script.title).encode("ascii", "ignore").decode().lower()
    )
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title).strip("-")[:60].strip("-") or "script"
    return f"{slug}-v{script.version}.{extension}"


def clock(seconds: float) -> str:
    """`m:ss`, with tenths when the time has them: 75.5 → `1:15.5`."""
    tenths = round(seconds * 10)
    minutes, rest = divmod(tenths, 600)
    whole, fraction = divmod(rest, 10)
    return f"{minutes}:{whole:02d}" + (f".{fraction}" if fraction else "")


def _score(score: float | None) -> str:
    return "—" if score is None else f"{score:.1f} / 10"


def _facts(doc: ScriptDocument) -> list[tuple[str, str]]:
    return [
        ("Version", str(doc.version)),
        ("Status", doc.status.value.replace("_", " ")),
        ("Product", (doc.product.name or str(doc.product.id)) if doc.product else "—"),
        ("Brand", (doc.brand.name or str(doc.brand.id)) if doc.brand else "—"),
        ("Predicted viral score", _score(doc.predicted_viral_score)),
        ("Script id", str(doc.script_id)),
    ]


# --- Markdown ------------------------------------------------------------------------------


def _cell(text: str | None) -> str:
    """Table-cell text: pipes escaped and line breaks kept, so no cell breaks the table."""
    if not text:
        return ""
    return (
        text.replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")
    )


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines() or [""])


def to_markdown(script: Script, *, product_name: str | None, brand_name: str | None) -> str:
    """The script as a Markdown document for the production team."""
    doc = script_document(script, product_name=product_name, brand_name=brand_name)
    content = doc.content
    lines = [f"# {doc.title}", "", "| | |", "|---|---|"]
    lines += [f"| **{label}** | {_cell(value)} |" for label, value in _facts(doc)]
    lines += ["", "## Hook", "", _quote(content.hook), ""]
    lines += ["## Scenes", ""]
    if content.scenes:
        with_original = any(scene.original for scene in content.scenes)
        header = ["#", "Time", "Direction", "Voiceover", "On-screen text"]
        if with_original:
            header.append("Original")
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for number, scene in enumerate(content.scenes, 1):
            cells = [
                str(number),
                f"{clock(scene.start_s)}–{clock(scene.end_s)}",
                _cell(scene.direction),
                _cell(scene.voiceover),
                _cell(scene.on_screen_text),
            ]
            if with_original:
                cells.append(_cell(scene.original))
            lines.append("| " + " | ".join(cells) + " |")
    else:
        lines.append("_No scenes yet._")
    lines += ["", "## Call to action", "", content.call_to_action or "—", ""]
    if content.notes_for_production:
        lines += ["## Notes for production", "", content.notes_for_production, ""]
    if doc.notes:
        lines += [f"## Version {doc.version} notes", "", doc.notes, ""]
    return "\n".join(lines)


# --- JSON ----------------------------------------------------------------------------------


def to_json(script: Script, *, product_name: str | None, brand_name: str | None) -> bytes:
    """The script as UTF-8 JSON in the :class:`ScriptDocument` shape, keys in a fixed order."""
    doc = script_document(script, product_name=product_name, brand_name=brand_name)
    return (
        json.dumps(doc.model_dump(mode="json", by_alias=True), ensure_ascii=False, indent=2) + "\n"
    ).encode()


# --- PDF -----------------------------------------------------------------------------------

_ASCII_FOR = {
    "‘": "'",
    "’": "'",
    "‚": ",",
    "“": '"',
    "”": '"',
    "„": '"',
    "–": "-",
    "—": "-",
    "−": "-",
    "…": "...",
    "•": "*",
    "→": "->",
    "←": "<-",
    "€": "EUR",
    "™": "(TM)",
    "\u00a0": " ",
}


def transliterate_latin1(text: str) -> str:
    """`text` in latin-1, for the built-in PDF fonts (the module docstring says how)."""
    out: list[str] = []
    for char in text:
        if ord(char) < 256:
            out.append(char)
        elif char in _ASCII_FOR:
            out.append(_ASCII_FOR[char])
        else:
            stripped = "".join(
                c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)
            )
            out.append(stripped if stripped and all(ord(c) < 256 for c in stripped) else "?")
    return "".join(out)


def find_unicode_font() -> tuple[Path, Path | None] | None:
    """A regular (and, if there is one, bold) Unicode TTF to set PDFs in, or None."""
    configured = os.environ.get(FONT_ENV)
    if configured and Path(configured).is_file():
        return Path(configured), None
    for directory in _FONT_DIRS:
        regular = directory / "DejaVuSans.ttf"
        if regular.is_file():
            bold = directory / "DejaVuSans-Bold.ttf"
            return regular, bold if bold.is_file() else None
    return None


_LINE_HEIGHT = 4.6
_PADDING = 1.2
_MAX_ROW_MM = 110.0
"""A scene whose table row would be taller than this is set as labelled paragraphs instead:
fpdf2 cannot split a table row across pages, and refuses a row taller than one."""


def _new_pdf() -> FPDF:
    """An A4 portrait document with a footer naming the script and the page.

    fpdf2 is imported here, not with the module: it takes the API a second to load, and
    only PDF exports need it.
    """
    from fpdf import FPDF

    class ScriptPdf(FPDF):
        def footer(self) -> None:
            self.set_y(-12)
            self.set_font(size=8)
            self.set_text_color(110)
            text = getattr(self, "footer_text", "")
            self.cell(0, 6, f"{text}   ·   page {self.page_no()}/{{nb}}", align="C")
            self.set_text_color(0)

    return ScriptPdf(orientation="portrait", unit="mm", format="A4")


class _Typesetter:
    """Writes text in whichever font the PDF has, replacing what the font cannot show."""

    def __init__(self, font: tuple[Path, Path | None] | None) -> None:
        from fpdf.fonts import TTFFont

        self.pdf = _new_pdf()
        self.pdf.set_auto_page_break(auto=True, margin=16)
        self.pdf.set_margins(15, 15, 15)
        self.unicode = font is not None
        self.glyphs: set[int] = set()
        if font is not None:
            regular, bold = font
            self.pdf.add_font("Body", "", str(regular))
            self.pdf.add_font("Body", "B", str(bold or regular))
            body = self.pdf.fonts["body"]
            assert isinstance(body, TTFFont)
            self.glyphs = set(body.cmap)
            self.family = "Body"
        else:
            self.family = "Helvetica"
        self.pdf.set_font(self.family, size=10)
        # The footer uses the middle dot, which is in latin-1 and in DejaVu.

    def text(self, value: str | None) -> str:
        if not value:
            return ""
        if not self.unicode:
            return transliterate_latin1(value)
        return "".join(
            char if ord(char) in self.glyphs or char in "\n\t" else "\ufffd" for char in value
        )

    def heading(self, value: str, size: float = 13) -> None:
        self.pdf.ln(3)
        self.pdf.set_font(self.family, "B", size)
        self.pdf.multi_cell(0, size * 0.5, self.text(value), new_x="LMARGIN", new_y="NEXT")
        self.pdf.set_font(self.family, "", 10)
        self.pdf.ln(1)

    def paragraph(self, value: str) -> None:
        self.pdf.multi_cell(0, 5, self.text(value), new_x="LMARGIN", new_y="NEXT")

    def table(
        self, rows: Iterable[list[str]], widths: tuple[float, ...], header: bool = True
    ) -> None:
        self.pdf.set_font(self.family, "", 9)
        with self.pdf.table(
            col_widths=widths,
            text_align="LEFT",
            first_row_as_headings=header,
            line_height=_LINE_HEIGHT,
            padding=_PADDING,
        ) as table:
            for values in rows:
                row = table.row()
                for value in values:
                    row.cell(self.text(value))
        self.pdf.set_font(self.family, "", 10)

    def row_height(self, values: list[str], widths: tuple[float, ...]) -> float:
        """How tall a table row with these cells would be, in mm."""
        self.pdf.set_font(self.family, "", 9)
        lines = 1
        for value, width in zip(values, widths, strict=True):
            wrapped: list[str] = self.pdf.multi_cell(  # type: ignore[assignment]
                width - 2 * _PADDING,
                _LINE_HEIGHT,
                self.text(value) or " ",
                dry_run=True,
                output="LINES",
            )
            lines = max(lines, len(wrapped))
        self.pdf.set_font(self.family, "", 10)
        return lines * _LINE_HEIGHT + 2 * _PADDING

    def block(self, title: str, fields: list[tuple[str, str]]) -> None:
        """A scene too tall for a table row, as labelled paragraphs that break across pages."""
        self.pdf.ln(2)
        self.pdf.set_font(self.family, "B", 10)
        self.pdf.multi_cell(0, 5, self.text(title), new_x="LMARGIN", new_y="NEXT")
        for label, value in fields:
            if value:
                self.pdf.set_font(self.family, "B", 9)
                self.pdf.multi_cell(0, 4.6, self.text(label), new_x="LMARGIN", new_y="NEXT")
                self.pdf.set_font(self.family, "", 9)
                self.pdf.multi_cell(0, 4.6, self.text(value), new_x="LMARGIN", new_y="NEXT")
        self.pdf.set_font(self.family, "", 10)
        self.pdf.ln(2)


def to_pdf(
    script: Script,
    *,
    product_name: str | None,
    brand_name: str | None,
    font: tuple[Path, Path | None] | Literal["auto"] | None = "auto",
) -> bytes:
    """The script as an A4 PDF for the production team.

    Args:
        font: a regular and an optional bold TTF; `"auto"` looks for DejaVu Sans, None uses
            the built-in latin-1 font with transliteration.
    """
    doc = script_document(script, product_name=product_name, brand_name=brand_name)
    content = doc.content
    setter = _Typesetter(find_unicode_font() if font == "auto" else font)
    pdf = setter.pdf
    pdf.footer_text = setter.text(f"{doc.title} — v{doc.version}")  # type: ignore[attr-defined]
    pdf.set_title(setter.text(doc.title))
    pdf.set_creator("reelflow")
    pdf.add_page()
    setter.heading(doc.title, size=18)
    setter.table(([label, value] for label, value in _facts(doc)), (45, 135), header=False)
    setter.heading("Hook")
    setter.paragraph(content.hook)
    setter.heading("Scenes")
    if content.scenes:
        with_original = any(scene.original for scene in content.scenes)
        header = ["#", "Time", "Direction", "Voiceover", "On-screen text"]
        widths: tuple[float, ...] = (7, 26, 59, 50, 38)
        if with_original:
            header.append("Original")
            widths = (7, 26, 45, 38, 30, 34)
        run: list[list[str]] = []
        for number, scene in enumerate(content.scenes, 1):
            row = [
                str(number),
                f"{clock(scene.start_s)}–{clock(scene.end_s)}",
                scene.direction,
                scene.voiceover or "",
                scene.on_screen_text or "",
            ]
            if with_original:
                row.append(scene.original or "")
            if setter.row_height(row, widths) <= _MAX_ROW_MM:
                run.append(row)
                continue
            if run:
                setter.table([header, *run], widths)
                run = []
            setter.block(f"Scene {row[0]}   {row[1]}", list(zip(header[2:], row[2:], strict=True)))
        if run:
            setter.table([header, *run], widths)
    else:
        setter.paragraph("No scenes yet.")
    setter.heading("Call to action")
    setter.paragraph(content.call_to_action or "—")
    if content.notes_for_production:
        setter.heading("Notes for production")
        setter.paragraph(content.notes_for_production)
    if doc.notes:
        setter.heading(f"Version {doc.version} notes")
        setter.paragraph(doc.notes)
    return bytes(pdf.output())
