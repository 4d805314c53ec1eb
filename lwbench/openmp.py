"""How torch's idle CPU threads wait: lwbench's default for the OpenMP runtime, set before torch loads it.

torch's CPU builds run their kernels on an OpenMP thread pool (GNU libgomp in the pip wheels;
``torch.__config__.parallel_info()`` names the backend). Between parallel regions libgomp's threads spin by
default, about 300,000 rounds (milliseconds) before they sleep. On an idle CPU that only burns a spare core,
but when other jobs hold the cores a spinning thread takes the time slice that the thread with the real work
needs: on a 2-core CPU with one busy process per core, the demo's UD-128 epoch (two threads) took 3.3 CPU
seconds instead of 1.0 idle, and up to 8 with other jobs' tests running too (``bench/busy_cpu.py``; README,
"Speed on a busy machine").

The default here: ``GOMP_SPINCOUNT=1000`` (libgomp spins about a thousand rounds, tens of microseconds, then
sleeps), which keeps the idle speed of spinning (sleeping at once made the idle demo 40% slower) and costs about
1.3x the idle CPU seconds under that load; and ``OMP_WAIT_POLICY=PASSIVE`` for other OpenMP runtimes (Intel's,
LLVM's: sleep at once), which do not read ``GOMP_SPINCOUNT`` (libgomp takes its spin count from
``GOMP_SPINCOUNT`` whatever the policy). This changes how threads wait, never how work is split among them, so
no trained number changes.

The runtime reads these variables once, when it is loaded (when torch is imported), so
:func:`apply_wait_policy_default` must run before that: the command line calls it first thing, and the worker
processes it starts (local joblib workers, a local dask cluster) inherit the environment. Any of them set by
the user wins and leaves all of them alone: ``OMP_WAIT_POLICY`` (``PASSIVE``: never spin, the least CPU under
load), ``GOMP_SPINCOUNT`` (``300000``: libgomp's own default back), ``KMP_BLOCKTIME``. This module imports
nothing heavy (no torch), so ``--help`` stays quick.
"""
from __future__ import annotations

import os
from collections.abc import MutableMapping

DEFAULTS = {"GOMP_SPINCOUNT": "1000", "OMP_WAIT_POLICY": "PASSIVE"}
USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")   # any one set: the user's choice


def apply_wait_policy_default(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set :data:`DEFAULTS` in ``environ`` (default: this process's, which the processes it starts inherit)
    unless the user set any of :data:`USER_SETTINGS`; returns what it set (empty: the user's settings stand).
    Where torch is already imported, this process's runtime keeps what it read at start; processes started
    from here still get the default."""
    environ = os.environ if environ is None else environ
    if any(name in environ for name in USER_SETTINGS):
        return {}
    environ.update(DEFAULTS)
    return dict(DEFAULTS)
