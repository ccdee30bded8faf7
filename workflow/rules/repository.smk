# This checkout's bigstream_core, importable here and in every job, whatever environment runs them.
import os
import sys

REPO = os.path.abspath(os.path.join(workflow.basedir, ".."))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
