"""Dashboard layer: the choices every page shares (dataset, subset, models, target, probe, settings) as a Selection.

app.py draws the sidebar once per run; a page starts with `selection()` to read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from cpd_core.errors import CPDInputError
from cpd_core.study import analysis, default_view
from dashboard.loaders import dataset_infos, fingerprint, load_structures, models_frame, supported_subset
from dashboard.uploads import upload_path
from dashboard.url_state import IN_APP, begin_run, widget

DEFAULT_N = default_view.N  # the first view (its representations are precomputed by scripts/install.sh)
DEFAULT_MODELS = default_view.MODELS
PROBES = ("ridge", "mlp", "gbt")
PROBE_LABELS = {"ridge": "Ridge (linear)", "mlp": "MLP (neural net)", "gbt": "Gradient-boosted trees"}
ERASER_LABELS = {"qr": "QR projection on [1 | counts]", "leace": "LEACE (concept erasure)"}


def eraser_choice() -> str:
    """The composition eraser for R²_geom on this page (kept in the URL as `eraser`)."""
    return widget("radio", "Composition eraser", "eraser", "qr", ERASER_LABELS, format_func=ERASER_LABELS.get,
                  horizontal=True, help="How composition is removed before R²_geom: the least-squares projection "
                  "on [1 | element counts] row by row (default), or LEACE, the least change to the features after "
                  "which no linear function predicts any element count. Both are fitted on training folds only.")
CRITERION_LABELS = {"kfold": "Nested K-fold CV (default)", "loo": "Exact leave-one-out",
                    "gcv": "Generalised CV (fast; fragile with outliers)"}
APP_FILE = Path(__file__).resolve().parent.parent / "app.py"


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
            return supported_subset(self.dataset, self.n, self.seed, self.models)[0]
        return load_structures(self.dataset, self.n, self.seed)

    def removed(self) -> int:
        if self.supported and self.models:
            return supported_subset(self.dataset, self.n, self.seed, self.models)[1]
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
                    help="The first view's models are precomputed at install; the others are computed on first "
                         "use with a progress bar and cached on disk (resumable if you leave).")
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
                           help="Drop structures with elements a selected model cannot handle "
                                "(e.g. F for so3net-ani1x).")
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


def page_probe(sel: Selection, page: str, what: str) -> str:
    """The sidebar probe, except that pages fitting many probes use Ridge unless the user opts in."""
    if sel.probe == "ridge":
        return "ridge"
    use = widget("checkbox", f"Use {PROBE_LABELS[sel.probe]} here too (slow: {what})", f"{page}_nonlinear", False)
    if not use:
        st.caption(f"This page uses Ridge; the sidebar's {PROBE_LABELS[sel.probe]} is used on the "
                   "Disentanglement and Probes pages (tick above to use it here as well).")
    return sel.probe if use else "ridge"
