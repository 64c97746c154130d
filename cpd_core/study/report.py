"""`python -m cpd_core report`: run the experiments at a chosen size and write a Markdown + HTML report.

For each of the paper's claims the report gives the v1 abstract's number, the revised paper's (v2), ours, the
model and protocol, whether it holds and which version ours is nearer to. Representations come from the embedding cache and every experiment table is cached under
`cache/results/` keyed by its inputs, so a rerun only computes what changed (e.g. one new model).

Stage: study (stage 5 of 5).
"""

from __future__ import annotations

import hashlib
import json
import re
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cpd_core.study import experiments as E
from cpd_core.study import node_level
from cpd_core.data import load_dataset
from cpd_core.study.analysis import supported_subset
from cpd_core.data.registry import list_datasets
from cpd_core.models import describe_model, model_ids, offline_available
from cpd_core.paths import cache_dir

QM9_TARGETS = ("gap", "dipole", "polarizability", "U0")
MP_TARGETS = ("band_gap", "formation_energy_per_atom", "density", "volume_per_atom")
MP_NONLINEAR_TARGETS = ("band_gap", "formation_energy_per_atom")  # MLP and GBT probes (last layer)
FAST_QM9_MODELS = ("ani2x-aev", "ani2x-nets", "mace-spice")
QM9_MODEL_PREFERENCE = ("ani2x-aev", "ani2x-nets", "mace-spice", "so3net-ani1x", "sevennet-0", "sevennet-l3i5",
                        "chgnet-0.3.0", "mace-qm9-gap", "mace-qm9-U0", "visnet-qm9-gap", "schnet-qm9-gap")
MP_MODELS = ("sevennet-0", "chgnet-0.3.0")  # MACE-SPICE knows 10 elements: 79 of 2,000 crystals
ERASER_TARGETS = ("gap", "dipole")  # R²_geom under LEACE beside QR
NODE_LEVEL_N = 500  # molecules (the first of the subset) for node-level CPD: its per-atom features are not cached
CSV_ONLY = ("layer_similarity", "node_level", "eraser_comparison")  # summarised in report.md, full in the CSVs
ZOO_ID = re.compile(r"^(?P<arch>[a-z0-9]+)-qm9-(?P<target>gap|U0)$")  # zoo models: <arch>-qm9-<training target>


@dataclass
class ReportConfig:
    """Sizes and choices of one report run. `small` finishes in minutes on 2 cores, `medium` (2,000 molecules, the
    faster models) in about an hour, `full` (5,000 molecules, every offline model) is for real runs."""

    size: str = "small"
    qm9_n: int = 600
    mp_n: int = 300
    folds: int = 5
    seed: int = 0
    qm9_models: list = field(default_factory=list)
    mp_models: list = field(default_factory=list)
    probes: tuple = ("ridge", "mlp", "gbt")
    nonlinear_targets: tuple = ("gap", "dipole")
    nonlinear_layers: str = "last"
    sample_sizes: tuple = (50, 100, 200, 400)

    @classmethod
    def preset(cls, size: str) -> "ReportConfig":
        available = [m for m in model_ids() if offline_available(m)]
        if size == "small":
            qm9 = [m for m in FAST_QM9_MODELS if m in available] + [m for m in available if m.endswith("qm9-gap")
                                                                     or m.endswith("qm9-U0")]
            return cls(size="small", qm9_n=600, mp_n=200, qm9_models=qm9,
                       mp_models=[m for m in ("sevennet-0",) if m in available], sample_sizes=(50, 100, 200, 400))
        if size == "medium":
            qm9 = [m for m in QM9_MODEL_PREFERENCE if m in available and m not in ("so3net-ani1x", "sevennet-l3i5")]
            return cls(size="medium", qm9_n=2000, mp_n=500, qm9_models=qm9,
                       mp_models=[m for m in ("sevennet-0",) if m in available],
                       sample_sizes=(50, 100, 200, 500, 1000, 1600))
        if size == "full":
            qm9 = [m for m in QM9_MODEL_PREFERENCE if m in available]
            qm9 += [m for m in available if ZOO_ID.match(m) and m not in qm9]  # every zoo model
            return cls(size="full", qm9_n=5000, mp_n=2000, qm9_models=qm9,
                       mp_models=[m for m in MP_MODELS if m in available],
                       sample_sizes=(50, 100, 200, 500, 1000, 2000, 4000))
        raise ValueError(f"Unknown report size '{size}'; choose small, medium or full.")


RESULTS_VERSION = 5  # bump when probe or projection defaults change, so cached results are not reused


def _cached_table(name: str, key: dict, compute, timings: dict | None = None) -> pd.DataFrame:
    """A result table cached as Parquet under cache/results, keyed by the experiment's inputs and defaults.

    The seconds it took to compute are kept beside it and reported in `timings` (also when read from cache)."""
    from cpd_core.engine.probes import DEFAULT_ALPHAS, DEFAULT_CRITERION

    key = {**key, "results_version": RESULTS_VERSION, "alphas": [float(a) for a in DEFAULT_ALPHAS],
           "criterion": DEFAULT_CRITERION}
    digest = hashlib.sha256(json.dumps({"name": name, **key}, sort_keys=True, default=str).encode()).hexdigest()[:20]
    folder = cache_dir() / "results"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{digest}.parquet"
    seconds_path = path.with_suffix(".seconds")
    if path.is_file():
        try:
            table = pd.read_parquet(path)
            if timings is not None:
                timings[name] = float(seconds_path.read_text()) if seconds_path.is_file() else float("nan")
            return table
        except Exception:  # unreadable: recompute
            path.unlink(missing_ok=True)
    start = time.perf_counter()
    table = compute()
    seconds = time.perf_counter() - start
    tmp = path.with_suffix(".tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(path)
    seconds_path.write_text(f"{seconds:.1f}")
    if timings is not None:
        timings[name] = seconds
    return table


def run_experiments(config: ReportConfig, log=print, timings: dict | None = None) -> dict[str, pd.DataFrame]:
    """Every experiment of `cpd_core.study.experiments` at the configured size; {name: tidy table}.

    `timings` (if given) receives the compute seconds of every table, including those read from cache."""
    qm9 = load_dataset("qm9", n=config.qm9_n, seed=config.seed)
    base = {"qm9": qm9.fingerprint(), "folds": config.folds, "seed": config.seed}
    tables: dict[str, pd.DataFrame] = {}

    def step(name, key, fn):
        start = time.perf_counter()
        log(f"[{time.strftime('%H:%M:%S')}] {name} ...")
        tables[name] = _cached_table(name, {**base, **key}, fn, timings)
        log(f"    {name}: {len(tables[name])} rows in {time.perf_counter() - start:.1f} s")

    per_model = []
    for model_id in config.qm9_models:
        key = {"model": model_id, "weights": describe_model(model_id).weights_hash, "probes": config.probes,
               "targets": QM9_TARGETS, "nonlinear": [config.nonlinear_targets, config.nonlinear_layers]}
        step(f"disentanglement_qm9_{model_id}", key,
             lambda m=model_id: E.disentanglement(qm9, [m], QM9_TARGETS, config.probes, folds=config.folds,
                                                 seed=config.seed, nonlinear_targets=config.nonlinear_targets,
                                                 nonlinear_layers=config.nonlinear_layers))
        per_model.append(tables.pop(f"disentanglement_qm9_{model_id}"))
    tables["disentanglement_qm9"] = pd.concat(per_model, ignore_index=True)
    tables["best_layer_qm9"] = E.best_layer(tables["disentanglement_qm9"])
    tables["routing_qm9"] = E.routing(tables["disentanglement_qm9"])
    # the cross-model experiments compare models on the same molecules: only models that know every element
    left_out = {m: supported_subset(qm9, [m])[1] for m in config.qm9_models}
    shared = [m for m in config.qm9_models if left_out[m] == 0]
    for m in config.qm9_models:
        if left_out[m]:
            log(f"    {m} does not support every element of the subset: disentanglement and routing only, "
                f"on {len(qm9) - left_out[m]} molecules")
    models_key = {"models": shared, "weights": [describe_model(m).weights_hash for m in shared]}
    step("tree_inflation", models_key, lambda: E.tree_inflation(qm9, shared, folds=config.folds,
                                                                seed=config.seed))
    sizes = [s for s in config.sample_sizes if s <= config.qm9_n * (config.folds - 1) // config.folds]
    step("sample_efficiency", {**models_key, "sizes": sizes},
         lambda: E.sample_efficiency_exp(qm9, shared, "gap", sizes, folds=config.folds,
                                         seed=config.seed, layer_table=tables["disentanglement_qm9"]))
    step("pooling_ablation", models_key,
         lambda: E.pooling_ablation(qm9, shared, ("gap", "dipole"), folds=config.folds, seed=config.seed))
    step("isomer_benchmark", models_key,
         lambda: E.isomer_benchmark(qm9, shared, "gap", folds=config.folds, seed=config.seed))
    step("protocol_sensitivity", {**models_key, "protocols": E.PROTOCOLS},
         lambda: E.protocol_sensitivity(qm9, shared, "gap", folds=config.folds, seed=config.seed))
    step("eraser_comparison", {**models_key, "targets": ERASER_TARGETS},
         lambda: E.eraser_comparison(qm9, shared, ERASER_TARGETS, tables["disentanglement_qm9"], folds=config.folds,
                                     seed=config.seed))
    step("layer_similarity", models_key, lambda: E.layer_similarity(qm9, shared))
    tables["layer_similarity_summary"] = E.similarity_summary(tables["layer_similarity"])
    node_qm9 = qm9.subset(np.arange(min(len(qm9), NODE_LEVEL_N)), name=f"{qm9.name}[:{NODE_LEVEL_N}]")
    step("node_level", {**models_key, "n_node": len(node_qm9)},
         lambda: node_level.node_level(node_qm9, shared, folds=config.folds, seed=config.seed))
    tables["node_level_summary"] = E.node_level_summary(tables["node_level"])
    zoo = zoo_pairs(shared)
    if zoo:
        step("task_alignment", {"pairs": zoo, **models_key},
             lambda: E.task_alignment(qm9, zoo, "gap", folds=config.folds, seed=config.seed))
    mp_info = {d.name: d for d in list_datasets()}["mp"]
    if config.mp_models and mp_info.available:
        mp = load_dataset("mp", n=config.mp_n, seed=config.seed)
        key = {"mp": mp.fingerprint(), "models": config.mp_models,
               "weights": [describe_model(m).weights_hash for m in config.mp_models]}
        step("disentanglement_mp", {**key, "probes": config.probes, "nonlinear": MP_NONLINEAR_TARGETS},
             lambda: E.disentanglement(mp, config.mp_models, MP_TARGETS, config.probes, folds=config.folds,
                                       seed=config.seed, nonlinear_targets=MP_NONLINEAR_TARGETS,
                                       nonlinear_layers=config.nonlinear_layers))
        tables["best_layer_mp"] = E.best_layer(tables["disentanglement_mp"])
        step("disentanglement_mp_fixed_split", key,
             lambda: E.disentanglement(mp, config.mp_models, MP_TARGETS, ("ridge",), folds=config.folds,
                                       seed=config.seed, split="fixed"))
        tables["best_layer_mp_fixed_split"] = E.best_layer(tables.pop("disentanglement_mp_fixed_split"))
    return tables


def zoo_pairs(model_ids) -> dict:
    """{architecture: {"gap": id, "U0": id}} for every architecture with both zoo models among `model_ids`."""
    found: dict = {}
    for m in model_ids:
        match = ZOO_ID.match(m)
        if match:
            found.setdefault(match["arch"], {})[match["target"]] = m
    return {arch: {t: d[t] for t in ("gap", "U0")} for arch, d in sorted(found.items()) if set(d) == {"gap", "U0"}}


def _value(table, **where):
    sub = table
    for k, v in where.items():
        sub = sub[sub[k] == v]
    return sub


PAPER_V1 = "arXiv 2603.03155v1 abstract"
PAPER_V2 = "revised paper (v2)"
V2_TASK_ALIGNMENT = {"mace": (0.44, 0.08), "painn": (0.53, 0.31)}  # R²_geom gap: gap-trained vs energy-trained
NOT_STATED = "—"


def _closer(ours: float, v1: float | None, v2: float | None) -> str:
    """Which paper version our number is nearer to ('n/a' unless both give a number)."""
    if v1 is None or v2 is None or not np.isfinite(ours):
        return "n/a"
    return "v1" if abs(ours - v1) < abs(ours - v2) else "v2"


def claims(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each claim with the v1 abstract's and the revised paper's numbers next to ours, the model and protocol used,
    whether the claim's direction holds here and which version our number is nearer to."""
    rows = []
    best = tables["best_layer_qm9"]

    def add(claim, v1, v2, ours, model, protocol, holds, closer="n/a"):
        rows.append(dict(claim=claim, paper_v1=v1, paper_v2=v2, ours=ours, model=model, protocol=protocol,
                         holds="yes" if holds is True else "no" if holds is False else "n/a", closer_to=closer))

    ridge = "Ridge (nested K-fold alpha), 5-fold shuffled, fold-aware QR projection on counts, mean pooling"
    gap_ridge = best[(best.probe == "ridge") & (best.target == "gap")]
    trained = gap_ridge[gap_ridge.model == "mace-qm9-gap"]
    if len(trained):
        r = trained.iloc[0]
        add("MACE trained on the QM9 gap keeps the gap linearly readable after composition removal",
            "R²_geom 0.782", "R²_geom 0.44", f"{r.r2_geom:.3f} ± {r.r2_geom_std:.3f}", f"{r.model} / {r.layer}",
            ridge, bool(r.r2_geom > 0), _closer(r.r2_geom, 0.782, 0.44))
    pretrained = gap_ridge[gap_ridge.model == "mace-spice"]
    if len(pretrained):
        r = pretrained.iloc[0]
        add("A pretrained foundation MACE keeps gap geometry after composition removal", NOT_STATED,
            "R²_geom 0.36 (MACE-MP-0, pretrained on MPtrj)", f"{r.r2_geom:.3f} ± {r.r2_geom_std:.3f}",
            f"{r.model} / {r.layer} (pretrained on SPICE: MACE-MP-0's weights are not available offline here)",
            ridge, bool(r.r2_geom > 0))
    if len(gap_ridge) >= 2:
        lo, hi = gap_ridge.r2_geom.min(), gap_ridge.r2_geom.max()
        add("R²_geom for the gap spans a wide range across models", NOT_STATED, "0.081 to 0.533 over ten QM9 models",
            f"{lo:.3f} to {hi:.3f} over {gap_ridge.model.nunique()} models", ", ".join(gap_ridge.model), ridge,
            bool(hi - lo > 0.2))
    for probe, v1, expect in (("ridge", "R²_geom -0.792", lambda v: v < 0), ("mlp", "R²_geom +0.784",
                                                                           lambda v: v > 0.5)):
        ani = _value(best, model="ani2x-aev", probe=probe, target="gap")
        if len(ani):
            r = ani.iloc[0]
            add(f"ANI-2x AEV, gap, {probe.upper()} probe on the residual", v1, NOT_STATED,
                f"{r.r2_geom:.3f} ± {r.r2_geom_std:.3f}", "ani2x-aev / aev",
                ridge.replace("Ridge (nested K-fold alpha)", probe.upper()) + "; training-constant columns dropped, "
                "test values clipped to the training range", bool(expect(r.r2_geom)))
    routing = tables["routing_qm9"]
    mace_routes = routing[routing.model.str.startswith("mace")]
    if len(mace_routes):
        for target, v2, winner, loser in (("dipole", "L1 0.59 vs L0 0.38", "L1", "L0"),
                                          ("gap", "L0 0.76 vs L1 0.34", "L0", "L1")):
            sub = mace_routes[mace_routes.target == target]
            best_l = sub.groupby(["model", "channel"]).r2_geom.max()
            model = sub.groupby("model").r2_geom.max().idxmax()
            if (model, winner) in best_l and (model, loser) in best_l:
                w, lo = best_l[(model, winner)], best_l[(model, loser)]
                add(f"MACE routes {target} through {winner}", f"qualitative ({target} through {winner})", v2,
                    f"{winner} {w:.3f} vs {loser} {lo:.3f}",
                    f"{model} (best layer per channel; L>0 as norm of the pooled vector)", ridge, bool(w > lo))
    trees = tables["tree_inflation"]
    for target in ("control_nonlinear", "control_mass"):
        sub = trees[trees.target == target]
        if len(sub):
            g = sub[sub.probe == "gbt"].r2_geom
            rr = sub[sub.probe == "ridge"].r2_geom
            add(f"GBT probes recover a purely compositional target ({target}) from residuals",
                "GBT R² 0.68-0.95", NOT_STATED,
                f"GBT {g.min():.2f} to {g.max():.2f}; Ridge {rr.min():.2f} to {rr.max():.2f}",
                ", ".join(sub.model.unique()), "last layer, all channels, residual of the QR projection",
                bool(g.min() > 0.5 and rr.max() < 0.3))
    eff = tables["sample_efficiency"]
    geom = eff[eff.part == "geom"].groupby(["model", "size"]).r2.mean().unstack()
    if geom.shape[0] >= 3:
        small, large = geom.columns.min(), geom.columns.max()
        rho = pd.Series(geom[large]).rank().corr(pd.Series(geom[small]).rank())
        add("Linearly disentangled representations are more sample-efficient", "qualitative", NOT_STATED,
            f"Spearman ρ = {rho:.2f} between models' R²_geom at n={large} and at n={small}",
            ", ".join(geom.index), "Ridge, best layer for the gap, 3 subsample seeds", bool(rho > 0.5))
    iso = tables["isomer_benchmark"]
    if len(iso):
        comp = iso[iso.features == "composition projection"].accuracy
        res = iso[iso.features == "residual"]
        r = res.sort_values("accuracy").iloc[-1]
        add("Isomer pairs: the composition projection is at chance, the residual is not", NOT_STATED,
            "residual 94.6% pairwise", f"composition {comp.mean():.3f}; residual up to {r.accuracy:.3f}",
            f"{r.model} / {r.layer}", "which isomer of a pair has the larger gap; Ridge, pairs within test folds",
            bool(abs(comp.mean() - 0.5) < 1e-9 and r.accuracy > 0.6))
    pool = _value(tables["pooling_ablation"], model="ani2x-aev", target="gap")
    if len(pool) == 2:
        mean, total = pool.set_index("pooling").r2_geom[["mean", "sum"]]
        add("ANI-2x flips sign between mean and sum pooling (the author's report, in neither version)", NOT_STATED,
            NOT_STATED, f"mean {mean:.3f}, sum {total:.3f}", "ani2x-aev",
            ridge.replace("mean pooling", "mean vs sum pooling"), bool(np.sign(mean) != np.sign(total)))
    if "task_alignment" in tables:
        for arch, sub in tables["task_alignment"].groupby("architecture"):
            s = sub.set_index("trained_on").r2_geom
            v2 = V2_TASK_ALIGNMENT.get(arch)
            add(f"{arch}: trained on the gap keeps more gap geometry than trained on the energy", NOT_STATED,
                f"gap-trained {v2[0]} vs energy-trained {v2[1]}" if v2 else NOT_STATED,
                f"gap-trained {s['gap']:.3f} vs U0-trained {s['U0']:.3f}", ", ".join(sub.model), ridge,
                bool(s["gap"] > s["U0"]))
    return pd.DataFrame(rows)


def _md_table(df: pd.DataFrame, max_rows: int = 60) -> str:
    shown = df.head(max_rows).copy()
    for col in shown.select_dtypes("float").columns:
        shown[col] = shown[col].map(lambda v: f"{v:.3f}")
    text = shown.to_markdown(index=False)
    return text + (f"\n\n({len(df) - max_rows} more rows in the CSV)" if len(df) > max_rows else "")


def _figures(tables: dict[str, pd.DataFrame]) -> list[tuple[str, str]]:
    """(title, plotly HTML div) pairs for the HTML report."""
    import plotly.express as px

    figs = []
    best = tables["best_layer_qm9"]
    long = best[best.probe == "ridge"].melt(id_vars=["model", "target", "family"],
                                            value_vars=["r2_full", "r2_comp", "r2_geom"], var_name="part",
                                            value_name="R²")
    figs.append(("Disentanglement (best layer, Ridge)",
                 px.bar(long, x="model", y="R²", color="part", barmode="group", facet_col="target",
                        facet_col_wrap=2, height=650)))
    routing = tables["routing_qm9"]
    if len(routing):
        sub = routing[routing.target.isin(["dipole", "gap"])].copy()
        sub["row"] = sub.model + " / " + sub.layer + " / " + sub.channel
        figs.append(("Per-L routing (R²_full, Ridge)",
                     px.density_heatmap(sub, x="target", y="row", z="r2_full", histfunc="avg",
                                        color_continuous_scale="Viridis", height=max(400, 18 * sub.row.nunique()))))
    eff = tables["sample_efficiency"]
    curve = eff[eff.part == "geom"].groupby(["model", "size"]).r2.mean().reset_index()
    figs.append(("Sample efficiency (R²_geom for the gap)", px.line(curve, x="size", y="r2", color="model",
                                                                     log_x=True, markers=True)))
    return [(title, fig.to_html(full_html=False, include_plotlyjs="cdn")) for title, fig in figs]


def _eraser_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model and target: R²_geom at the best layer under each eraser, and the mean difference over layers."""
    rows = []
    for (model, target), sub in table.groupby(["model", "target"]):
        rows.append({"model": model, "target": target, "best_r2_geom_qr": sub.r2_geom_qr.max(),
                     "best_r2_geom_leace": sub.r2_geom_leace.max(),
                     "mean_leace_minus_qr": sub.leace_minus_qr.mean()})
    return pd.DataFrame(rows)


def write_report(tables: dict[str, pd.DataFrame], config: ReportConfig, out: Path, seconds: float,
                 compute_seconds: float | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
    claim_table = claims(tables)
    claim_table.to_csv(out / "claims.csv", index=False)
    machine = (f"{platform.platform()}, {platform.processor() or platform.machine()}, "
               f"{__import__('os').cpu_count()} CPU cores, Python {platform.python_version()}")
    computed = "" if compute_seconds is None else (
        f" The result tables took {compute_seconds / 60:.1f} min of computation in all (summed over the runs that "
        "filled the result cache; representations already in the embedding cache were read, not recomputed, there).")
    header = (f"# CPD Explorer report ({config.size})\n\nWritten {time.strftime('%Y-%m-%d %H:%M')} on {machine}; "
              f"this run took {seconds / 60:.1f} min (tables already in the result cache are read, not recomputed)."
              f"{computed}\n\nQM9: {config.qm9_n} molecules (seed {config.seed}), models "
              f"{', '.join(config.qm9_models)}. Materials Project: {config.mp_n} crystals, models "
              f"{', '.join(config.mp_models) or 'none'}. {config.folds}-fold shuffled CV.\n\n"
              f"Rerun: `python -m cpd_core report --size {config.size} --qm9-n {config.qm9_n} "
              f"--models {','.join(config.qm9_models)} --mp-models '{','.join(config.mp_models)}' --out {out}` "
              "(cached results are reused; delete cache/results to recompute)\n")
    partial = tables["disentanglement_qm9"].groupby("model").n.min()
    partial = partial[partial < config.qm9_n]
    if len(partial):
        header += ("\nModels that do not know every element present ran on the molecules they support and appear "
                   "only in the disentanglement and routing tables: " + ", ".join(
                       f"{m} ({n:,} of {config.qm9_n:,} molecules)" for m, n in partial.items()) + ".\n")
    sections = [("Claims", claim_table)] + [(name.replace("_", " ").capitalize(), t) for name, t in tables.items()
                                            if not name.startswith("disentanglement") and name not in CSV_ONLY]
    if "eraser_comparison" in tables:
        sections.append(("Eraser comparison (LEACE vs QR, summary)", _eraser_summary(tables["eraser_comparison"])))
    md = [header] + [f"## {title}\n\n{_md_table(table)}\n" for title, table in sections]
    md.append("Full per-layer tables: " + ", ".join(f"`{n}.csv`" for n in tables
                                                     if n.startswith("disent") or n in CSV_ONLY) + "\n")
    (out / "report.md").write_text("\n".join(md))
    html = ["<html><head><meta charset='utf-8'><title>CPD Explorer report</title></head><body>",
            f"<pre>{header}</pre>"]
    html += [f"<h2>{title}</h2>{table.to_html(index=False, float_format=lambda v: f'{v:.3f}')}"
             for title, table in sections]
    html += [f"<h2>{title}</h2>{div}" for title, div in _figures(tables)]
    (out / "report.html").write_text("\n".join(html + ["</body></html>"]))
    (out / "config.json").write_text(json.dumps({**asdict(config), "seconds": seconds, "machine": machine,
                                                 "compute_seconds": compute_seconds},
                                                indent=1, default=list))
    return out / "report.md"
