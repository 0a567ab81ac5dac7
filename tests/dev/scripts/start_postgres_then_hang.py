"""Start EmbeddedPostgres and wait forever (used to simulate a supervisor that crashes).

Usage: start_postgres_then_hang.py DATA_DIR PORT READY_FILE
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from reelflow.dev.stack import EmbeddedPostgres


def main() -> None:
    data_dir, port, ready = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    server = EmbeddedPostgres(data_dir, port, durable=False)
    server.start()
    assert server.process is not None
    ready.write_text(str(server.process.pid))
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
