"""Probes: Ridge vs MLP vs gradient-boosted trees on the same residuals, with compositional control targets."""

import plotly.express as px
import streamlit as st

from cpd_core.study import analysis
from dashboard import charts, loaders, sidebar, url_state

sel = sidebar.selection()
st.title("Probes")
st.markdown(
    "The same representation and the same residuals, read by three probes. The **control targets** depend on "
    "composition only: removing the linear composition part leaves a linear probe nothing to read, but a "
    "nonlinear probe (trees especially) can still recover composition from the residual. That is why R²_geom "
    "is defined with a linear probe.")

structures = loaders.structures_or_stop(sel, need_target=True)
models = loaders.ready_models(sel, structures)
c1, c2, c3 = st.columns([1, 1, 1])
with c1:
    model = url_state.widget("selectbox", "Model", "probes_model", models[0], models)
with loaders.guard("The CPD computation"):
    feats = loaders.features(sel, structures, models)
    keys = [k for k in feats if k[0] == model]
    options = ["best"] + [f"{layer}/{channel}" for _, layer, channel in keys]
with c2:
    where = url_state.widget("selectbox", "Layer / channel", "probes_layer", "best", options,
                             format_func=lambda v: "best layer (Ridge R²_geom)" if v == "best" else v)
with c3:
    probes = url_state.widget("multiselect", "Probes", "probes_list", list(sidebar.PROBES), list(sidebar.PROBES),
                              format_func=sidebar.PROBE_LABELS.get)
if not probes:
    st.warning("Choose at least one probe.")
    st.stop()
with loaders.guard("The CPD computation"):
    if where == "best":
        grid = loaders.compute(
            ("grid", *sel.key(), (model,), (sel.target,), "ridge"), "Choosing the layer with Ridge",
            lambda p: analysis.disentanglement(structures, [model], [sel.target], probe="ridge", features=feats,
                                               progress=p, **sel.engine_kwargs()))
        row = analysis.best_layer(grid).iloc[0]
        layer, channel = row["layer"], row["channel"]
    else:
        layer, channel = where.split("/")
    st.caption(f"Representation: {model}, layer {layer}, channel {channel}"
               + (f" (L>0 as {sel.invariant})" if channel != "L0" else ""))
    table = loaders.compute(
        ("probes", *sel.key(), model, layer, channel, sel.target, tuple(probes)),
        f"Fitting {', '.join(probes)} probes (nonlinear probes take a while)",
        lambda p: analysis.probe_comparison(structures, model, layer, channel, [sel.target], probes=probes,
                                            features=feats, progress=p, **sel.engine_kwargs()))

long = table.melt(id_vars=["probe", "target", "control"], value_vars=["r2_full", "r2_comp", "r2_geom"],
                  var_name="score", value_name="r2")
long["std"] = table.melt(id_vars=["probe"], value_vars=["r2_full_std", "r2_comp_std", "r2_geom_std"])["value"].to_numpy()
long["score"] = long["score"].map(lambda s: analysis.PART_LABELS[s[3:]])
long["probe"] = long["probe"].map(sidebar.PROBE_LABELS)
fig = px.bar(long, x="target", y="r2", color="probe", barmode="group", facet_col="score", error_y="std",
             color_discrete_map=charts.PROBE_COLORS,
             category_orders={"score": ["R²_full", "R²_comp", "R²_geom"]},
             labels={"r2": "R²"}, title=f"{model} · {layer} · {channel}: probes compared")
fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
fig.add_hline(y=0, line_color="#888", line_width=1)
fig.update_layout(height=460)
charts.chart(
    fig, f"probes_{model}_{sel.target}",
    f"How to read it: bars are R² per target (x) for each probe (colour); panels are the three scores. "
    f"{sel.target} is the sidebar's target; control:mass is linear in element counts, control:nonlinear "
    "(log mass x number of distinct elements) is a nonlinear function of composition only. In the R²_geom panel "
    "a linear probe scores about 0 on control:mass (the projection removes it exactly) and only what the "
    "representation's own nonlinear composition features give on control:nonlinear; a probe scoring clearly "
    "higher on the controls (trees, often) is recovering composition from the residual, not geometry, so its "
    "R²_geom on the real target is not purely geometric either. Error bars: standard deviation over folds.")
charts.table(table[["probe", "target", "control", "model", "layer", "channel", "r2_full", "r2_full_std", "r2_comp",
                    "r2_comp_std", "r2_geom", "r2_geom_std", "n", "folds"]].round(4), f"probes_{model}_{sel.target}",
             "; ".join(f"{k}: {v[1]}" for k, v in analysis.CONTROL_TARGETS.items()))
