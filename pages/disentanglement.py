"""Disentanglement: R²_full, R²_comp and R²_geom per model at its best layer (the headline figure, live)."""

import plotly.graph_objects as go
import streamlit as st

from cpd_core.study import analysis
from dashboard import charts, loaders, sidebar

sel = sidebar.selection()
st.title("Disentanglement")
st.markdown(
    "How much of a property can a linear (or nonlinear) probe read from a model's representation "
    "(**R²_full**), from the element counts alone (**R²_comp**), and from what is left once everything "
    "linear in composition is removed (**R²_geom**, the geometric part)?")

structures = loaders.structures_or_stop(sel, need_target=True)
models = loaders.ready_models(sel, structures)
eraser = sidebar.eraser_choice()
with loaders.guard("The CPD computation"):
    feats = loaders.features(sel, structures, models)
    best = loaders.compute(
        ("headline", *sel.key(), tuple(models), sel.target, sel.probe, eraser),
        f"CPD with {sidebar.PROBE_LABELS[sel.probe]} probes on {len(structures):,} structures",
        lambda p: analysis.headline(structures, models, [sel.target], probe=sel.probe, features=feats, progress=p,
                                    eraser=eraser, **sel.engine_kwargs()))

best = best.assign(eraser=eraser)
order = best.sort_values(["family", "r2_geom"], ascending=[True, False])
fig = go.Figure()
styles = {"full": dict(opacity=0.45, pattern=""), "comp": dict(opacity=0.75, pattern="/"),
          "geom": dict(opacity=1.0, pattern="")}
for part, style in styles.items():
    fig.add_bar(
        x=order["model"], y=order[f"r2_{part}"],
        error_y=dict(type="data", array=order[f"r2_{part}_std"], visible=True),
        name=analysis.PART_LABELS[part], showlegend=False,
        marker=dict(color=[charts.family_color(f) for f in order["family"]], opacity=style["opacity"],
                    pattern=dict(shape=style["pattern"]), line=dict(color="#333", width=1)),
        customdata=order[["layer", "channel", "family"]].to_numpy(),
        hovertemplate=("%{x}<br>" + analysis.PART_LABELS[part] + " = %{y:.3f}<br>layer %{customdata[0]}, "
                       "%{customdata[1]}<br>%{customdata[2]}<extra></extra>"))
legend_parts = {"full": ("R²_full (faint)", "square", 0.45), "comp": ("R²_comp (hatched)", "square-x-open", 1.0),
                "geom": ("R²_geom (solid)", "square", 1.0)}
for part, (text, symbol, opacity) in legend_parts.items():
    fig.add_scatter(x=[None], y=[None], mode="markers", name=text, legendgroup="scores",
                    legendgrouptitle_text="Score", marker=dict(symbol=symbol, size=13, color="#555", opacity=opacity))
for family in order["family"].unique():
    fig.add_scatter(x=[None], y=[None], mode="markers", name=family, legendgroup="families",
                    legendgrouptitle_text="Architecture family",
                    marker=dict(symbol="square", size=13, color=charts.family_color(family)))
fig.update_layout(barmode="group", height=480, yaxis_title=f"R² ({charts.target_label(structures, sel.target)})",
                  title=f"{sel.target}: {sidebar.PROBE_LABELS[sel.probe]} probe, best layer per model, "
                        f"{structures.name}", legend=dict(groupclick="toggleitem"))
fig.add_hline(y=0, line_color="#888", line_width=1)
charts.chart(
    fig, f"disentanglement_{sel.target}_{sel.probe}",
    "How to read it: each group of three bars is one model, coloured by architecture family, at the layer "
    "where its R²_geom is highest (hover for the layer). Faint bar = R²_full (property read from the "
    "representation), hatched = R²_comp (read from element counts alone), solid = R²_geom (read after removing "
    "everything linear in composition). A tall solid bar means the model encodes the property through "
    "geometry, not just by counting atoms. Error bars: standard deviation over the shuffled folds; R² at or "
    "below 0 means no better than predicting the mean. Layers are selected on the same folds, so the best "
    "value is slightly optimistic.")

cols = ["model", "family", "layer", "channel", "invariant", "dim", "target", "r2_full", "r2_full_std", "r2_comp",
        "r2_comp_std", "r2_geom", "r2_geom_std", "probe", "eraser", "n", "folds", "selected_by"]
charts.table(order[cols].round(4), f"disentanglement_{sel.target}_{sel.probe}",
             "One row per model: the selected layer and channel with mean and standard deviation over folds.")
