"""Layers: R²_geom (and R²_full, R²_comp) against layer depth."""

import plotly.express as px
import streamlit as st

from cpd_core.study import analysis
from dashboard import charts, loaders, sidebar, url_state

sel = sidebar.selection()
st.title("Layers")
st.markdown("Where along the network does geometric information appear? Scores of every layer against its depth.")

structures = loaders.structures_or_stop(sel, need_target=True)
models = loaders.ready_models(sel, structures)
if all(loaders.models_frame().set_index("model").loc[m, "n_layers"] == 1 for m in models):
    st.info("The selected models have a single layer: add a deeper one in the sidebar (e.g. ani2x-nets, "
            "mace-spice, sevennet-0) to see a profile.")
c1, c2, c3 = st.columns(3)
with c1:
    mode = url_state.widget("radio", "Channel", "layers_channel", "L0", analysis.LAYER_CHANNEL_MODES,
                            format_func={"L0": "L0 (scalars)", "all": "all channels of the layer together",
                                         "best": "best channel per layer"}.get, horizontal=False)
with c2:
    x_axis = url_state.widget("radio", "x axis", "layers_x", "depth", ("depth", "rel_depth"),
                              format_func={"depth": "layer number", "rel_depth": "relative depth (layer / layers)"}.get)
with c3:
    parts = url_state.widget("multiselect", "Scores", "layers_parts", ["geom", "full", "comp"],
                             ["geom", "full", "comp"], format_func=analysis.PART_LABELS.get)
probe = sidebar.page_probe(sel, "layers", "one probe per layer and channel")
if not parts:
    st.warning("Choose at least one score.")
    st.stop()
with loaders.guard("The CPD computation"):
    feats = loaders.features(sel, structures, models)
    grid = loaders.compute(
        ("grid", *sel.key(), tuple(models), (sel.target,), probe),
        f"CPD of every layer with {sidebar.PROBE_LABELS[probe]} probes",
        lambda p: analysis.disentanglement(structures, models, [sel.target], probe=probe, features=feats,
                                           progress=p, **sel.engine_kwargs()))
    profile = analysis.layer_profile(grid, mode)

long = profile.melt(id_vars=["model", "family", "layer", "channel", "depth", "rel_depth"],
                    value_vars=[f"r2_{p}" for p in parts], var_name="score", value_name="r2")
std = profile.melt(id_vars=["model", "layer"], value_vars=[f"r2_{p}_std" for p in parts], value_name="std")
long["std"] = std["std"].to_numpy()
long["score"] = long["score"].map(lambda s: analysis.PART_LABELS[s[3:]])
fig = px.line(long, x=x_axis, y="r2", color="model", facet_col="score", markers=True, error_y="std",
              color_discrete_map=charts.model_colors(models),
              hover_data=["layer", "channel", "family"],
              category_orders={"score": [analysis.PART_LABELS[p] for p in parts]},
              labels={"depth": "layer", "rel_depth": "relative depth", "r2": "R²"},
              title=f"{sel.target}: scores by layer ({sidebar.PROBE_LABELS[probe]})")
fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
fig.update_layout(height=430)
if x_axis == "depth":
    fig.update_xaxes(dtick=1)
fig.add_hline(y=0, line_color="#888", line_width=1)
charts.chart(
    fig, f"layers_{sel.target}_{probe}_{mode}",
    "How to read it: one line per model, one panel per score; each point is a layer (hover for its name). "
    "Rising R²_geom with depth means later layers add information beyond composition; R²_comp is the same "
    "for every layer (it uses element counts only) and is the baseline to beat. Error bars: standard deviation "
    "over folds. L>0 channels use the sidebar's invariant.")
charts.table(profile[["model", "family", "layer", "depth", "channel", "invariant", "dim", "target", "r2_full",
                      "r2_full_std", "r2_comp", "r2_geom", "r2_geom_std", "probe"]].round(4),
             f"layers_{sel.target}_{probe}_{mode}")
with st.expander("Every layer and channel"):
    charts.table(grid.round(4), f"layers_all_channels_{sel.target}_{probe}")
