"""SeqIO tasks, preprocessors and metrics for the GQA paper's datasets (no model imports).

`import tasks` registers every task and the fine-tuning mixture with the default
vocabulary and data directories; nothing is read until a dataset is requested.
Call `tasks.register_tasks(...)` to point them at another vocabulary or data directory.
On a machine without TensorFlow or SeqIO (the GPU image) nothing is registered, and
`tasks.realtext` and `tasks.metrics` still import.
"""

import importlib as _importlib
import importlib.util as _util
import sys as _sys

if _util.find_spec("seqio") is not None and _util.find_spec("tensorflow") is not None:
    if "tasks._registered" in _sys.modules:  # importlib.reload(tasks) registers again
        _importlib.reload(_sys.modules["tasks._registered"])
    from tasks._registered import *  # noqa: F403
    from tasks._registered import __all__  # noqa: F401
