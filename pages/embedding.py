"""Embedding map: PCA or UMAP of raw and residual representations, linked to a 3D structure view.

The 3D viewer (3Dmol.js in an iframe) costs about half a second of the browser's time each time the page is drawn,
so it appears once a structure is chosen (a click on either map, or the picker), not on every visit."""

import pandas as pd
import plotly.express as px
import streamlit as st

from cpd_core.data.composition import composition_matrix
from cpd_core.study import analysis
from dashboard import charts, loaders, sidebar, url_state

sel = sidebar.selection()
st.title("Embedding map")
st.markdown("Each point is a structure. Left: the representation as it is; right: the residual after removing "
            "everything linear in composition. Click a point (or pick one below) to see the structure.")

structures = loaders.structures_or_stop(sel)
models = loaders.ready_models(sel, structures)
with loaders.guard("Loading representations"):
    feats = loaders.features(sel, structures, models)
    comp = analysis.composition_table(structures)
c1, c2, c3, c4 = st.columns([1.2, 1.2, 0.8, 1.2])
with c1:
    model = url_state.widget("selectbox", "Model", "emb_model", models[0], models)
keys = [f"{layer}/{channel}" for m, layer, channel in feats if m == model]
with c2:
    where = url_state.widget("selectbox", "Layer / channel", "emb_layer", keys[-1] if keys else None, keys)
with c3:
    method = url_state.widget("radio", "Method", "emb_method", "pca", ("pca", "umap"), format_func=str.upper,
                              horizontal=True)
colour_options = list(structures.targets) + [c for c in comp.columns if c != "formula"]
with c4:
    colour = url_state.widget("selectbox", "Colour by", "emb_colour",
                              sel.target if sel.target in colour_options else colour_options[0], colour_options)
layer, channel = where.split("/")
H = feats[(model, layer, channel)]
C, _ = composition_matrix(structures, sel.composition)
with loaders.guard("The map"):
    maps = {}
    for residual in (False, True):
        maps[residual] = loaders.compute(
            ("map", loaders.fingerprint(structures), model, layer, channel, sel.pooling, sel.invariant, sel.composition,
             method, residual, sel.seed),
            f"{method.upper()} of the {'residual' if residual else 'raw'} representation"
            + (" (UMAP takes ~10-30 s the first time)" if method == "umap" else ""),
            lambda p, residual=residual: analysis.embedding_map(H, method, residual, C, seed=sel.seed))

point_key = "emb_point"
NONE = -1  # no structure chosen yet
n = len(structures)


def _on_select(chart_key: str) -> None:
    state = st.session_state.get(chart_key)
    points = (state or {}).get("selection", {}).get("points", []) if state else []
    if points:
        idx = points[0].get("customdata", [None])[0]
        if idx is not None:
            st.session_state[point_key] = int(idx)


if colour in structures.targets:
    values, colour_label = structures.table[colour], charts.target_label(structures, colour)
else:
    values, colour_label = comp[colour], colour
hover = {"formula": comp["formula"], "id": structures.table["id"]}
if "smiles" in structures.table:
    hover["smiles"] = structures.table["smiles"]
current = url_state.initial(point_key, NONE)
current = current if isinstance(current, int) and 0 <= current < n else NONE
cols = st.columns(2)
for col, residual in zip(cols, (False, True)):
    frame = maps[residual].assign(colour=values.to_numpy(), index=range(n), **{k: v.to_numpy() for k, v in hover.items()})
    explained = maps[residual].attrs.get("explained")
    axis = (lambda i: f"PC{i + 1} ({explained[i]:.0%})") if explained else (lambda i: f"UMAP {i + 1}")
    fig = px.scatter(frame, x="x", y="y", color="colour", custom_data=["index"], hover_data=list(hover),
                     color_continuous_scale="Viridis", labels={"colour": colour_label, "x": axis(0), "y": axis(1)},
                     title=("Residual (composition removed)" if residual else "Raw representation"))
    fig.update_traces(marker=dict(size=6, opacity=0.8))
    if current != NONE:
        fig.add_scatter(x=[frame["x"][current]], y=[frame["y"][current]], mode="markers", showlegend=False,
                        customdata=[[current]], hoverinfo="skip", name="selected",
                        marker=dict(size=17, symbol="circle-open", color="#d62728", line=dict(width=3)))
    fig.update_layout(height=430, coloraxis_colorbar=dict(title=colour_label))
    chart_key = f"emb_chart_{'res' if residual else 'raw'}"
    with col:
        charts.chart(
            fig, f"embedding_{model}_{layer}_{channel}_{method}_{'residual' if residual else 'raw'}",
            ("How to read it: nearby points have similar residual representations. If colour still forms smooth "
             "bands here, the model encodes this quantity beyond composition."
             if residual else
             "How to read it: nearby points have similar representations. Colouring by element counts "
             "(count_*) usually shows clusters by composition; compare with the residual map on the right. "
             "The red ring marks the selected structure."),
            key=chart_key, on_select=lambda k=chart_key: _on_select(k), selection_mode="points")



st.download_button("Download for chemiscope (.json.gz)", on_click="ignore",
                   data=lambda: charts.chemiscope_bytes(structures, H, f"{model} {layer} {channel}", sel.target, method,
                                                        sel.composition, sel.seed, sel.folds),
                   file_name=charts.slug(f"chemiscope_{model}_{layer}_{channel}_{method}") + ".json.gz",
                   mime="application/gzip", key="emb_chemiscope", icon=":material/download:",
                   help="Open the file at chemiscope.org (or with chemiscope.show in a notebook) to explore the "
                        "structures on this map, with the targets and each structure's out-of-fold probe error.")

st.subheader("Structure")
labels = structures.table["smiles"] if "smiles" in structures.table else comp["formula"]
if n <= 5000:
    idx = url_state.widget("selectbox", "Selected structure (or click a point above)", point_key, NONE,
                           [NONE] + list(range(n)),
                           format_func=lambda i: "none yet" if i == NONE else f"{i}: {comp['formula'][i]} · {labels[i]}")
else:
    idx = url_state.widget("number_input", "Selected structure index (or click a point above; -1: none)", point_key,
                           NONE, min_value=NONE, max_value=n - 1)
if idx == NONE:
    st.caption("Click a point on either map, or pick a structure above, to see it in 3D with its properties.")
    st.stop()
left, right = st.columns([1.3, 1])
with left:
    charts.structure_viewer(structures, idx)
with right:
    record = analysis.structure_record(structures, idx)
    st.markdown(f"**{record['formula']}**" + (f" · `{record['smiles']}`" if "smiles" in record else "")
                + f" · {record['id']}")
    charts.table(pd.DataFrame({"property": list(record),
                               "value": [f"{v:.6g}" if isinstance(v, float) else str(v) for v in record.values()]}),
                 f"structure_{record['id']}")
