"""The dashboard through streamlit.testing.v1.AppTest: every page renders on a small QM9 subset, widgets change
the output, choices persist across pages and in the URL, and bad input gives a message, not a traceback.

Small data keeps this quick: n=200 molecules (n=120 where nonlinear probes run) with the fast ani2x-aev model;
the routing page uses mace-spice (local weights), the one equivariant model that is quick on 200 molecules.
Representations go to the shared runtime cache, as the app's do; the cache-clearing test uses its own cache.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
N = "200"
TIMEOUT = 600


def run_app(page: str | None = None, **params) -> AppTest:
    """A fresh session (like a new browser tab) opened on `page` with URL query parameters."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["n"] = N
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    if page is not None:
        at.switch_page(f"pages/{page}.py")
        at.run()
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def plotly_charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "title", "error", "warning", "info", "success"):
        parts += [str(e.value) for e in at.get(kind)]
    return "\n".join(parts)


def chart_json(at: AppTest, i: int = 0) -> str:
    return plotly_charts(at)[i].proto.spec


# --------------------------------------------------------------------------------------------- every page
def test_disentanglement_default_view():
    at = run_app()
    assert_clean(at)
    assert not at.error
    assert at.title[0].value == "Disentanglement"
    assert len(plotly_charts(at)) == 1
    spec = chart_json(at)
    assert "R²_geom" in spec and "ani2x-aev" in spec and "handcrafted descriptor" in spec and "mace-spice" in spec
    df = at.dataframe[0].value
    assert list(df["model"]) == ["ani2x-aev", "mace-spice"] and set(df["target"]) == {"gap"}
    assert np.isfinite(df[["r2_full", "r2_comp", "r2_geom"]].to_numpy()).all()
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Download chart (HTML)" in labels and "Download table (CSV)" in labels
    assert any("How to read it" in c.value for c in at.caption)
    # sidebar defaults
    assert at.selectbox(key="dataset").value == "qm9"
    assert at.multiselect(key="models").value == ["ani2x-aev", "mace-spice"]
    assert at.selectbox(key="probe").value == "ridge"


def test_first_view_routing_page_shows_a_chart():
    """The default selection holds an equivariant model, so irrep routing draws a chart on first open."""
    at = run_app("routing")
    assert_clean(at)
    assert not at.warning
    assert len(plotly_charts(at)) == 1
    assert set(at.dataframe[0].value["model"]) == {"mace-spice"}


def test_target_change_updates_chart_url_and_other_pages():
    at = run_app()
    before = at.dataframe[0].value
    at.selectbox(key="target").set_value("dipole").run()
    assert_clean(at)
    after = at.dataframe[0].value
    assert after["target"].iloc[0] == "dipole"
    assert after["r2_geom"].iloc[0] != before["r2_geom"].iloc[0]
    assert "dipole" in chart_json(at)
    assert at.query_params["target"] == ["dipole"] or at.query_params["target"] == "dipole"
    # the choice persists on another page
    at.switch_page("pages/layers.py").run()
    assert_clean(at)
    assert at.selectbox(key="target").value == "dipole"
    assert at.dataframe[0].value["target"].iloc[0] == "dipole"


def test_shared_link_reopens_the_view():
    at = run_app("layers", target="homo", pooling="sum", layers_channel="best", layers_parts="geom,full")
    assert_clean(at)
    assert at.selectbox(key="target").value == "homo"
    assert at.selectbox(key="pooling").value == "sum"
    assert at.radio(key="layers_channel").value == "best"
    assert at.multiselect(key="layers_parts").value == ["geom", "full"]
    table = at.dataframe[0].value
    assert set(table["target"]) == {"homo"}


def test_nonlinear_probe_on_the_ridge_selected_layer():
    at = run_app(n="120", models="ani2x-aev,ani2x-nets", probe="gbt")
    assert_clean(at)
    table = at.dataframe[0].value
    assert set(table["probe"]) == {"gbt"} and set(table["selected_by"]) == {"ridge r2_geom"}
    assert set(table["model"]) == {"ani2x-aev", "ani2x-nets"}
    assert "Gradient-boosted trees" in chart_json(at)


def test_bad_query_params_fall_back_to_defaults():
    at = run_app(target="no-such-target", models="nope,ani2x-aev", probe="svm", folds="x")
    assert_clean(at)
    assert at.selectbox(key="target").value == "gap"
    assert at.multiselect(key="models").value == ["ani2x-aev"]
    assert at.selectbox(key="probe").value == "ridge"
    assert at.number_input(key="folds").value == 5


def test_layers_page_widgets_change_output():
    at = run_app("layers", models="ani2x-aev,ani2x-nets")
    assert_clean(at)
    assert len(plotly_charts(at)) == 1
    table = at.dataframe[0].value
    assert set(table["model"]) == {"ani2x-aev", "ani2x-nets"}
    assert sorted(table[table["model"] == "ani2x-nets"]["depth"]) == [1, 2, 3]
    assert "R²_comp" in chart_json(at)
    at.multiselect(key="layers_parts").set_value(["geom"]).run()
    assert_clean(at)
    assert "R²_comp" not in chart_json(at)
    at.radio(key="layers_x").set_value("rel_depth").run()
    assert "relative depth" in chart_json(at)


def test_routing_page_without_and_with_an_equivariant_model():
    at = run_app("routing", models="ani2x-aev")
    assert_clean(at)
    assert any("L>0 channels" in w.value for w in at.warning)
    at.button(key="routing_add_mace").click().run()
    assert_clean(at)
    assert at.multiselect(key="models").value == ["ani2x-aev", "mace-spice"]
    charts = plotly_charts(at)
    assert len(charts) == 1
    table = at.dataframe[0].value
    assert set(table["model"]) == {"mace-spice"} and set(table["target"]) == {"dipole", "gap"}
    assert {"L0", "L1", "L2", "L3"} <= set(table["channel"])
    assert set(table.loc[table["channel"] != "L0", "invariant"]) == {"pooled_norm"}
    assert "pooled_norm" in texts(at)
    # the invariant choice is labelled and changes the L>0 rows
    at.radio(key="invariant").set_value("atom_norm").run()
    assert_clean(at)
    table2 = at.dataframe[0].value
    assert set(table2.loc[table2["channel"] != "L0", "invariant"]) == {"atom_norm"}
    assert "atom_norm" in chart_json(at)
    l1 = lambda t: t[(t["channel"] == "L1") & (t["target"] == "dipole")]["r2_geom"].to_numpy()  # noqa: E731
    assert not np.allclose(l1(table), l1(table2))


def test_probes_page_with_control_targets():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"n": "120", "probes_list": "ridge,gbt", "models": "ani2x-aev"})
    at.run()
    at.switch_page("pages/probes.py").run()
    assert_clean(at)
    assert at.multiselect(key="probes_list").value == ["ridge", "gbt"]
    table = at.dataframe[0].value
    assert set(table["probe"]) == {"ridge", "gbt"}
    assert set(table["target"]) == {"gap", "control:nonlinear", "control:mass"}
    mass = table[table["target"] == "control:mass"].set_index("probe")
    # linear probe on the residual cannot see a target linear in counts
    assert mass.loc["ridge", "r2_geom"] < 0.1
    assert len(plotly_charts(at)) == 1
    at.selectbox(key="probes_layer").set_value("aev/L0").run()
    assert_clean(at)
    assert "aev · L0" in chart_json(at)


def test_sample_efficiency_page():
    at = run_app("sample_efficiency")
    assert_clean(at)
    table = at.dataframe[0].value
    assert set(table["part"]) == {"geom", "full"}
    assert table["size"].min() == 20 and table["size"].max() == 160
    at.multiselect(key="se_parts").set_value(["geom"]).run()
    assert set(at.dataframe[0].value["part"]) == {"geom"}


def test_embedding_page_point_and_colour():
    at = run_app("embedding")
    assert_clean(at)
    assert len(plotly_charts(at)) == 1  # both maps in one two-panel figure
    spec = chart_json(at)
    assert "Raw representation" in spec and "Residual (composition removed)" in spec and "scattergl" in spec
    assert not at.get("iframe") and "3Dmol" not in str(at.main)  # no structure chosen: no 3D viewer yet
    assert any("Click a point" in c.value for c in at.caption)
    at.selectbox(key="emb_point").set_value(5).run()
    assert_clean(at)
    assert len(at.get("iframe")) == 1 or "3Dmol" in str(at.main)  # the py3Dmol viewer
    first = at.dataframe[-1].value
    assert first["value"].iloc[0] == "5"
    assert at.query_params["emb_point"] == ["5"] or at.query_params["emb_point"] == "5"
    at.selectbox(key="emb_point").set_value(7).run()
    assert_clean(at)
    second = at.dataframe[-1].value
    assert list(first["value"]) != list(second["value"]) and second["value"].iloc[0] == "7"
    at.selectbox(key="emb_colour").set_value("count_O").run()
    assert_clean(at)
    assert "count_O" in chart_json(at)


def test_embedding_umap_residual_map():
    at = run_app("embedding", emb_method="umap")
    assert_clean(at)
    assert at.radio(key="emb_method").value == "umap"
    assert len(plotly_charts(at)) == 1 and "UMAP 1" in chart_json(at) and "Residual" in chart_json(at)


def test_data_and_models_page():
    at = run_app("data")
    assert_clean(at)
    names = [df.value for df in at.dataframe]
    assert any("qm9" in list(d.get("name", [])) for d in names if hasattr(d, "get"))
    assert any("mace-spice" in list(d["model"]) for d in names if "model" in getattr(d, "columns", []))
    assert len(plotly_charts(at)) >= 2  # target and size histograms


# --------------------------------------------------------------------------------------------- bad input
def _extxyz(n: int, with_energy: bool = True) -> bytes:
    import ase
    import ase.io

    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        atoms = ase.Atoms("CH4", positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                                             [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]])
        atoms.positions += rng.normal(scale=0.05, size=(5, 3))
        if with_energy:
            atoms.info["energy"] = float(rng.normal())
        frames.append(atoms)
    buf = io.StringIO()
    ase.io.write(buf, frames, format="extxyz")
    return buf.getvalue().encode()


@pytest.mark.parametrize("name, data, message", [
    ("broken.xyz", b"this is not\na structure file\n", "Could not read"),
    ("report.pdf", b"%PDF-1.4", "not a structure file"),
    ("empty.extxyz", b"", "empty"),
    ("few.extxyz", _extxyz(3), "at least 10"),
    ("nolabels.extxyz", _extxyz(12, with_energy=False), "no numeric"),
])
def test_bad_upload_shows_an_error(name, data, message):
    at = run_app("data")
    at.file_uploader(key="upload_file").set_value((name, data, "application/octet-stream")).run()
    assert_clean(at)
    errors = [e.value for e in at.error]
    assert any(message in e for e in errors), errors
    assert at.selectbox(key="dataset").value == "qm9"


def test_upload_size_limit_and_handler():
    from cpd_core.errors import CPDInputError
    from dashboard.uploads import handle_upload

    with pytest.raises(CPDInputError, match="limit"):
        handle_upload("big.extxyz", b"x" * 2048, max_bytes=1024)
    dataset_id, structures = handle_upload("ok.extxyz", _extxyz(12))
    assert dataset_id.startswith("upload:") and len(structures) == 12 and structures.targets == ["energy"]
    config = (ROOT / ".streamlit" / "config.toml").read_text()
    assert "maxUploadSize = 200" in config and 'address = "localhost"' in config


def test_good_upload_becomes_the_dataset():
    at = run_app("data")
    at.file_uploader(key="upload_file").set_value(("methane.extxyz", _extxyz(30), "text/plain")).run()
    assert_clean(at)
    assert at.selectbox(key="dataset").value.startswith("upload:")
    assert at.selectbox(key="target").value == "energy"
    assert any("Read 30 structures" in s.value for s in at.success)
    at.switch_page("pages/disentanglement.py").run()
    assert_clean(at)
    assert at.dataframe[0].value["target"].iloc[0] == "energy"


def test_unsupported_elements_give_a_message_not_a_traceback():
    at = run_app(models="ani2x-aev,so3net-ani1x")
    assert_clean(at)
    errors = [e.value for e in at.error]
    assert any("so3net-ani1x does not support element(s) F" in e for e in errors), errors
    assert list(at.dataframe[0].value["model"]) == ["ani2x-aev"]  # the others still shown


def test_too_little_data():
    at = run_app("sample_efficiency", n="20")
    assert_clean(at)
    assert any("Too little data" in e.value for e in at.error)


def test_too_few_rows_for_the_folds_is_a_message():
    at = run_app(n="12", folds="10")
    assert_clean(at)
    assert any("Too few samples" in e.value for e in at.error), [e.value for e in at.error]


def test_cache_page_clears_its_cache(tmp_path, monkeypatch):
    from cpd_core.paths import cache_dir

    (tmp_path / "datasets").symlink_to(cache_dir() / "datasets")  # reuse the parsed QM9
    monkeypatch.setenv("CPD_CACHE_DIR", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["n"] = "50"
    at.query_params["models"] = "ani2x-aev"
    at.run()
    assert_clean(at)
    assert any((tmp_path / "embeddings").iterdir())
    at.switch_page("pages/data.py").run()
    assert at.button(key="cache_clear").disabled
    at.checkbox(key="cache_confirm").check().run()
    at.button(key="cache_clear").click().run()
    assert_clean(at)
    assert any("Removed 1 cache entries" in s.value for s in at.success)
    assert not [p for p in (tmp_path / "embeddings").iterdir() if p.is_dir()]


def test_ridge_alpha_criterion_is_a_sidebar_choice_kept_in_the_url():
    at = run_app("layers", criterion="loo")
    assert_clean(at)
    assert at.selectbox(key="criterion").value == "loo"
    at.selectbox(key="criterion").set_value("gcv").run()
    assert_clean(at)
    assert at.query_params["criterion"] in (["gcv"], "gcv")
    assert len(plotly_charts(at)) == 1


def test_layer_similarity_page_before_and_after_composition_removal():
    at = run_app("similarity", models="ani2x-aev,ani2x-nets")
    assert_clean(at)
    assert len(plotly_charts(at)) == 1 and "Linear CKA between layers (raw)" in chart_json(at)
    raw = at.dataframe[0].value
    assert set(raw["model_a"]) == {"ani2x-aev", "ani2x-nets"} and set(raw["residual"]) == {False}
    at.radio(key="cka_residual").set_value(True).run()
    assert_clean(at)
    assert "composition removed" in chart_json(at)
    residual = at.dataframe[0].value
    assert set(residual["residual"]) == {True} and len(residual) == len(raw)
    assert at.query_params["cka_residual"] in (["1"], "1")


def test_eraser_choice_on_disentanglement_and_routing_is_kept_in_the_url():
    at = run_app()
    assert_clean(at)
    qr = at.dataframe[0].value
    assert set(qr["eraser"]) == {"qr"}
    at.radio(key="eraser").set_value("leace").run()
    assert_clean(at)
    leace = at.dataframe[0].value
    assert set(leace["eraser"]) == {"leace"} and at.query_params["eraser"] in (["leace"], "leace")
    assert leace["r2_geom"].iloc[0] != qr["r2_geom"].iloc[0]
    assert leace["r2_full"].iloc[0] == pytest.approx(qr["r2_full"].iloc[0], abs=1e-9)  # the eraser only affects geom
    at.switch_page("pages/routing.py").run()
    assert_clean(at)
    assert at.radio(key="eraser").value == "leace" and set(at.dataframe[0].value["eraser"]) == {"leace"}


def test_embedding_page_offers_a_chemiscope_file():
    import gzip
    import io
    import json

    at = run_app("embedding")
    assert_clean(at)
    button = [b for b in at.get("download_button") if b.proto.label == "Download for chemiscope (.json.gz)"]
    assert len(button) == 1 and button[0].proto.deferred_file_id  # made when clicked, by charts.chemiscope_bytes
    from cpd_core.data.qm9 import load_qm9
    from cpd_core.study.analysis import feature_sets
    from dashboard.charts import chemiscope_bytes

    structures = load_qm9(n=int(N), seed=0)
    H = feature_sets(structures, ["ani2x-aev"])[("ani2x-aev", "aev", "L0")]
    data = json.load(gzip.open(io.BytesIO(chemiscope_bytes(structures, H, "x", "gap", "pca", "counts", 0, 5))))
    assert len(data["structures"]) == int(N) and "gap error (geom)" in data["properties"]


def test_node_level_page():
    at = run_app("atoms", models="ani2x-aev", n="60")
    assert_clean(at)
    assert len(plotly_charts(at)) == 1
    table = at.dataframe[0].value
    assert set(table["target"]) == {"mulliken", "coordination", "centroid_distance"}
    assert (table["n_atoms"] > 60).all()
    at.multiselect(key="atoms_targets").set_value(["mulliken"]).run()
    assert_clean(at)
    assert set(at.dataframe[0].value["target"]) == {"mulliken"}


def test_new_representations_are_computed_on_the_dask_cluster(tmp_path, monkeypatch):
    """A selection the cache does not hold is extracted by Dask workers (here an external cluster named by
    CPD_DASK_SCHEDULER), not in the script thread; the page then draws as usual."""
    from dask.distributed import Client, LocalCluster

    from cpd_core.paths import cache_dir
    from dashboard.loaders import forget_extraction_client

    (tmp_path / "datasets").symlink_to(cache_dir() / "datasets")  # reuse the parsed QM9
    monkeypatch.setenv("CPD_CACHE_DIR", str(tmp_path))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        monkeypatch.setenv("CPD_DASK_SCHEDULER", cluster.scheduler_address)
        forget_extraction_client()
        try:
            at = run_app(n="150", models="ani2x-aev")
            assert_clean(at)
            assert len(at.dataframe[0].value) > 0

            def models_loaded():
                from cpd_core.representations import cache

                return cache._worker_adapter.cache_info().currsize

            assert sum(client.run(models_loaded).values()) == 1
        finally:
            forget_extraction_client()
