"""Dashboard layer: cached calls into cpd_core, with visible progress and plain messages instead of tracebacks.

Pages ask here for structures, representations and result tables; nothing here draws a chart or reads the sidebar
(the Selection is passed in).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd
import streamlit as st

from cpd_core.errors import CPDInputError
from cpd_core.study import analysis
from dashboard.uploads import upload_path

if TYPE_CHECKING:
    from dashboard.sidebar import Selection

log = logging.getLogger("cpd_explorer.app")

MEMO_ENTRIES = 96
CLUSTER_WORKERS = 2  # worker processes of the dashboard's embedded Dask cluster (CPD_DASK_WORKERS overrides)


# ============================================================================================ cached loading
@st.cache_data(ttl=300, show_spinner=False)
def dataset_infos() -> list[dict]:
    from dataclasses import asdict

    from cpd_core.data import list_datasets

    return [asdict(i) for i in list_datasets()]


@st.cache_data(ttl=300, show_spinner=False)
def models_frame() -> pd.DataFrame:
    return analysis.model_table()


@st.cache_resource(show_spinner="Loading structures (QM9 is parsed once, ~10 s, then cached on disk)…",
                   max_entries=16)
def load_structures(dataset: str, n: int | None, seed: int):
    from cpd_core.data import load_dataset

    if dataset.startswith("upload:"):
        path = upload_path(dataset)
        if path is None:
            raise CPDInputError(f"The uploaded file '{dataset[7:]}' is no longer on this server; upload it again.")
        dataset = str(path)
    return load_dataset(dataset, n=n, seed=seed)


@st.cache_resource(show_spinner=False, max_entries=16)
def supported_subset(dataset: str, n: int | None, seed: int, models: tuple[str, ...]):
    """(the structures every model supports, how many were left out)."""
    return analysis.supported_subset(load_structures(dataset, n, seed), models)


_FINGERPRINTS: dict[int, tuple] = {}


def fingerprint(structures) -> str:
    """structures.fingerprint(), remembered per (cached, never mutated) StructureSet object."""
    entry = _FINGERPRINTS.get(id(structures))
    if entry is not None and entry[0]() is structures:
        return entry[1]
    value = structures.fingerprint()
    _FINGERPRINTS[id(structures)] = (weakref.ref(structures, lambda _r, k=id(structures): _FINGERPRINTS.pop(k, None)),
                                     value)
    return value


# ============================================================================================ work with progress
class _Memo:
    """Results computed with visible progress, shared by all sessions of this server (LRU)."""

    def __init__(self) -> None:
        self.data: OrderedDict = OrderedDict()
        self.lock = threading.Lock()


@st.cache_resource(show_spinner=False)
def _memo() -> _Memo:
    return _Memo()


def clear_memo() -> None:
    memo = _memo()
    with memo.lock:
        memo.data.clear()


def compute(key: tuple, label: str, fn: Callable[[Callable[[str, int, int], None]], Any]) -> Any:
    """fn(progress) once per key (cached in memory), inside st.status with a progress bar on a miss."""
    memo = _memo()
    with memo.lock:
        if key in memo.data:
            memo.data.move_to_end(key)
            return memo.data[key]
    slot = st.empty()
    with slot.status(label, expanded=True) as status:
        bar = st.progress(0.0, text="starting…")

        def progress(message: str, done: int, total: int) -> None:
            bar.progress(min(max(done / max(total, 1), 0.0), 1.0), text=f"{message}: {done:,} / {total:,}")

        try:
            value = fn(progress)
        except Exception:
            status.update(label=f"{label}: failed", state="error", expanded=False)
            raise
    slot.empty()  # done: a cached and a fresh page look the same
    with memo.lock:
        memo.data[key] = value
        while len(memo.data) > MEMO_ENTRIES:
            memo.data.popitem(last=False)
    return value


# ============================================================================================ guards
@contextlib.contextmanager
def guard(what: str = "This page"):
    """Show CPDInputError as a plain message and anything unexpected as a short error (never a traceback)."""
    try:
        yield
    except CPDInputError as exc:
        st.error(str(exc))
        st.stop()
    except Exception as exc:  # noqa: BLE001 - the app must not show tracebacks
        log.exception("%s failed", what)
        st.error(f"{what} failed: {type(exc).__name__}: {exc}. Details are in the server log.")
        st.stop()


def structures_or_stop(sel: Selection, minimum: int = 10, need_target: bool = False):
    """The selected structures; stops the page with a message when there are too few, or (need_target) when the
    dataset has no numeric property to use as a target."""
    with guard("Loading the structures"):
        s = sel.structures()
    removed = sel.removed()
    if removed:
        st.info(f"{removed:,} structures with elements some selected model does not support were left out.")
    if len(s) < minimum:
        st.error(f"Too little data: {len(s)} structures, this page needs at least {minimum}. "
                 "Increase 'Structures' in the sidebar or use a larger file.")
        st.stop()
    if need_target and sel.target is None:
        st.error("This dataset has no numeric property to use as a target.")
        st.stop()
    return s


# ============================================================================================ representations
class _Held:
    """A holder: st.cache_resource refuses to cache awaitable objects such as a Dask Client."""

    def __init__(self, value) -> None:
        self.value = value


@st.cache_resource(show_spinner=False)
def _extraction_client() -> _Held:
    """The Dask client the dashboard sends extraction to, started on first need and shared by all sessions: the
    cluster at CPD_DASK_SCHEDULER when set, else an embedded LocalCluster of worker processes. Not the process's
    default client: a script run uses it only inside `client.as_current()`."""
    import os

    from dask.distributed import Client, LocalCluster

    from cpd_core.cluster import scheduler_address

    address = scheduler_address(None)
    if address:
        client = Client(address, set_as_default=False)
    else:
        workers = int(os.environ.get("CPD_DASK_WORKERS", CLUSTER_WORKERS))
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
        client = Client(cluster, set_as_default=False)
    log.info("Dask for extraction: %s (dashboard %s)", address or "local cluster", client.dashboard_link)
    return _Held(client)


def extraction_client():
    return _extraction_client().value


def forget_extraction_client() -> None:
    """Start a new client on next need (e.g. after CPD_DASK_SCHEDULER changed)."""
    _extraction_client.clear()


def compute_representations(model_id: str, structures, progress) -> None:
    """The model's representations of `structures` into the cache, on the dashboard's Dask cluster: the script
    thread only waits for finished chunks, and a page that is left (Streamlit stops the script at its next
    progress update) cancels the chunks not yet computed; the saved ones stay for the next visit."""
    from cpd_core.representations.cache import cached_invariants

    try:
        client = extraction_client()
    except Exception as exc:  # noqa: BLE001 - no cluster (e.g. processes cannot be spawned): compute here
        log.warning("No Dask cluster for extraction (%s: %s); computing in the app's process.", type(exc).__name__, exc)
        cached_invariants(model_id, structures, progress=progress)
        return
    st.caption(f"On Dask workers; the cluster's dashboard: {client.dashboard_link}")
    with client.as_current():
        cached_invariants(model_id, structures, progress=progress)


def ready_models(sel: Selection, structures, models=None) -> list[str]:
    """The models whose representations are available, computing missing ones with progress.

    Models that cannot run on these structures get a clear st.error and are left out.
    """
    from cpd_core.representations.cache import is_cached

    models = list(sel.models if models is None else models)
    if not models:
        st.warning("Choose at least one model in the sidebar.")
        st.stop()
    ok = []
    bad = analysis.unsupported_elements(structures, models)
    for m in models:
        if m in bad:
            shown = ", ".join(bad[m][:12]) + (f" and {len(bad[m]) - 12} more" if len(bad[m]) > 12 else "")
            st.error(f"{m} does not support element(s) {shown} found in these structures. Tick 'Only structures "
                     "every selected model supports' under 'More settings', deselect it, or pick a model that covers "
                     "these elements (see 'Data and models').")
            continue
        if is_cached(m, structures):
            ok.append(m)
            continue
        try:
            slot = st.empty()
            with slot.status(f"Computing {m} representations of {len(structures):,} structures…",
                             expanded=True):
                st.caption("Saved to the disk cache in chunks: if you leave, the work resumes where it stopped.")
                bar = st.progress(0.0)

                def progress(done, total, bar=bar):
                    bar.progress(min(done / max(total, 1), 1.0), text=f"{done:,} / {total:,} structures")

                compute_representations(m, structures, progress)
            slot.empty()
            st.toast(f"{m}: representations computed and cached.", icon=":material/check:")
            ok.append(m)
        except CPDInputError as exc:
            slot.empty()
            st.error(f"{m}: {exc}")
        except Exception as exc:  # noqa: BLE001
            slot.empty()
            log.exception("computing %s failed", m)
            st.error(f"{m} could not be computed here ({type(exc).__name__}: {exc}). It may need weights that "
                     "are not available offline.")
    if not ok:
        st.stop()
    return ok


def features(sel: Selection, structures, models, combined: bool = True) -> dict:
    key = ("features", fingerprint(structures), tuple(models), sel.pooling, sel.invariant, combined)
    return compute(key, "Loading representations", lambda p: analysis.feature_sets(
        structures, models, sel.pooling, sel.invariant, p, combined=combined))
