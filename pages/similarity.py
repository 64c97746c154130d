"""Layer similarity: debiased linear CKA between every pair of layers of the selected models, before and after
composition removal."""

import plotly.express as px
import streamlit as st

from cpd_core.study import analysis
from dashboard import charts, loaders, sidebar, url_state

sel = sidebar.selection()
st.title("Layer similarity (CKA)")
st.markdown(
    "Which layers of which models hold the same information about these structures? Linear **CKA** (centred "
    "kernel alignment, debiased) compares two representations of the same structures: 1 means the same up to a "
    "rotation and a uniform scale, 0 unrelated. After composition removal, what is left to compare is the part "
    "of each layer that is not linear in the element counts.")

structures = loaders.structures_or_stop(sel)
models = loaders.ready_models(sel, structures)
residual = url_state.widget("radio", "Representations", "cka_residual", False, (False, True), horizontal=True,
                            format_func={False: "as they are", True: "composition removed"}.get)
with loaders.guard("The CKA computation"):
    feats = loaders.features(sel, structures, models, combined="always")
    table = loaders.compute(
        ("cka", loaders.fingerprint(structures), tuple(models), sel.pooling, sel.invariant, sel.composition,
         residual),
        f"CKA between the layers of {len(models)} model(s)",
        lambda p: analysis.layer_similarity(structures, models, residual=residual, composition=sel.composition,
                                            pooling=sel.pooling, invariant=sel.invariant, features=feats,
                                            progress=p))

names = table.assign(a=table.model_a + " · " + table.layer_a, b=table.model_b + " · " + table.layer_b)
order = list(dict.fromkeys(names.a))
heat = names.pivot(index="a", columns="b", values="cka").reindex(index=order, columns=order)
what = "composition removed" if residual else "raw"
fig = px.imshow(heat, text_auto=".2f" if len(order) <= 16 else False, aspect="auto", zmin=0, zmax=1,
                color_continuous_scale="Viridis", labels=dict(x="model · layer", y="model · layer", color="CKA"),
                title=f"Linear CKA between layers ({what}), {len(structures):,} structures")
fig.update_layout(height=max(420, 26 * len(order) + 200))
charts.chart(
    fig, f"cka_{what.replace(' ', '_')}",
    "How to read it: each cell compares two layers (rows and columns: model · layer, in depth order) on the same "
    "structures. Bright blocks along the diagonal are runs of similar layers within a model; bright cells between "
    "models are layers that hold the same information. Compare 'as they are' with 'composition removed': "
    "similarity that vanishes after removal came from the element counts. Use the chart's camera icon for a PNG.")
charts.table(table.round(4), f"cka_{what.replace(' ', '_')}",
             "One row per ordered pair of layers (CSV for your own plots).")
