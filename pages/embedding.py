"""Embedding map: PCA or UMAP of raw and residual representations, linked to a 3D structure view.

The 3D viewer (3Dmol.js in an iframe) costs about half a second of the browser's time each time the page is drawn,
so it appears once a structure is chosen (a click on either map, or the picker), not on every visit."""

import numpy as np
import pandas as pd
from plotly.subplots import make_subplots
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
custom = np.column_stack([np.arange(n), values.to_numpy()] + [v.to_numpy() for v in hover.values()])
hover_template = (f"{colour_label}: %{{customdata[1]}}<br>" + "<br>".join(
    f"{k}: %{{customdata[{i + 2}]}}" for i, k in enumerate(hover)) + "<extra></extra>")
current = url_state.initial(point_key, NONE)
current = current if isinstance(current, int) and 0 <= current < n else NONE
# both maps in one two-panel figure: one chart for the browser to draw (two separate 1,000-point charts took it
# 0.5-1 s longer per visit here), WebGL, sharing the colour scale
titles = ("Raw representation", "Residual (composition removed)")
fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.08)
for panel, residual in enumerate((False, True), start=1):
    frame = maps[residual]
    explained = frame.attrs.get("explained")
    axis = (lambda i: f"PC{i + 1} ({explained[i]:.0%})") if explained else (lambda i: f"UMAP {i + 1}")
    fig.add_scattergl(x=frame["x"], y=frame["y"], mode="markers", customdata=custom, hovertemplate=hover_template,
                      name=titles[panel - 1], showlegend=False, row=1, col=panel,
                      marker=dict(size=6, opacity=0.8, color=values.to_numpy(), coloraxis="coloraxis"))
    if current != NONE:
        fig.add_scatter(x=[frame["x"][current]], y=[frame["y"][current]], mode="markers", showlegend=False,
                        customdata=[[current]], hoverinfo="skip", name="selected", row=1, col=panel,
                        marker=dict(size=17, symbol="circle-open", color="#d62728", line=dict(width=3)))
    fig.update_xaxes(title_text=axis(0), row=1, col=panel)
    fig.update_yaxes(title_text=axis(1), row=1, col=panel)
fig.update_layout(height=460, coloraxis=dict(colorscale="Viridis", colorbar=dict(title=colour_label)))
charts.chart(
    fig, f"embedding_{model}_{layer}_{channel}_{method}",
    "How to read it: nearby points have similar representations. Left, the representation as it is: colouring by "
    "element counts (count_*) usually shows clusters by composition. Right, the residual after removing what is "
    "linear in composition: if colour still forms smooth bands there, the model encodes this quantity beyond "
    "composition. The red ring marks the selected structure.",
    key="emb_chart", on_select=lambda: _on_select("emb_chart"), selection_mode="points")

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
