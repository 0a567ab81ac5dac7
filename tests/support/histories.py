"""Where the history recorders write: never over a history that open runs may still need."""

from __future__ import annotations

import argparse
from pathlib import Path


def recorder_tag(description: str | None) -> str | None:
    """The `--tag` of a recorder's command line: the change the new histories come from."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--tag",
        help="name of the change (e.g. vad-windows); new files are <scenario>@<tag>.json, "
        "next to the old ones",
    )
    return parser.parse_args().tag  # type: ignore[no-any-return]


def history_path(directory: Path, name: str, tag: str | None) -> Path:
    """`<name>.json`, or `<name>@<tag>.json`; refuses to replace an existing history.

    Raises:
        SystemExit: the file exists. Runs of the code that produced it may still be open,
            so it must keep replaying; record the new code under a tag instead.
    """
    path = directory / (f"{name}@{tag}.json" if tag else f"{name}.json")
    if path.exists():
        raise SystemExit(f"{path} exists; record the changed workflow with --tag <change>")
    return path
