"""Dask as the engine for extraction and the probe grid across processes or machines: an embedded LocalCluster
(worker processes on this machine, one thread each) by default, or an existing cluster named by
`--scheduler tcp://host:8786` or the `CPD_DASK_SCHEDULER` environment variable.

Stage: shared by every stage (extraction in representations, the probe grid in engine).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable

SCHEDULER_ENV = "CPD_DASK_SCHEDULER"


def scheduler_address(scheduler: str | None) -> str | None:
    """The scheduler given on the command line, else CPD_DASK_SCHEDULER, else None."""
    return scheduler or os.environ.get(SCHEDULER_ENV) or None


def active_client():
    """The Dask client this process works with (one opened by `dask_client`, or the user's own), else None.
    Extraction and the probe grid send their work to it."""
    if "distributed" not in sys.modules:  # never imports dask for a process that does not use it
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


@contextlib.contextmanager
def finished(client, futures):
    """The futures as they finish (dask's as_completed); if the caller stops while iterating (Ctrl-C, an error,
    Streamlit stopping a script), the futures not yet done are cancelled on the cluster."""
    from dask.distributed import as_completed

    try:
        yield as_completed(futures)
    except BaseException:
        client.cancel(list(futures))
        raise


@contextlib.contextmanager
def dask_client(workers: int = 2, scheduler: str | None = None, log: Callable[[str], None] | None = None):
    """A dask.distributed Client: connected to `scheduler` (or CPD_DASK_SCHEDULER) when given, else to a new
    LocalCluster of `workers` processes that is closed afterwards. The dashboard link is logged."""
    from dask.distributed import Client, LocalCluster

    address = scheduler or os.environ.get(SCHEDULER_ENV)
    if address:
        with Client(address) as client:
            if log is not None:
                log(f"Dask: connected to {address}; dashboard {client.dashboard_link}")
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            if log is not None:
                log(f"Dask: local cluster of {workers} worker processes; dashboard {client.dashboard_link}")
            yield client
