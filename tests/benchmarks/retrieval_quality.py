"""Do search results and chat references land on the sentence that answers the question?

On the known-script speech set (`tests/support/speech_set.py`), every video is ingested
through the real pipeline (embedded Postgres, the Temporal dev server, the real worker pools
with the shipped Whisper model and local embedder), as `transcript_fidelity` does. Then the
real API app (the same settings, the offline chat answerer) is asked 40+ questions whose
answer sentence, and so its time, is known from the script:

* paraphrased questions: the sentence's subject and objects, but another verb and another
  way of saying when ("Which ferries did the frozen violin of Marseille colour ahead of the
  tempest?");
* exact questions: a number, a port, a year from the script ("What ran on port 6898?").

Questions are drawn from the scripts by a seeded generator, never picked by looking at the
results, and only where the words they use identify one sentence of the whole set (all six
videos are searched together, as a tenant's library would be).

Per video and overall it prints:

* hit@3 for `GET /v1/search` in `vector`, `text` and `hybrid` mode (k=3): a result of the
  right video whose match span (`match_start_s`-`match_end_s`, +-1 s for transcript timing)
  contains the answer sentence's midpoint. Vector-only is the baseline for hybrid;
* chunk hit@3, for reading the above: the same, but the result's whole chunk (30-60 s)
  holding the answer is enough. The gap between the two is the span's doing, not retrieval's;
* reference precision for `POST /v1/chat` (offline answerer): the answer's first reference is
  of the right video and starts at most 10 s before the answer sentence (and no more than
  1 s after its start, Whisper's timing slack). Also shown: the share of questions where any
  reference lands, and the share of all references that land (the offline answerer quotes up
  to three sentences sharing words with the question, so the others are usually neighbours
  of the answer, not wrong citations of it).

Targets (issue "Ingest loses no speech"): hybrid hit@3 >= 0.95 and >= vector-only; reference
precision >= 0.9.

    .venv/bin/python -m tests.benchmarks.retrieval_quality [--set-dir DIR] [--only a,b]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from api.app import create_app
from reelflow.chat.offline import OfflineAnswerer
from reelflow.core.db import create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from reelflow.core.temporal_client import connect_temporal
from reelflow.core.tenants import create_tenant
from reelflow.dev.samples import SpeechVideo, SpokenLine
from tests.benchmarks.common import (
    machine,
    report,
    throwaway_postgres,
    throwaway_temporal,
    verdict,
    write_json,
)
from tests.benchmarks.ingest_benchmark import (
    Stack,
    Variant,
    WhisperSpec,
    add_video,
    ingest,
    pipeline_settings,
    running_workers,
)
from tests.benchmarks.transcript_fidelity import _load_or_build
from tests.support.speech_set import SPEECH_SET, SpeechCase

MODES = ("vector", "text", "hybrid")
K = 3
SPAN_SLACK_S = 1.0
"""Whisper's segment times are off by up to about a second against the script's."""
REFERENCE_BEFORE_S = 10.0
REFERENCE_AFTER_S = 1.0
QUESTIONS_PER_VIDEO = 8
SEED = 20261129

# --- questions from the scripts ----------------------------------------------------------

_PLAIN = re.compile(
    r"^The (?P<adj>\w+) (?P<noun>\w+) from (?P<place>.+?) (?P<verb>\w+) (?P<count>\d+) "
    r"(?P<things>\w+) before (?P<when>.+)\.$"
)
_TECH = re.compile(
    r"^In (?P<year>\d{4}), (?P<tech>.+?) handled (?P<rate>\d+) requests per second on port "
    r"(?P<port>\d+) with version (?P<major>\d+) point (?P<minor>\d+)\.$"
)
_OTHER_VERB = {
    "carried": "transport",
    "painted": "colour",
    "repaired": "fix",
    "counted": "tally",
    "delivered": "bring",
    "measured": "gauge",
    "collected": "gather",
    "borrowed": "take on loan",
    "described": "portray",
    "protected": "guard",
}
_OTHER_WHEN = {
    "dawn": "sunrise",
    "noon": "midday",
    "midnight": "the middle of the night",
    "the storm": "the tempest",
    "the winter": "the cold season",
}


@dataclass(frozen=True)
class Question:
    """A question, the video and sentence that answer it, and what kind of question it is."""

    video: str
    text: str
    kind: str  # "paraphrased" or "exact"
    answer: SpokenLine

    @property
    def answer_time_s(self) -> float:
        return (self.answer.start_s + self.answer.end_s) / 2


def _plural(word: str) -> str:
    """The script appends "s" to every noun ("ferrys", "compasss"); a person would not."""
    if word.endswith("ys"):
        return word[:-2] + "ies"
    if word.endswith("sss"):
        return word[:-1] + "es"
    return word


def _unique(
    key: Callable[[str], tuple[str, ...] | None], line: SpokenLine, everything: Sequence[str]
) -> bool:
    """Only this sentence of the whole set has what the question names."""
    own = key(line.text)
    return own is not None and sum(key(text) == own for text in everything) == 1


def _plain_key_full(text: str) -> tuple[str, ...] | None:
    m = _PLAIN.match(text)
    return None if m is None else (m["adj"], m["noun"], m["place"], m["things"])


def _plain_key_subject(text: str) -> tuple[str, ...] | None:
    m = _PLAIN.match(text)
    return None if m is None else (m["adj"], m["noun"], m["things"])


def _plain_key_count(text: str) -> tuple[str, ...] | None:
    m = _PLAIN.match(text)
    return None if m is None else (m["count"], m["things"])


def _tech_key(field_name: str) -> Callable[[str], tuple[str, ...] | None]:
    def key(text: str) -> tuple[str, ...] | None:
        m = _TECH.match(text)
        return None if m is None else (m[field_name],)

    return key


def _tech_key_year_tech(text: str) -> tuple[str, ...] | None:
    m = _TECH.match(text)
    return None if m is None else (m["year"], m["tech"])


def _plain_questions(line: SpokenLine) -> dict[str, tuple[str, str]]:
    m = _PLAIN.match(line.text)
    assert m is not None
    things = _plural(m["things"])
    verb = _OTHER_VERB[m["verb"]]
    when = _OTHER_WHEN[m["when"]]
    return {
        "full": (
            "paraphrased",
            f"Which {things} did the {m['adj']} {m['noun']} of {m['place']} {verb} "
            f"ahead of {when}?",
        ),
        "subject": (
            "paraphrased",
            f"Where does the {m['adj']} {m['noun']} that would {verb} {things} come from?",
        ),
        "count": ("exact", f"Who {m['verb']} exactly {m['count']} {things}?"),
    }


def _tech_questions(line: SpokenLine) -> dict[str, tuple[str, str]]:
    m = _TECH.match(line.text)
    assert m is not None
    return {
        "port": ("exact", f"What was listening on port {m['port']}?"),
        "rate": ("exact", f"Which component served {m['rate']} requests each second?"),
        "year": (
            "paraphrased",
            f"How busy was {m['tech']} back in {m['year']}, and which release was it?",
        ),
    }


def make_questions(cases: Sequence[tuple[SpeechCase, SpeechVideo]]) -> list[Question]:
    """About :data:`QUESTIONS_PER_VIDEO` per video, spread over its length, seeded."""
    everything = [line.text for _, video in cases for line in video.spoken]
    rng = random.Random(SEED)
    questions: list[Question] = []
    for case, video in cases:
        technical = bool(video.spoken) and _TECH.match(video.spoken[0].text) is not None
        plan: list[tuple[str, Callable[[str], tuple[str, ...] | None]]]
        if technical:
            plan = [("port", _tech_key("port")), ("rate", _tech_key("rate"))] * 3 + [
                ("year", _tech_key_year_tech)
            ] * 2
        else:
            plan = [("full", _plain_key_full)] * 3
            plan += [("subject", _plain_key_subject)] * 2
            plan += [("count", _plain_key_count)] * 3
        rng.shuffle(plan)
        spoken = list(video.spoken)
        bins = len(plan)
        for index, (form, key) in enumerate(plan):
            # One question from each stretch of the video, so answers are spread over it.
            stretch = spoken[index * len(spoken) // bins : (index + 1) * len(spoken) // bins]
            eligible = [line for line in stretch if _unique(key, line, everything)]
            if not eligible:
                continue
            line = rng.choice(eligible)
            forms = _tech_questions(line) if technical else _plain_questions(line)
            kind, text = forms[form]
            questions.append(Question(case.name, text, kind, line))
    return questions


# --- asking -------------------------------------------------------------------------------


@dataclass
class Outcome:
    question: Question
    hits: dict[str, int | None] = field(default_factory=dict)
    """Per mode, the rank (1..K) of the first result that lands, or None."""
    chunk_hits: dict[str, bool] = field(default_factory=dict)
    """Per mode, whether a top-K result's whole chunk holds the answer (span or not)."""
    seen: dict[str, str] = field(default_factory=dict)
    """Per mode (and ``chat``), where the first result pointed: for reading misses."""
    first_reference_lands: bool = False
    any_reference_lands: bool = False
    references: int = 0
    references_landing: int = 0
    answer_s: float = 0.0


def lands_in_span(result: dict[str, Any], video_id: str, question: Question) -> bool:
    return bool(
        result["video_id"] == video_id
        and result["match_start_s"] - SPAN_SLACK_S
        <= question.answer_time_s
        <= result["match_end_s"] + SPAN_SLACK_S
    )


def reference_lands(reference: dict[str, Any], video_id: str, question: Question) -> bool:
    start = question.answer.start_s
    return bool(
        reference["video_id"] == video_id
        and start - REFERENCE_BEFORE_S <= reference["start_s"] <= start + REFERENCE_AFTER_S
    )


async def ask(
    api: httpx.AsyncClient, headers: dict[str, str], video_ids: dict[str, str], q: Question
) -> Outcome:
    outcome = Outcome(q)
    video_id = video_ids[q.video]
    for mode in MODES:
        response = await api.get(
            "/v1/search", params={"q": q.text, "k": K, "mode": mode}, headers=headers
        )
        response.raise_for_status()
        results = response.json()["results"]
        outcome.hits[mode] = next(
            (rank for rank, r in enumerate(results, 1) if lands_in_span(r, video_id, q)), None
        )
        outcome.chunk_hits[mode] = any(
            r["video_id"] == video_id
            and r["start_s"] - SPAN_SLACK_S <= q.answer_time_s <= r["end_s"] + SPAN_SLACK_S
            for r in results
        )
        outcome.seen[mode] = _where(results[0], video_id) if results else "nothing"
    started = time.perf_counter()
    response = await api.post("/v1/chat", json={"message": q.text}, headers=headers)
    outcome.answer_s = time.perf_counter() - started
    response.raise_for_status()
    references = response.json()["references"]
    landing = [reference_lands(r, video_id, q) for r in references]
    outcome.references = len(references)
    outcome.references_landing = sum(landing)
    outcome.first_reference_lands = bool(landing) and landing[0]
    outcome.any_reference_lands = any(landing)
    outcome.seen["chat"] = _where(references[0], video_id) if references else "nothing"
    return outcome


def _where(found: dict[str, Any], video_id: str) -> str:
    start = found.get("match_start_s", found["start_s"])
    end = found.get("match_end_s", found["end_s"])
    video = "" if found["video_id"] == video_id else "another video "
    return f"{video}{start:.0f}-{end:.0f}s {' '.join(found['text'].split()[:14])!r}"


async def run(
    cases: list[tuple[SpeechCase, SpeechVideo]],
    questions: list[Question],
    database_url: str,
    temporal_target: str,
    home: Path,
) -> list[Outcome]:
    client = await connect_temporal(Settings(temporal_address=temporal_target))
    engine = create_engine(database_url, pool_size=4)
    try:
        sessions = session_factory(engine)
        async with sessions.begin() as session:
            tenant = await create_tenant(session, name="retrieval")
        stack = Stack(database_url, client, sessions, str(tenant.tenant_id), home)
        defaults = Settings(environment="test")
        settings = pipeline_settings(
            stack,
            Variant(defaults.transcribe_segment_s, defaults.media_concurrency, WhisperSpec(0, 0)),
        ).model_copy(update={"rate_limits_enabled": False})
        video_ids: dict[str, str] = {}
        async with running_workers(stack, settings, WhisperSpec(0, 0)) as deps:
            for case, video in cases:
                video_id = await add_video(stack, settings, video.path, case.name)
                wall, _, chunk_count = await ingest(stack, settings, video_id)
                video_ids[case.name] = video_id
                report(f"  ingested {case.name}: {wall:.1f} s, {chunk_count} chunks")
            app: FastAPI = create_app(
                settings,
                engine=engine,
                temporal=client,
                storage=LocalStorage(home / "media"),
                embedder=deps.embedder,
                answerer=OfflineAnswerer(),
            )
            headers = {"Authorization": f"Bearer {tenant.api_key}"}
            outcomes: list[Outcome] = []
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://bench", timeout=120
                ) as api:
                    for q in questions:
                        outcomes.append(await ask(api, headers, video_ids, q))
        return outcomes
    finally:
        await engine.dispose()


# --- report -------------------------------------------------------------------------------


@dataclass
class Tally:
    questions: int = 0
    hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODES, 0))
    chunk_hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODES, 0))
    first_reference: int = 0
    any_reference: int = 0
    references: int = 0
    references_landing: int = 0

    def add(self, outcome: Outcome) -> None:
        self.questions += 1
        for mode in MODES:
            self.hits[mode] += outcome.hits[mode] is not None
            self.chunk_hits[mode] += outcome.chunk_hits[mode]
        self.first_reference += outcome.first_reference_lands
        self.any_reference += outcome.any_reference_lands
        self.references += outcome.references
        self.references_landing += outcome.references_landing

    def share(self, count: int) -> float:
        return count / max(1, self.questions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "questions": self.questions,
            **{f"hit3_{mode}": self.share(self.hits[mode]) for mode in MODES},
            **{f"chunk_hit3_{mode}": self.share(self.chunk_hits[mode]) for mode in MODES},
            "reference_precision": self.share(self.first_reference),
            "any_reference": self.share(self.any_reference),
            "references_landing": self.references_landing / max(1, self.references),
        }


def _line(label: str, tally: Tally) -> str:
    d = tally.as_dict()
    return (
        f"{label:<16}{tally.questions:>4}   {d['hit3_vector']:.3f}  {d['hit3_text']:.3f}"
        f"  {d['hit3_hybrid']:.3f}      {d['reference_precision']:.3f}   {d['any_reference']:.3f}"
        f"   {d['references_landing']:.3f}"
        f"    {d['chunk_hit3_vector']:.3f}  {d['chunk_hit3_text']:.3f}"
        f"  {d['chunk_hit3_hybrid']:.3f}"
    )


def print_report(outcomes: list[Outcome]) -> dict[str, Any]:
    by_video: dict[str, Tally] = {}
    by_kind: dict[str, Tally] = {}
    overall = Tally()
    for outcome in outcomes:
        by_video.setdefault(outcome.question.video, Tally()).add(outcome)
        by_kind.setdefault(outcome.question.kind, Tally()).add(outcome)
        overall.add(outcome)
    report("")
    report("misses (hybrid, or first reference):")
    for o in outcomes:
        if o.hits["hybrid"] is None or not o.first_reference_lands:
            q = o.question
            ranks = " ".join(f"{m}={o.hits[m] or '-'}" for m in MODES)
            report(
                f"  [{q.video} {q.answer.start_s:.0f}s] {q.text}  ({ranks};"
                f" first ref {'ok' if o.first_reference_lands else 'off'})"
            )
            report(f"      said {q.answer.start_s:.0f}-{q.answer.end_s:.0f}s: {q.answer.text!r}")
            for where in ("hybrid", "chat"):
                report(f"      {where} first: {o.seen.get(where, 'nothing')}")
    report("")
    report(
        "                   n   hit@3: vector  text  hybrid   ref precision  any ref  all refs"
        "    chunk hit@3: vector  text  hybrid"
    )
    for name, tally in by_video.items():
        report(_line(name, tally))
    for name, tally in by_kind.items():
        report(_line(f"({name})", tally))
    report(_line("overall", overall))
    d = overall.as_dict()
    hybrid_ok = d["hit3_hybrid"] >= 0.95 and d["hit3_hybrid"] >= d["hit3_vector"]
    report(
        f"hybrid hit@3 {d['hit3_hybrid']:.3f} vs vector-only baseline {d['hit3_vector']:.3f}"
        f" (target >= 0.95 and >= vector): {verdict(hybrid_ok)}"
    )
    report(
        f"reference precision {d['reference_precision']:.3f} (target >= 0.9):"
        f" {verdict(d['reference_precision'] >= 0.9)}"
    )
    return {
        "overall": d,
        "videos": {name: t.as_dict() for name, t in by_video.items()},
        "kinds": {name: t.as_dict() for name, t in by_kind.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", help="comma-separated case names")
    parser.add_argument("--set-dir", type=Path, help="where to keep the rendered set (reused)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    report(machine().line())
    chosen = [c for c in SPEECH_SET if not args.only or c.name in args.only.split(",")]
    root = Path(tempfile.mkdtemp(prefix="reelflow-bench-retrieval-"))
    set_dir = args.set_dir or root / "set"
    set_dir.mkdir(parents=True, exist_ok=True)
    try:
        cases = []
        for case in chosen:
            video = _load_or_build(case, set_dir)
            report(f"{case.name}: {video.duration_s / 60:.1f} min, {len(video.spoken)} sentences")
            cases.append((case, video))
        questions = make_questions(cases)
        kinds = {k: sum(q.kind == k for q in questions) for k in ("paraphrased", "exact")}
        report(
            f"{len(questions)} questions ({kinds['paraphrased']} paraphrased, "
            f"{kinds['exact']} exact)"
        )
        with throwaway_postgres("reelflow_retrieval") as postgres, throwaway_temporal() as tmp:
            upgrade_database(postgres.url)
            outcomes = asyncio.run(run(cases, questions, postgres.url, tmp.target, root / "home"))
        summary = print_report(outcomes)
        write_json(
            args.json,
            {"benchmark": "retrieval_quality", "machine": machine().as_dict(), **summary},
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
