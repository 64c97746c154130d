"""Dashboard layer: Plotly charts and tables with their downloads, fixed colours, axis labels, the 3D structure view."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from cpd_core.study import analysis
from dashboard.loaders import models_frame
from dashboard.sidebar import PROBE_LABELS
from dashboard.uploads import slug

FAMILY_COLORS = {
    "tensor-product equivariant": "#1f77b4",
    "vector-scalar equivariant": "#9467bd",
    "learned invariant": "#2ca02c",
    "handcrafted descriptor": "#ff7f0e",
}
PROBE_COLORS = {PROBE_LABELS["ridge"]: "#1f77b4", PROBE_LABELS["mlp"]: "#ff7f0e", PROBE_LABELS["gbt"]: "#2ca02c"}


def chart(fig, name: str, caption: str, **kwargs):
    """Plotly chart + caption + HTML download. Extra kwargs go to st.plotly_chart (e.g. on_select)."""
    fig.update_layout(margin=dict(l=10, r=10, t=50, b=10))
    event = st.plotly_chart(fig, key=kwargs.pop("key", f"chart_{slug(name)}"), **kwargs)
    st.caption(caption)
    st.download_button("Download chart (HTML)", data=lambda fig=fig: fig.to_html(include_plotlyjs=True),
                       file_name=f"{slug(name)}.html", mime="text/html", key=f"dl_html_{slug(name)}",
                       on_click="ignore", icon=":material/download:")
    return event


def table(df: pd.DataFrame, name: str, caption: str | None = None, **kwargs) -> None:
    """Dataframe + CSV download."""
    st.dataframe(df, hide_index=True, **kwargs)
    if caption:
        st.caption(caption)
    st.download_button("Download table (CSV)", data=lambda df=df: df.to_csv(index=False), file_name=f"{slug(name)}.csv",
                       mime="text/csv", key=f"dl_csv_{slug(name)}", on_click="ignore", icon=":material/download:")


def model_colors(models) -> dict[str, str]:
    """A fixed colour per model id (same on every page), from a qualitative palette."""
    import plotly.express as px

    palette = px.colors.qualitative.D3 + px.colors.qualitative.Dark2
    order = models_frame()["model"].tolist()
    return {m: palette[(order.index(m) if m in order else hash(m)) % len(palette)] for m in models}


def family_color(family: str) -> str:
    return FAMILY_COLORS.get(family, "#7f7f7f")


def target_label(structures, target: str) -> str:
    if target in analysis.CONTROL_TARGETS:
        return target
    unit = structures.units.get(target, "")
    return f"{target} [{unit}]" if unit else target


def structure_viewer(structures, i: int, height: int = 380) -> None:
    """The structure in 3D with py3Dmol (3Dmol.js served by this app, so it works offline)."""
    import py3Dmol

    view = py3Dmol.view(width=520, height=height, js="/app/static/3Dmol-min.js")
    view.addModel(analysis.xyz_text(structures, i), "xyz")
    view.setStyle({"stick": {"radius": 0.15}, "sphere": {"scale": 0.25}})
    if structures.periodic[i]:
        view.addUnitCell()
    view.zoomTo()
    html = view._make_html()  # only numbers and element symbols from the structure go into it
    if hasattr(st, "iframe"):
        st.iframe(html, height=height + 10)
    else:  # Streamlit < 1.50
        import streamlit.components.v1 as components

        components.html(html, height=height + 10)


def chemiscope_bytes(structures, features, name: str, target: str | None, method: str, composition: str, seed: int,
                     folds: int) -> bytes:
    """An embedding map as a chemiscope file, for a download button (made only when the user clicks)."""
    import tempfile

    from cpd_core.study.export import chemiscope_export

    with tempfile.TemporaryDirectory() as folder:
        path = chemiscope_export(Path(folder) / "map.json.gz", structures, features, name, target=target,
                                 method=method, composition=composition, seed=seed, folds=folds)
        return path.read_bytes()
