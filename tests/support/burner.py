"""``python -m tests.support.burner -- COMMAND…``: run COMMAND while one core is kept busy (a
noisy neighbour, for ``make test-stress``). The burner is a child process that spins; it is
stopped by its pid when COMMAND ends, whatever its outcome, and COMMAND's exit code is ours."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys


def _spin() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    n = 0
    while True:
        n = (n * 1103515245 + 12345) & 0x7FFFFFFF


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    burner = multiprocessing.Process(target=_spin, name="burner", daemon=True)
    burner.start()
    print(f"burner: pid {burner.pid} keeps one core busy", file=sys.stderr, flush=True)
    try:
        return subprocess.call(argv)
    finally:
        if burner.pid is not None:
            os.kill(burner.pid, signal.SIGTERM)
        burner.join(5)
        print("burner: stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
