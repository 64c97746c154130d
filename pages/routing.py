"""Irrep routing: which (layer, L channel) of an equivariant model carries which property."""

import plotly.express as px
import streamlit as st

from cpd_core.study import analysis
from dashboard import charts, loaders, sidebar, url_state

sel = sidebar.selection()
st.title("Irrep routing")
st.markdown(
    "Equivariant models keep scalar (L=0), vector (L=1) and higher-order (L=2, 3) channels. Which of them carry "
    "which property? For example a dipole moment is a vector, a HOMO-LUMO gap a scalar.")
st.info(f"L>0 channels shown as **{analysis.INVARIANT_LABELS[sel.invariant]}** (change under 'L>0 invariant' in "
        "the sidebar). pooled_norm asks 'is there a net vector?', atom_norm 'how large are the local vectors?'.",
        icon=":material/info:")

structures = loaders.structures_or_stop(sel)
equivariant = [m for m in sel.models if analysis.is_equivariant(m)]
if not equivariant:
    st.warning("None of the selected models has L>0 channels. Add an equivariant model, e.g. mace-spice "
               "(about a minute for 1,000 molecules) or sevennet-0.")
    if st.button("Add mace-spice to the models", key="routing_add_mace"):
        st.session_state["_pending"] = {"models": list(sel.models) + ["mace-spice"]}
        st.rerun()
    st.stop()
models = loaders.ready_models(sel, structures, equivariant)
targets_available = list(structures.targets)
default_targets = [t for t in ("dipole", "gap") if t in targets_available] or targets_available[:2]
c1, c2 = st.columns([2, 1])
with c1:
    targets = url_state.widget("multiselect", "Targets", "routing_targets", default_targets, targets_available)
with c2:
    part = url_state.widget("radio", "Score", "routing_part", "geom", ("geom", "full"),
                            format_func=analysis.PART_LABELS.get, horizontal=True)
if not targets:
    st.warning("Choose at least one target.")
    st.stop()
probe = sidebar.page_probe(sel, "routing", "one probe per layer, channel and target")
eraser = sidebar.eraser_choice()
with loaders.guard("The CPD computation"):
    feats = loaders.features(sel, structures, models)
    table = loaders.compute(
        ("routing", *sel.key(), tuple(models), tuple(targets), probe, eraser),
        f"CPD per layer and L channel with {sidebar.PROBE_LABELS[probe]} probes",
        lambda p: analysis.routing(structures, models, targets, probe=probe, features=feats, progress=p,
                                   eraser=eraser, **sel.engine_kwargs()))

table = table.assign(eraser=eraser)
value = f"r2_{part}"
for m in models:
    sub = table[table["model"] == m]
    heat = sub.pivot(index="row", columns="target", values=value).reindex(index=sub["row"].unique(),
                                                                           columns=targets)
    fig = px.imshow(heat, text_auto=".2f", aspect="auto", color_continuous_scale="Viridis",
                    zmin=min(0.0, float(heat.min().min())), zmax=1.0,
                    labels=dict(x="target", y="layer · channel", color=analysis.PART_LABELS[part]),
                    title=f"{m}: {analysis.PART_LABELS[part]} per layer and L channel "
                          f"(L>0 as {sel.invariant})")
    fig.update_layout(height=max(300, 28 * len(heat) + 120))
    charts.chart(
        fig, f"routing_{m}_{part}_{sel.invariant}",
        f"How to read it: rows are the layers of {m} (top = first) split by irrep degree L; columns are targets; "
        f"colour and number are {analysis.PART_LABELS[part]} from a {probe} probe on that channel alone. A bright "
        "L1 cell for the dipole and a bright L0 cell for the gap means the model routes each property through "
        f"the channel of matching symmetry. L>0 cells use {sel.invariant}.")
charts.table(table[["model", "family", "layer", "depth", "channel", "invariant", "dim", "target", "r2_full",
                    "r2_full_std", "r2_comp", "r2_geom", "r2_geom_std", "probe", "eraser"]].round(4),
             f"routing_{sel.invariant}_{probe}")
