"""Load test of the service under gunicorn with the decision log checked afterwards (the
harness lives in tests/support/load.py, shared with tests/test_load_gunicorn.py). Run:

    .venv/bin/python benchmarks/load.py --db sqlite --calls 5000 --clients 32 --workers 2 [--kill-worker] [--auth]
    .venv/bin/python benchmarks/load.py --db postgresql ...   # CRYO_TEST_PG_ADMIN_URL to change the server
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # not this folder: its http.py shadows the stdlib's

from tests.support.load import main

if __name__ == "__main__":
    raise SystemExit(main())
