"""Data and models: datasets, target distributions, uploads; models and their layers; the cache."""

import pandas as pd
import plotly.express as px
import streamlit as st

from cpd_core.data.userfiles import MAX_UPLOAD_BYTES
from cpd_core.errors import CPDInputError
from cpd_core.study import analysis
from dashboard import charts, loaders, sidebar, uploads, url_state

sel = sidebar.selection()
st.title("Data and models")

tab_data, tab_upload, tab_models, tab_cache = st.tabs(["Datasets", "Upload structures", "Models", "Cache"])

with tab_data:
    infos = pd.DataFrame(loaders.dataset_infos())
    infos["targets"] = infos["targets"].map(lambda t: ", ".join(f"{k} [{v}]" for k, v in t.items()))
    charts.table(infos[["name", "kind", "size", "available", "description", "targets", "message"]], "datasets",
                 "Built-in datasets; the dashboard uses a random subset (sidebar 'Structures', 'Seed').")
    st.subheader(f"Current selection: {sel.dataset}, {sel.n:,} structures, seed {sel.seed}")
    structures = loaders.structures_or_stop(sel, minimum=1)
    c1, c2 = st.columns([2, 1])
    with c1:
        charts.table(analysis.dataset_summary(structures).round(4), f"targets_{structures.name}",
                     f"{len(structures):,} structures, {int(structures.n_atoms.sum()):,} atoms.")
    with c2:
        charts.table(analysis.element_summary(structures), f"elements_{structures.name}")
    if structures.targets:
        show = url_state.widget("selectbox", "Distribution of", "data_hist", sel.target or structures.targets[0],
                                list(structures.targets))
        fig = px.histogram(structures.table, x=show, nbins=50,
                           labels={show: charts.target_label(structures, show)},
                           title=f"{show} over {len(structures):,} structures")
        fig.update_layout(height=360, yaxis_title="structures")
        charts.chart(fig, f"histogram_{show}",
                     "How to read it: how many structures (y) have each value of the property (x). Strongly skewed "
                     "or multi-modal targets make R² depend on a few extreme structures.")
    sizes = analysis.composition_table(structures)
    fig = px.histogram(sizes, x="n_atoms", nbins=40, title="Structure sizes")
    fig.update_layout(height=300, xaxis_title="atoms per structure", yaxis_title="structures")
    charts.chart(fig, "histogram_n_atoms",
                 "How to read it: the number of structures (y) with each number of atoms (x).")

with tab_upload:
    st.markdown(
        "Upload your own structures: extxyz/xyz (properties in the comment line, e.g. `energy=-3.2`), CIF, "
        "POSCAR/CONTCAR (.vasp), or an ASE database (.db), optionally compressed (.gz, .bz2, .xz). Numeric "
        f"per-structure properties become targets. Limit: {MAX_UPLOAD_BYTES // 2**20} MB. Files are read with "
        "ase.io only.")
    uploaded = st.file_uploader("Structure file", key="upload_file", max_upload_size=MAX_UPLOAD_BYTES // 2**20)
    if uploaded is not None and st.session_state.get("_last_upload") != uploaded.file_id:
        try:
            dataset_id, new = uploads.handle_upload(uploaded.name, uploaded.getvalue())
        except CPDInputError as exc:
            st.session_state["_upload_error"] = str(exc)
            st.session_state.pop("_upload_ok", None)
        else:
            uploads = st.session_state.setdefault("uploads", [])
            if dataset_id not in uploads:
                uploads.append(dataset_id)
            st.session_state["_upload_ok"] = (f"Read {len(new):,} structures with targets "
                                              f"{', '.join(new.targets)}. It is now the sidebar's dataset.")
            st.session_state.pop("_upload_error", None)
            st.session_state["_pending"] = {"dataset": dataset_id, "n": min(max(len(new), 10), 200_000)}
            st.session_state["_last_upload"] = uploaded.file_id
            st.rerun()
        st.session_state["_last_upload"] = uploaded.file_id
    if uploaded is None:
        st.session_state.pop("_upload_error", None)
        st.session_state.pop("_upload_ok", None)
    if st.session_state.get("_upload_error"):
        st.error(st.session_state["_upload_error"])
    elif st.session_state.get("_upload_ok"):
        st.success(st.session_state["_upload_ok"])

with tab_models:
    frame = loaders.models_frame()
    charts.table(frame[["model", "family", "offline", "trained", "input", "n_layers", "max_l", "cutoff", "elements",
                        "layers", "weights_source"]], "models",
                 "offline: runs here without a download. trained: False for the random-weight test models. "
                 "layers: e3nn irreps of each layer's per-atom features (e.g. 32x1o = 32 vector channels).")
    pick = url_state.widget("selectbox", "Details of", "data_model", sel.models[0] if sel.models else frame["model"][0],
                            frame["model"].tolist())
    row = frame.set_index("model").loc[pick]
    st.markdown(f"**{pick}** · {row['family']} · cutoff {row['cutoff']} Å  \n{row['description']}")
    if row["notes"]:
        st.caption(row["notes"])
    charts.table(pd.DataFrame([{"layer": k.strip(), "irreps": v.strip()} for k, v in
                               (part.split(":", 1) for part in row["layers"].split(";"))]), f"layers_of_{pick}",
                 "Layers in depth order with the e3nn irreps of their per-atom features.")

with tab_cache:
    from cpd_core.representations.cache import cache_summary, clear_cache, is_cached

    structures = loaders.structures_or_stop(sel, minimum=1)
    status = pd.DataFrame([{"model": m, "cached for this selection": is_cached(m, structures)} for m in sel.models])
    if not status.empty:
        charts.table(status, "cache_status_of_selected_models",
                     f"Are the selected models' representations of the current {len(structures):,} structures cached?")
    summary = pd.DataFrame(cache_summary())
    if summary.empty:
        st.info("The representation cache is empty.")
    else:
        charts.table(summary, "cache", f"{summary['size_mb'].sum():.1f} MB of cached representations. Incomplete "
                                       "entries resume when the same model and structures are used again.")
    confirm = st.checkbox("Yes, delete every cached representation", key="cache_confirm")
    if st.button("Clear the representation cache", disabled=not confirm, key="cache_clear"):
        removed = clear_cache()
        loaders.clear_memo()
        st.success(f"Removed {removed} cache entries. Representations are recomputed when next needed.")
