"""Sample efficiency: R²_geom (and R²_full) against training-set size per model."""

import plotly.express as px
import streamlit as st

from cpd_core.study import analysis
from dashboard import charts, loaders, sidebar, url_state

sel = sidebar.selection()
st.title("Sample efficiency")
st.markdown("How many labelled structures does a probe need to read the geometric part? Test folds stay fixed; "
            "the probe (and the composition projector) is fitted on random subsets of each training fold.")

structures = loaders.structures_or_stop(sel, minimum=40, need_target=True)
models = loaders.ready_models(sel, structures)
c1, c2 = st.columns(2)
with c1:
    parts = url_state.widget("multiselect", "Scores", "se_parts", ["geom", "full"], ["geom", "full", "comp"],
                             format_func=analysis.PART_LABELS.get)
with c2:
    log_x = url_state.widget("checkbox", "Logarithmic size axis", "se_logx", True)
probe = sidebar.page_probe(sel, "se", "sizes x seeds x folds fits per model")
if not parts:
    st.warning("Choose at least one score.")
    st.stop()
with loaders.guard("The learning curves"):
    sizes = analysis.default_sizes(len(structures), sel.folds)
    curves = loaders.compute(
        ("se", *sel.key(), tuple(models), sel.target, probe, tuple(parts), tuple(sizes)),
        f"Learning curves ({sidebar.PROBE_LABELS[probe]}, {len(sizes)} sizes x 3 seeds x {sel.folds} folds)",
        lambda p: analysis.sample_efficiency_table(structures, models, sel.target, sizes=sizes, probe=probe,
                                                   parts=parts, progress=p, **sel.engine_kwargs()))
curves = curves.copy()
curves["score"] = curves["part"].map(analysis.PART_LABELS)
curves["representation"] = curves["model"] + " · " + curves["layer"] + " · " + curves["channel"]
fig = px.line(curves, x="size", y="r2", color="model", line_dash="score", error_y="r2_std", markers=True,
              color_discrete_map=charts.model_colors(models),
              line_dash_map={"R²_geom": "solid", "R²_full": "dash", "R²_comp": "dot"},
              log_x=log_x, hover_data=["representation", "runs"],
              labels={"size": "training structures", "r2": f"R² ({charts.target_label(structures, sel.target)})"},
              title=f"{sel.target}: R² against training-set size ({sidebar.PROBE_LABELS[probe]})")
fig.add_hline(y=0, line_color="#888", line_width=1)
fig.update_layout(height=460)
fig.update_xaxes(tickvals=sizes, ticktext=[str(s) for s in sizes])
charts.chart(
    fig, f"sample_efficiency_{sel.target}_{probe}",
    "How to read it: each line is one model at its best layer (by Ridge R²_geom on all rows; hover for it), "
    "solid = R²_geom, dashed = R²_full, dotted = R²_comp. A curve that rises early reaches the geometric information with few "
    "labels; one still rising at the right edge would gain from more data. Error bars: standard deviation over "
    "folds x 3 seeds of the training subset.")
charts.table(curves.drop(columns=["score"]).round(4), f"sample_efficiency_{sel.target}_{probe}")
