"""Node level: is composition entangled per atom, before pooling? Per-atom R² of every layer and L channel."""

import plotly.express as px
import streamlit as st

from cpd_core.study import analysis, node_level
from dashboard import charts, loaders, sidebar, url_state

sel = sidebar.selection()
st.title("Node level (per atom)")
st.markdown(
    "The other pages pool each layer over atoms first. Here every **atom** is a sample: its per-atom invariants "
    "(L=0 channels, and the norms of L>0 channels) are probed for per-atom targets, QM9's **Mulliken charges** "
    "and two geometry descriptors (coordination number, distance to the centroid). R²_geom is read after "
    "removing the atom's own composition: its element and the element counts within the model's cutoff. Folds "
    "are drawn over molecules, so no molecule has atoms on both sides of a split.")

structures = loaders.structures_or_stop(sel)
if structures.periodic.any():
    st.warning("Node-level CPD is defined for molecules here; choose QM9 or a file of molecules.")
    st.stop()
models = loaders.ready_models(sel, structures)
available = node_level.target_names(structures)
c1, c2 = st.columns([2, 1])
with c1:
    targets = url_state.widget("multiselect", "Per-atom targets", "atoms_targets", available, available)
with c2:
    part = url_state.widget("radio", "Score", "atoms_part", "geom", ("geom", "full", "comp"),
                            format_func=analysis.PART_LABELS.get, horizontal=True)
if not targets:
    st.warning("Choose at least one target.")
    st.stop()
with loaders.guard("The node-level computation"):
    table = loaders.compute(
        ("node", loaders.fingerprint(structures), tuple(models), tuple(targets), sel.folds, sel.seed),
        f"Node-level CPD of {int(structures.n_atoms.sum()):,} atoms (per-atom features are computed afresh)",
        lambda p: node_level.node_level(structures, models, targets, folds=sel.folds, seed=sel.seed, progress=p))

value = f"r2_{part}"
for m in models:
    sub = table[table["model"] == m].assign(row=lambda t: t["layer"] + " · " + t["channel"])
    heat = sub.pivot(index="row", columns="target", values=value).reindex(index=sub["row"].unique(), columns=targets)
    fig = px.imshow(heat, text_auto=".2f", aspect="auto", color_continuous_scale="Viridis",
                    zmin=min(0.0, float(heat.min().min())), zmax=1.0,
                    labels=dict(x="per-atom target", y="layer · channel", color=analysis.PART_LABELS[part]),
                    title=f"{m}: per-atom {analysis.PART_LABELS[part]}")
    fig.update_layout(height=max(300, 28 * len(heat) + 120))
    charts.chart(
        fig, f"node_level_{m}_{part}",
        "How to read it: rows are the layers of the model (top = first) split by irrep degree L, columns per-atom "
        f"targets; colour and number are {analysis.PART_LABELS[part]} of a Ridge probe on that channel, one sample "
        "per atom. A high R²_comp means the target follows the atom's element and neighbourhood counts; R²_geom "
        "is what the layer adds beyond them.")
charts.table(table.round(4), "node_level", "One row per model, layer, L channel and per-atom target.")
