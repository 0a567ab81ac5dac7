"""Run a ProcessGroup of two long-running children until signalled (used by test_processes).

Usage: supervise_sleepers.py LOG_DIR STATE_DIR

Each child appends its name to STATE_DIR/stopped when it receives SIGTERM, so the test can
check the stop order; the children's pids go to STATE_DIR/pids once both are running.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from reelflow.dev.stack import ChildExitedError, ProcessGroup

CHILD = """
import signal, sys, time
from pathlib import Path

def on_term(signum, frame):
    with Path(sys.argv[2]).open("a") as fh:
        fh.write(sys.argv[1] + "\\n")
    sys.exit(0)

signal.signal(signal.SIGTERM, on_term)
print(sys.argv[1], "running", flush=True)
while True:
    time.sleep(1)
"""


def main() -> int:
    logging.basicConfig(level=logging.INFO)
    log_dir, state_dir = Path(sys.argv[1]), Path(sys.argv[2])
    group = ProcessGroup(log_dir)
    stopped = str(state_dir / "stopped")
    pids = [
        group.spawn(name, [sys.executable, "-c", CHILD, name, stopped]).pid
        for name in ("first", "second")
    ]
    (state_dir / "pids.tmp").write_text(" ".join(str(p) for p in pids))
    # Rename so the test never reads a half-written file.
    (state_dir / "pids.tmp").rename(state_dir / "pids")
    try:
        group.supervise(poll_interval=0.05)
    except ChildExitedError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
