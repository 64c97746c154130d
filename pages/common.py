"""Shared pieces of the dashboard: sidebar state (session + URL), cached loading, progress, charts, downloads.

Not a page itself (app.py lists the pages with st.navigation). Nothing here computes science: results come from
`cpd_core.analysis`; this module only caches, shows progress and draws.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import re
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import streamlit as st

from cpd_core import analysis
from cpd_core.errors import CPDInputError

log = logging.getLogger("cpd_explorer.app")

DEFAULT_N = 1000
DEFAULT_MODELS = ("ani2x-aev",)
PROBES = ("ridge", "mlp", "gbt")
PROBE_LABELS = {"ridge": "Ridge (linear)", "mlp": "MLP (neural net)", "gbt": "Gradient-boosted trees"}
CRITERION_LABELS = {"kfold": "Nested K-fold CV (default)", "loo": "Exact leave-one-out",
                    "gcv": "Generalised CV (fast; fragile with outliers)"}
FAMILY_COLORS = {
    "tensor-product equivariant": "#1f77b4",
    "vector-scalar equivariant": "#9467bd",
    "learned invariant": "#2ca02c",
    "handcrafted descriptor": "#ff7f0e",
}
PROBE_COLORS = {PROBE_LABELS["ridge"]: "#1f77b4", PROBE_LABELS["mlp"]: "#ff7f0e", PROBE_LABELS["gbt"]: "#2ca02c"}
UPLOAD_SUFFIXES = (".extxyz", ".xyz", ".cif", ".db", ".vasp", ".poscar")
UPLOAD_NAMES = ("poscar", "contcar")
COMPRESSED = (".gz", ".bz2", ".xz")
MEMO_ENTRIES = 96
APP_FILE = Path(__file__).resolve().parent.parent / "app.py"
# True while app.py runs this script run (it renders the sidebar, then the page through st.navigation)
IN_APP: contextvars.ContextVar[bool] = contextvars.ContextVar("cpd_in_app", default=False)


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
def _supported(dataset: str, n: int | None, seed: int, models: tuple[str, ...]):
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


# ============================================================================================ state + URL
_ENCODERS = {
    list: lambda v: ",".join(map(str, v)),
    bool: lambda v: "1" if v else "0",
}


def _encode(value) -> str:
    for kind, enc in _ENCODERS.items():
        if isinstance(value, kind) or (kind is list and isinstance(value, tuple)):
            return enc(value)
    return str(value)


def _decode(raw: str, default):
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, (list, tuple)):
        return [v for v in raw.split(",") if v]
    return raw


def _rendered() -> dict:
    """Keys shown in this run -> (value, default); written to the URL at the end of the run."""
    run = st.session_state.setdefault("_rendered", {})
    return run


def begin_run() -> None:
    st.session_state["_rendered"] = {}
    if "_url_params" not in st.session_state:  # the link this session was opened with
        st.session_state["_url_params"] = st.query_params.to_dict()
    pending = st.session_state.pop("_pending", None)
    if pending:
        for key, value in pending.items():
            st.session_state[key] = value
            st.session_state[f"_v_{key}"] = value


def initial(key: str, default):
    """The value a widget starts from: this session's last value, else the URL (now, or as the session was
    opened, for widgets of pages not visited yet), else the default."""
    if key in st.session_state:
        return st.session_state[key]
    if f"_v_{key}" in st.session_state:
        return st.session_state[f"_v_{key}"]
    for params in (st.query_params, st.session_state.get("_url_params", {})):
        if key in params:
            try:
                return _decode(params[key], default)
            except (TypeError, ValueError):
                return default
    return default


def widget(kind: str, label: str, key: str, default, options=None, container=None, **kwargs):
    """A widget whose value persists across pages (session) and is mirrored in the URL query string.

    kind: 'selectbox', 'multiselect', 'radio', 'number_input', 'checkbox', 'toggle', 'segmented_control'.
    Values from the URL that are not valid options fall back to the default.
    """
    container = container or st
    value = initial(key, default)
    if options is not None:
        options = list(options)
        if kind == "multiselect":
            value = [v for v in (value or []) if v in options]
        elif value not in options:
            value = default if default in options else (options[0] if options else None)
    if kind == "number_input":
        lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
        try:
            value = type(default)(value)
        except (TypeError, ValueError):
            value = default
        if lo is not None and value < lo:
            value = lo
        if hi is not None and value > hi:
            value = hi
    st.session_state[key] = value
    fn = getattr(container, kind)
    if options is not None:
        result = fn(label, options, key=key, **kwargs)
    else:
        result = fn(label, key=key, **kwargs)
    st.session_state[f"_v_{key}"] = result
    _rendered()[key] = (result, default)
    return result


def sync_query_params() -> None:
    """Write this run's widget values that differ from their defaults to the URL (a shared link reopens them)."""
    rendered = st.session_state.get("_rendered", {})
    params = {}
    for key, (value, default) in rendered.items():
        if value is None:
            continue
        same = list(value) == list(default) if isinstance(value, (list, tuple)) else value == default
        if not same:
            params[key] = _encode(value)
    st.query_params.from_dict(params)  # always: after a page switch the browser's URL has none


# ============================================================================================ sidebar
@dataclass(frozen=True)
class Selection:
    dataset: str
    n: int
    seed: int
    models: tuple[str, ...]
    target: str | None
    probe: str
    pooling: str
    invariant: str
    composition: str
    folds: int
    supported: bool
    criterion: str = "kfold"

    def structures(self):
        if self.supported and self.models:
            return _supported(self.dataset, self.n, self.seed, self.models)[0]
        return load_structures(self.dataset, self.n, self.seed)

    def removed(self) -> int:
        if self.supported and self.models:
            return _supported(self.dataset, self.n, self.seed, self.models)[1]
        return 0

    def key(self, *extra) -> tuple:
        return (fingerprint(self.structures()), self.composition, self.folds, self.seed, self.pooling,
                self.invariant, self.criterion) + extra

    def engine_kwargs(self) -> dict:
        return dict(pooling=self.pooling, invariant=self.invariant, folds=self.folds, seed=self.seed,
                    composition=self.composition, criterion=self.criterion)


def _dataset_label(name: str) -> str:
    if name == "qm9":
        return "QM9 molecules"
    if name == "mp":
        return "Materials Project crystals"
    if name.startswith("upload:"):
        return f"Your file: {name.split('/', 1)[-1]}"
    return name


def _model_label(model: str) -> str:
    frame = models_frame().set_index("model")
    if model not in frame.index:
        return model
    row = frame.loc[model]
    tags = []
    if not row["trained"]:
        tags.append("untrained")
    if not row["offline"]:
        tags.append("needs download")
    return model + (f" ({', '.join(tags)})" if tags else "")


def sidebar() -> Selection:
    """The choices shared by every page. Returns the current Selection (also in st.session_state)."""
    begin_run()
    sb = st.sidebar
    sb.markdown("### CPD Explorer")
    datasets = [d["name"] for d in dataset_infos() if d["available"]]
    uploads = list(st.session_state.get("uploads", []))
    from_url = st.query_params.get("dataset", "")
    if from_url.startswith("upload:") and upload_path(from_url) is not None and from_url not in uploads:
        uploads.append(from_url)
    dataset = widget("selectbox", "Dataset", "dataset", "qm9", datasets + uploads, sb, format_func=_dataset_label,
                     help="Built-in datasets and files you uploaded on the 'Data and models' page.")
    n = widget("number_input", "Structures (random subset)", "n", DEFAULT_N, None, sb, min_value=10,
               max_value=200_000, step=100,
               help="A reproducible random subset (seed below). Larger is slower the first time; results are cached.")
    seed = widget("number_input", "Seed (subset, folds, probes)", "seed", 0, None, sb, min_value=0, max_value=10_000)
    frame = models_frame()
    model_options = frame["model"].tolist()
    models = widget("multiselect", "Models", "models", list(DEFAULT_MODELS), model_options, sb,
                    format_func=_model_label,
                    help="ani2x-aev is instant; the others are computed on first use with a progress bar and "
                         "cached on disk (resumable if you leave).")
    targets: list[str] = []
    structures = None
    try:
        structures = load_structures(dataset, n, seed)
        targets = list(structures.targets)
    except CPDInputError as exc:
        sb.error(str(exc))
    if structures is not None and sb.button(
            "Add every offline model", key="add_all_models", icon=":material/playlist_add:",
            help="Selects every trained model that runs here without a download and suits these structures, and "
                 "keeps only structures all of them support. Each is computed once (minutes for the larger "
                 "ones), with progress, and cached."):
        kind = "crystals" if structures.periodic.any() else "molecules"
        usable = frame[frame["offline"] & frame["trained"] & frame["input"].isin(["any", kind])]["model"].tolist()
        st.session_state["_pending"] = {"models": list(dict.fromkeys(list(models) + usable)), "supported": True}
        st.rerun()
    default_target = "gap" if "gap" in targets else (targets[0] if targets else None)
    target = widget("selectbox", "Target", "target", default_target or "", targets, sb) if targets else None
    probe = widget("selectbox", "Probe", "probe", "ridge", PROBES, sb, format_func=lambda p: PROBE_LABELS[p],
                   help="Every probe standardises features on the training folds. Ridge picks its alpha per target "
                        "and fold from 20 values (0.1 to 1e5) by cross-validation inside the training "
                        "rows (the other folds, refitting projection and scaling); the MLP and the trees use "
                        "early stopping.")
    invariant = widget("radio", "L>0 invariant", "invariant", "pooled_norm", analysis.INVARIANTS, sb,
                       format_func=lambda v: analysis.INVARIANT_LABELS[v],
                       help="How L>0 (vector, tensor) channels become rotation-invariant numbers.")
    with sb.expander("More settings"):
        pooling = widget("selectbox", "Pooling over atoms", "pooling", "mean", ("mean", "sum"))
        composition = widget("selectbox", "Composition removed", "composition", "counts", ("counts", "fractions"),
                             help="Element counts (default) or fractions span the composition that is projected out.")
        folds = widget("number_input", "Folds (shuffled K-fold)", "folds", 5, None, min_value=2, max_value=10)
        criterion = widget("selectbox", "Ridge alpha selection", "criterion", "kfold", CRITERION_LABELS,
                           format_func=lambda c: CRITERION_LABELS[c],
                           help="How Ridge picks its regularisation on the training rows. Nested K-fold CV "
                                "refits projection and scaling in each inner fold; leave-one-out is exact and "
                                "cheap for narrow layers; GCV is fastest but can pick a near-unregularised fit "
                                "when a few training structures have extreme leverage.")
        supported = widget("checkbox", "Only structures every selected model supports", "supported", False,
                           help="Drop structures with elements a selected model cannot handle (e.g. F for so3net-ani1x).")
    sel = Selection(dataset=dataset, n=int(n), seed=int(seed), models=tuple(models), target=target, probe=probe,
                    pooling=pooling, invariant=invariant, composition=composition, folds=int(folds),
                    supported=bool(supported), criterion=criterion)
    st.session_state["_selection"] = sel
    sb.caption("Every choice is kept in the page address: copy the URL to share this view.")
    return sel


def selection() -> Selection:
    """The sidebar's Selection for this run; every page starts with it.

    Streamlit runs a page file directly, without app.py, when it treats `pages/` as a legacy (v1) pages
    folder: on a server's first request for a sub-page, and in AppTest reruns. Then app.py is run here
    instead (it shows the sidebar and navigation and runs this page again through st.navigation).
    """
    if not IN_APP.get():
        import runpy

        runpy.run_path(str(APP_FILE), run_name="__cpd_app__")
        st.stop()
    return st.session_state["_selection"]


# ============================================================================================ guards and work
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


def ready_models(sel: Selection, structures, models=None) -> list[str]:
    """The models whose representations are available, computing missing ones with progress.

    Models that cannot run on these structures get a clear st.error and are left out.
    """
    from cpd_core.cache import cached_invariants, is_cached

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

                cached_invariants(m, structures, progress=progress)
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


def page_probe(sel: Selection, page: str, what: str) -> str:
    """The sidebar probe, except that pages fitting many probes use Ridge unless the user opts in."""
    if sel.probe == "ridge":
        return "ridge"
    use = widget("checkbox", f"Use {PROBE_LABELS[sel.probe]} here too (slow: {what})", f"{page}_nonlinear", False)
    if not use:
        st.caption(f"This page uses Ridge; the sidebar's {PROBE_LABELS[sel.probe]} is used on the "
                   "Disentanglement and Probes pages (tick above to use it here as well).")
    return sel.probe if use else "ridge"


# ============================================================================================ drawing
def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80]


def chart(fig, name: str, caption: str, **kwargs):
    """Plotly chart + caption + HTML download. Extra kwargs go to st.plotly_chart (e.g. on_select)."""
    fig.update_layout(margin=dict(l=10, r=10, t=50, b=10))
    event = st.plotly_chart(fig, key=kwargs.pop("key", f"chart_{slug(name)}"), **kwargs)
    st.caption(caption)
    st.download_button("Download chart (HTML)", data=lambda fig=fig: fig.to_html(include_plotlyjs=True),
                       file_name=f"{slug(name)}.html", mime="text/html", key=f"dl_html_{slug(name)}",
                       on_click="ignore", icon=":material/download:")
    return event


def table(df: pd.DataFrame, name: str, caption: str | None = None, **kwargs) -> None:
    """Dataframe + CSV download."""
    st.dataframe(df, hide_index=True, **kwargs)
    if caption:
        st.caption(caption)
    st.download_button("Download table (CSV)", data=lambda df=df: df.to_csv(index=False), file_name=f"{slug(name)}.csv",
                       mime="text/csv", key=f"dl_csv_{slug(name)}", on_click="ignore", icon=":material/download:")


def model_colors(models) -> dict[str, str]:
    """A fixed colour per model id (same on every page), from a qualitative palette."""
    import plotly.express as px

    palette = px.colors.qualitative.D3 + px.colors.qualitative.Dark2
    order = models_frame()["model"].tolist()
    return {m: palette[(order.index(m) if m in order else hash(m)) % len(palette)] for m in models}


def family_color(family: str) -> str:
    return FAMILY_COLORS.get(family, "#7f7f7f")


def target_label(structures, target: str) -> str:
    if target in analysis.CONTROL_TARGETS:
        return target
    unit = structures.units.get(target, "")
    return f"{target} [{unit}]" if unit else target


# ============================================================================================ uploads
def uploads_root() -> Path:
    from cpd_core.paths import cache_dir

    root = cache_dir() / "uploads"
    root.mkdir(parents=True, exist_ok=True)
    return root


def upload_path(dataset_id: str) -> Path | None:
    """The stored file of an `upload:<hash>/<name>` dataset id, or None."""
    if not dataset_id.startswith("upload:"):
        return None
    rest = dataset_id[len("upload:"):]
    if not re.fullmatch(r"[0-9a-f]{16}/[A-Za-z0-9_.-]+", rest):
        return None
    path = uploads_root() / rest
    return path if path.is_file() else None


def _check_name(name: str) -> str:
    base = Path(name).name
    lowered = base.lower()
    inner = lowered
    for suffix in COMPRESSED:
        if lowered.endswith(suffix):
            inner = lowered[: -len(suffix)]
    if not (inner.endswith(UPLOAD_SUFFIXES) or Path(inner).name in UPLOAD_NAMES):
        raise CPDInputError(
            f"'{base}' is not a structure file this app reads. Upload extxyz/xyz, CIF, POSCAR/CONTCAR (.vasp), or an "
            f"ASE database (.db), optionally compressed (.gz, .bz2, .xz).")
    return slug(base) or "structures.extxyz"


def handle_upload(name: str, data: bytes, max_bytes: int | None = None):
    """Validate and store an uploaded structure file; returns (dataset id, StructureSet).

    Raises CPDInputError with a plain message for files that are too large, of an unknown kind, unreadable,
    empty, or with fewer than 10 structures. Files are parsed by `ase.io` only (never unpickled).
    """
    from cpd_core.data.userfiles import MAX_UPLOAD_BYTES, load_structure_file

    limit = MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
    if len(data) > limit:
        raise CPDInputError(f"'{name}' is {len(data) / 2**20:.1f} MB; the limit is {limit / 2**20:.0f} MB. "
                            "Upload a subset or compress it (.gz).")
    if not data:
        raise CPDInputError(f"'{name}' is empty.")
    safe = _check_name(name)
    digest = hashlib.sha256(data).hexdigest()[:16]
    folder = uploads_root() / digest
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / safe
    if not path.is_file():
        tmp = folder / f".{safe}.tmp"
        tmp.write_bytes(data)
        tmp.replace(path)
    try:
        structures = load_structure_file(path, name=Path(name).name)
    except CPDInputError:
        path.unlink(missing_ok=True)
        raise
    if len(structures) < 10:
        raise CPDInputError(f"'{name}' holds {len(structures)} structure(s); CPD needs at least 10 (better hundreds) "
                            "with numeric properties to probe.")
    if not structures.targets:
        raise CPDInputError(f"'{name}' has no numeric per-structure properties to use as targets (e.g. energy=... "
                            "in the extxyz comment line).")
    return f"upload:{digest}/{safe}", structures


# ============================================================================================ 3D viewer
def structure_viewer(structures, i: int, height: int = 380) -> None:
    """The structure in 3D with py3Dmol (3Dmol.js served by this app, so it works offline)."""
    import py3Dmol

    view = py3Dmol.view(width=520, height=height, js="/app/static/3Dmol-min.js")
    view.addModel(analysis.xyz_text(structures, i), "xyz")
    view.setStyle({"stick": {"radius": 0.15}, "sphere": {"scale": 0.25}})
    if structures.periodic[i]:
        view.addUnitCell()
    view.zoomTo()
    html = view._make_html()  # only numbers and element symbols from the structure go into it
    if hasattr(st, "iframe"):
        st.iframe(html, height=height + 10)
    else:  # Streamlit < 1.50
        import streamlit.components.v1 as components

        components.html(html, height=height + 10)
