"""Make `pipeline` and `models` importable when a job runs from a checkout.

With `make setup` they are installed into .venv; on a cluster they ship with
`--py-files`. This fallback covers `spark-submit jobs/x.py` from a plain checkout.
"""

import os
import sys

_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _root not in sys.path:
    sys.path.insert(0, _root)
