"""Dask as the engine for extraction across processes or machines: an embedded LocalCluster (worker processes on
this machine, one thread each) by default, or an existing cluster named by `--scheduler tcp://host:8786` or the
`CPD_DASK_SCHEDULER` environment variable.

Stage: representations (stage 3 of 5).
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable

SCHEDULER_ENV = "CPD_DASK_SCHEDULER"


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
