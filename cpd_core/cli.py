"""Command line: `python -m cpd_core <command>`. Bad input ends with a one-line message, not a traceback.

Stage: interface (the command line over every stage).
"""

from __future__ import annotations

import json
import sys
import time
from functools import wraps
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from cpd_core.errors import CPDInputError, listed

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="CPD Explorer: what atomistic models encode beyond composition.")


def friendly_errors(func):
    """Turn CPDInputError into `error: <message>` on stderr and exit code 2."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CPDInputError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2)

    return wrapper


def load_array(path: Path, what: str) -> np.ndarray:
    """Load a .npy (or the single array of a .npz / a whitespace or comma separated text file)."""
    if not path.is_file():
        raise CPDInputError(f"{what} file not found: {path}.")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if len(z.files) != 1:
                    raise CPDInputError(f"{what} file {path} holds {len(z.files)} arrays; give a .npy or a one-array .npz.")
                return z[z.files[0]]
        return np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=1)
    except CPDInputError:
        raise
    except Exception as exc:
        raise CPDInputError(f"Could not read {what} file {path} ({type(exc).__name__}: {exc}); give a .npy array.") from exc


@app.command()
@friendly_errors
def datasets(as_json: bool = typer.Option(False, "--json", help="Print a JSON list.")):
    """List the datasets with sizes, targets and availability."""
    from dataclasses import asdict

    from cpd_core.data import list_datasets

    infos = list_datasets()
    if as_json:
        typer.echo(json.dumps([asdict(i) for i in infos], indent=1))
        return
    for info in infos:
        state = "available" if info.available else "UNAVAILABLE"
        size = f"{info.size:,}" if info.size else "?"
        typer.echo(f"{info.name:6s} {size:>8s} {info.kind:9s} {state}  {info.description}")
        typer.echo("       targets: " + ", ".join(f"{t} [{u}]" for t, u in info.targets.items()))
        if info.message:
            typer.echo(f"       {info.message}")


@app.command()
@friendly_errors
def probe(
    features: Path = typer.Option(..., help="Features H, (n, d) .npy"),
    composition: Path = typer.Option(..., help="Composition C, (n, k) .npy (element counts or fractions)"),
    target: Path = typer.Option(..., help="Target y, (n,) .npy"),
    probe_name: str = typer.Option("ridge", "--probe", help="ridge | mlp | gbt"),
    folds: int = typer.Option(5, help="Number of shuffled K-fold splits"),
    seed: int = typer.Option(0, help="Seed of the fold shuffle and the probes"),
    projection: str = typer.Option("fold", help="fold (fit on training rows) | transductive"),
    criterion: str = typer.Option("kfold", help="Ridge alpha selection: kfold (nested K-fold CV of the whole "
                                                "pipeline) | loo (exact leave-one-out) | gcv"),
    split: str = typer.Option("kfold", help="kfold (--folds shuffled folds) | fixed (one seeded 80/20 split)"),
    eraser: str = typer.Option("qr", help="Composition eraser for R²_geom: qr (least-squares projection on "
                                          "[1 | C]) | leace (concept erasure)"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
):
    """R²_full, R²_comp and R²_geom of one target with shuffled K-fold CV."""
    from cpd_core.engine.probes import ridge_params
    from cpd_core.engine.projection import eraser_params
    from cpd_core.engine.scores import cpd_scores

    H = load_array(features, "features")
    C = load_array(composition, "composition")
    for what, path, array in (("Features", features, H), ("Composition", composition, C)):
        if array.ndim != 2:
            raise CPDInputError(
                f"{what} must be a 2-D array (one row per structure); {path} has shape {array.shape}. Reshape it "
                "and save again: a single column as a.reshape(-1, 1), per-structure blocks as a.reshape(len(a), -1).")
    y = load_array(target, "target")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise CPDInputError(f"Target must be one column, got shape {y.shape}.")
    params = ridge_params(probe_name, criterion)
    result = cpd_scores(H, C, y, probe=probe_name, folds=folds, seed=seed, projection=projection,
                        probe_params=params, split=split, projector_params=eraser_params(eraser))[0]
    out = result.to_dict()
    if out["n_dropped"]:
        typer.echo(f"warning: dropped {out['n_dropped']} structure(s) whose target is NaN or infinite; "
                   f"{out['n']} used.", err=True)
    if as_json:
        typer.echo(json.dumps(out))
        return
    for part in ("full", "comp", "geom"):
        typer.echo(f"R²_{part:4s} {out[f'r2_{part}']:+.3f} ± {out[f'r2_{part}_std']:.3f}")
    typer.echo(f"n={out['n']} (dropped {out['n_dropped']} non-finite targets), probe={probe_name}, "
               f"{'one fixed 80/20 split' if split == 'fixed' else f'{folds}-fold shuffled'} (seed {seed}), "
               f"projection={projection}, eraser={eraser}")


@app.command()
@friendly_errors
def models(as_json: bool = typer.Option(False, "--json", help="Print a JSON list of objects.")):
    """List every model with family, irreps per layer and whether it runs here offline."""
    from cpd_core.models import list_models

    rows = list_models()
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    for row in rows:
        state = "offline" if row["offline"] else "needs download"
        typer.echo(f"{row['id']:22s} {row['family']:28s} {state:15s} cutoff {row['cutoff']} Å, "
                   f"elements {' '.join(row['elements'][:12])}{' ...' if len(row['elements']) > 12 else ''}")
        for layer, irreps in row["layers"].items():
            typer.echo(f"    {layer:24s} {irreps}")


# options shared by the commands that take structures and several models
INPUT_OPTION = typer.Option(None, "--input", help="Any structure file ase.io reads")
DATASET_OPTION = typer.Option(None, help="qm9 | mp")
N_OPTION = typer.Option(None, help="Subset size (with --dataset)")
MODELS_OPTION = typer.Option(..., help="Comma-separated model ids (see `models`)")
WORKERS_OPTION = typer.Option(1, help="Dask worker processes of an embedded local cluster (one model copy and one "
                                      "torch thread each); 1: no cluster")
SCHEDULER_OPTION = typer.Option(None, help="Dask scheduler of an existing cluster, e.g. tcp://host:8786 (or set "
                                           "CPD_DASK_SCHEDULER)")


def _model_list(models: str) -> list[str]:
    ids = [m.strip() for m in models.split(",") if m.strip()]
    if not ids:
        raise CPDInputError("Give at least one model id in --models.")
    return ids


def _structures_for(input_file: Optional[Path], dataset: Optional[str], n: Optional[int], seed: int,
                    drop_empty: bool = False):
    """(structures, frame numbers of the structures with no atoms that were left out)."""
    from cpd_core.data import load_dataset
    from cpd_core.data.userfiles import read_structure_file

    if (input_file is None) == (dataset is None):
        raise CPDInputError("Give exactly one of --input FILE or --dataset NAME.")
    if input_file is not None:
        return read_structure_file(input_file, drop_empty=drop_empty)
    structures = load_dataset(dataset, n=n, seed=seed)
    if n is not None and n > len(structures):
        typer.echo(f"warning: --n {n:,} is more than the {len(structures):,} structures of {dataset}; using all of "
                   "them.", err=True)
    return structures, []


def _check_degenerate(structures, cutoff: float, drop: bool):
    """Warn about (or drop) degenerate structures; returns the structures to embed and the metadata record."""
    from cpd_core.data.degenerate import describe_degenerate, find_degenerate

    found = find_degenerate(structures, cutoff)
    record = {**found.to_dict(), "dropped": bool(drop and found.indices()),
              "ids": structures.table["id"].astype(str).to_numpy()[found.indices()].tolist()}
    for line in describe_degenerate(found, structures):
        typer.echo(f"warning: {line} " + ("Dropped (--drop-degenerate)." if drop else
                                          "Kept; --drop-degenerate drops them."), err=True)
    if drop and found.indices():
        keep = np.setdiff1d(np.arange(len(structures)), found.indices())
        if keep.size == 0:
            raise CPDInputError("Every structure is degenerate; nothing is left to embed.")
        structures = structures.subset(keep, name=structures.name)
    return structures, record


def _write_npz(out: Path, **arrays) -> None:
    """np.savez through a temporary file, then rename: a killed run never leaves a broken output."""
    from cpd_core.representations.cache import atomic_write

    out.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(out, write)


@app.command()
@friendly_errors
def embed(
    model: str = typer.Option(..., help="Model id (see `models`)"),
    out: Path = typer.Option(..., help="Output .npz"),
    input_file: Optional[Path] = typer.Option(None, "--input", help="Any structure file ase.io reads"),
    dataset: Optional[str] = typer.Option(None, help="qm9 | mp"),
    n: Optional[int] = typer.Option(None, help="Subset size (with --dataset)"),
    seed: int = typer.Option(0, help="Subset seed (with --dataset)"),
    pooling: str = typer.Option("mean", help="mean | sum"),
    invariant: str = typer.Option("pooled_norm", help="L>0 invariant: pooled_norm | atom_norm"),
    batch_size: Optional[int] = typer.Option(None, help="Structures per forward pass"),
    workers: int = WORKERS_OPTION,
    scheduler: Optional[str] = SCHEDULER_OPTION,
    workers_write_cache: bool = typer.Option(False, "--workers-write-cache",
                                             help="Dask workers write the chunk files into the cache directory "
                                                  "themselves (it must be on a file system they share)"),
    chunk_size: int = typer.Option(64, help="Structures per saved chunk at most (chunks are also cut to about 30 s "
                                            "of compute; an interrupted run resumes after the last saved chunk)"),
    drop_degenerate: bool = typer.Option(False, "--drop-degenerate",
                                         help="Drop structures with no atoms, an isolated atom (no neighbour within "
                                              "the model's cutoff) or overlapping atoms (< 0.5 Å); default: warn "
                                              "and keep (empty ones cannot be kept)"),
    trust_model_file: bool = typer.Option(False, "--trust-model-file",
                                          help="Allow unpickling the mace-file:<path> model named by --model "
                                               "(a .model file is a pickle: loading it runs code from the file)"),
):
    """Per-structure invariant vectors of every layer and L channel, written as `<layer>/L<l>` arrays."""
    from tqdm import tqdm

    from cpd_core.representations.cache import ExtractionInterrupted, cached_invariants
    from cpd_core.cluster import scheduler_address
    from cpd_core.representations.invariants import INVARIANTS, POOLINGS, feature_key
    from cpd_core.models import describe_model

    if pooling not in POOLINGS or invariant not in INVARIANTS:
        raise CPDInputError(f"--pooling must be one of {POOLINGS} and --invariant one of {INVARIANTS}.")
    if workers < 1:
        raise CPDInputError(f"--workers must be at least 1 (got {workers}).")
    scheduler = scheduler_address(scheduler)
    if trust_model_file:
        from cpd_core.models.mace import FILE_PREFIX, trust_model_file as trust

        if not model.startswith(FILE_PREFIX):
            raise CPDInputError("--trust-model-file applies to --model mace-file:<path> only.")
        trust(model[len(FILE_PREFIX):])
    structures, empty = _structures_for(input_file, dataset, n, seed, drop_empty=drop_degenerate)
    if empty:
        typer.echo(f"warning: {len(empty)} structure(s) have no atoms (frame {listed([str(i) for i in empty])}, "
                   "counted from 0). Dropped (--drop-degenerate).", err=True)
    info = describe_model(model)
    structures, degenerate = _check_degenerate(structures, info.cutoff, drop_degenerate)
    degenerate["empty_frames_dropped"] = empty
    with tqdm(total=len(structures), unit="structure", desc=model) as bar:
        def progress(done, total):
            bar.update(done - bar.n)

        try:
            arrays = cached_invariants(model, structures, progress=progress, batch_size=batch_size,
                                       workers=workers, chunk_size=chunk_size, scheduler=scheduler,
                                       workers_write=workers_write_cache,
                                       log=lambda message: typer.echo(message, err=True))
        except ExtractionInterrupted as stop:
            bar.close()
            typer.echo(f"interrupted: {stop.saved:,} of {stop.total:,} structures are saved in the cache; rerun the "
                       "same command to resume. Nothing was written to --out.", err=True)
            raise typer.Exit(code=130)
    selected = {}
    for key in arrays:
        layer, l_part, pool = key.split("/")[:3]
        inv = key.split("/")[3] if key.count("/") == 3 else None
        if pool == pooling and (inv is None or inv == invariant):
            selected[f"{layer}/{l_part}"] = arrays[key]
    meta = {"model": info.to_dict(), "structures": structures.name, "n": len(structures),
            "ids": structures.table["id"].astype(str).tolist(), "pooling": pooling, "invariant": invariant,
            "keys": sorted(selected), "key_format": "<layer>/L<l>, rows in input order",
            "example_full_key": feature_key(next(iter(info.layers)), 0, pooling), "degenerate": degenerate}
    _write_npz(out, __meta__=np.array(json.dumps(meta)), **selected)
    typer.echo(f"wrote {len(selected)} arrays for {len(structures)} structures to {out}")


@app.command()
@friendly_errors
def train(
    arch: str = typer.Option(..., help="mace | visnet | schnet | painn | dimenetpp"),
    target: str = typer.Option(..., help="QM9 target: gap (mean readout) | U0 (sum readout)"),
    n_train: int = typer.Option(..., help="Training molecules"),
    epochs: int = typer.Option(..., help="Maximum epochs (rerunning resumes after the last saved epoch)"),
    seed: int = typer.Option(0, help="Seed of the train/validation/test split and of the initialisation"),
    out: Path = typer.Option(..., help="Output folder, e.g. zoo/mace-qm9-gap"),
    n_val: Optional[int] = typer.Option(None, help="Validation molecules (standard split: default the 10,000 of its "
                                                    "pool; random: max(10% of n_train, 100))"),
    n_test: Optional[int] = typer.Option(None, help="Test molecules (standard split: default the 10,831 of its "
                                                     "pool; random: max(10% of n_train, 100))"),
    batch_size: Optional[int] = typer.Option(None, help="Molecules per batch"),
    lr: Optional[float] = typer.Option(None, help="Learning rate"),
    patience: int = typer.Option(10, help="Early stopping: epochs without validation improvement"),
    max_minutes: Optional[float] = typer.Option(None, help="Stop this invocation before an epoch would pass this many minutes; "
                                                            "rerun the same command to continue"),
    split: str = typer.Option("standard", help="standard (QM9's 110k/10k/rest pools) | random (older zoo runs)"),
    device: str = typer.Option("cpu", help="cpu | cuda (recorded in the card)"),
):
    """Train a MACE / ViSNet / SchNet / PaiNN / DimeNet++ on a QM9 target and write a checkpoint with its model card
    (zoo)."""
    from cpd_core.training import train as run_training

    run_training(arch, target, n_train, epochs, seed, out, n_val=n_val, n_test=n_test, batch_size=batch_size,
                 lr=lr, patience=patience, max_minutes=max_minutes, split=split, device=device, log=typer.echo)


@app.command()
@friendly_errors
def report(
    out: Path = typer.Option(Path("reports/latest"), help="Output folder (report.md, report.html, CSVs)"),
    size: str = typer.Option("small", help="small (minutes here) | medium | full (real runs)"),
    qm9_n: Optional[int] = typer.Option(None, help="Override the number of QM9 molecules"),
    models: Optional[str] = typer.Option(None, help="Comma-separated QM9 model ids (default: the preset's)"),
    mp_models: Optional[str] = typer.Option(None, help="Comma-separated MP model ids; '' for none"),
    workers: int = WORKERS_OPTION,
    scheduler: Optional[str] = SCHEDULER_OPTION,
):
    """Run the paper's experiments and write a Markdown + HTML report with claims, tables and figures.

    With --workers N or --scheduler, extraction and the probe grids run on that Dask cluster."""
    import contextlib

    from cpd_core.cluster import dask_client, scheduler_address
    from cpd_core.study.report import ReportConfig, run_experiments, write_report

    try:
        config = ReportConfig.preset(size)
    except ValueError as exc:
        raise CPDInputError(str(exc)) from exc
    if qm9_n is not None:
        config.qm9_n = qm9_n
    if models:
        config.qm9_models = [m.strip() for m in models.split(",") if m.strip()]
    if mp_models is not None:
        config.mp_models = [m.strip() for m in mp_models.split(",") if m.strip()]
    start = time.perf_counter()
    timings: dict = {}
    if workers < 1:
        raise CPDInputError(f"--workers must be at least 1 (got {workers}).")
    scheduler = scheduler_address(scheduler)
    echo = lambda msg: typer.echo(msg, err=True)  # noqa: E731
    cluster = dask_client(workers, scheduler, echo) if workers > 1 or scheduler else contextlib.nullcontext()
    with cluster:
        tables = run_experiments(config, log=echo, timings=timings)
    path = write_report(tables, config, out, time.perf_counter() - start, sum(timings.values()))
    typer.echo(f"wrote {path} and {path.with_suffix('.html')}")


@app.command()
@friendly_errors
def cka(
    models: str = MODELS_OPTION,
    out: Path = typer.Option(..., help="Output CSV: one row per ordered pair of layers"),
    input_file: Optional[Path] = INPUT_OPTION,
    dataset: Optional[str] = DATASET_OPTION,
    n: Optional[int] = N_OPTION,
    seed: int = typer.Option(0, help="Subset seed (with --dataset)"),
    residual: bool = typer.Option(False, "--residual", help="Remove the part linear in composition first"),
    pooling: str = typer.Option("mean", help="mean | sum"),
    invariant: str = typer.Option("pooled_norm", help="L>0 invariant: pooled_norm | atom_norm"),
):
    """Debiased linear CKA between every pair of layers of the given models on the same structures."""
    from cpd_core.study.analysis import layer_similarity

    structures, _ = _structures_for(input_file, dataset, n, seed)
    ids = _model_list(models)
    table = layer_similarity(structures, ids, residual=residual, pooling=pooling, invariant=invariant)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    cross = table[table.model_a != table.model_b]
    summary = f"; across models CKA {cross.cka.min():.2f} to {cross.cka.max():.2f}" if len(cross) else ""
    typer.echo(f"wrote {len(table)} layer pairs ({'composition removed' if residual else 'raw'}) for "
               f"{len(structures)} structures to {out}{summary}")


@app.command("node-cpd")
@friendly_errors
def node_cpd(
    models: str = MODELS_OPTION,
    out: Path = typer.Option(..., help="Output CSV: one row per model, layer, L channel and per-atom target"),
    input_file: Optional[Path] = INPUT_OPTION,
    dataset: Optional[str] = DATASET_OPTION,
    n: Optional[int] = N_OPTION,
    seed: int = typer.Option(0, help="Subset seed and fold seed"),
    targets: Optional[str] = typer.Option(None, help="Comma-separated per-atom targets (default: all available: "
                                                     "mulliken for QM9, coordination, centroid_distance)"),
    folds: int = typer.Option(5, help="Folds, drawn over molecules"),
):
    """Node-level CPD: per-atom invariants probed for per-atom targets, per-atom composition removed."""
    from cpd_core.study.node_level import node_level

    structures, _ = _structures_for(input_file, dataset, n, seed)
    ids = _model_list(models)
    chosen = [t.strip() for t in targets.split(",") if t.strip()] if targets else None
    table = node_level(structures, ids, chosen, folds=folds, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    typer.echo(f"wrote {len(table)} rows ({table['n_atoms'].iloc[0]:,} atoms of {len(structures):,} structures) "
               f"to {out}")


@app.command("export-chemiscope")
@friendly_errors
def export_chemiscope(
    model: str = typer.Option(..., help="Model id (see `models`)"),
    out: Path = typer.Option(..., help="Output file, ending in .json.gz (opens in chemiscope's viewer)"),
    layer: Optional[str] = typer.Option(None, help="Layer (default: the model's last)"),
    channel: str = typer.Option("L0", help="L0, L1, ... or all"),
    input_file: Optional[Path] = INPUT_OPTION,
    dataset: Optional[str] = DATASET_OPTION,
    n: Optional[int] = N_OPTION,
    seed: int = typer.Option(0, help="Subset seed, map seed and fold seed"),
    target: Optional[str] = typer.Option(None, help="Add each structure's out-of-fold probe error for this target"),
    method: str = typer.Option("pca", help="pca | umap"),
    pooling: str = typer.Option("mean", help="mean | sum"),
    invariant: str = typer.Option("pooled_norm", help="L>0 invariant: pooled_norm | atom_norm"),
):
    """An embedding map (raw and composition-removed) with targets and probe errors, for chemiscope."""
    from cpd_core.models import describe_model
    from cpd_core.study.analysis import feature_sets
    from cpd_core.study.export import chemiscope_export

    structures, _ = _structures_for(input_file, dataset, n, seed)
    layer = layer or list(describe_model(model).layers)[-1]
    feats = feature_sets(structures, [model], pooling, invariant, combined="always")
    if (model, layer, channel) not in feats:
        options = ", ".join(f"{k[1]}/{k[2]}" for k in feats)
        raise CPDInputError(f"{model} has no layer/channel {layer}/{channel}; choose one of {options}.")
    path = chemiscope_export(out, structures, feats[(model, layer, channel)], f"{model} {layer} {channel}",
                             target=target, method=method, seed=seed)
    typer.echo(f"wrote {path} ({len(structures)} structures); open it at chemiscope.org or with chemiscope.show")


@app.command("precompute-default")
@friendly_errors
def precompute_default():
    """Compute the dashboard's first view (QM9 subset, default models) into the cache, as install.sh does."""
    from cpd_core.study.default_view import precompute

    precompute(log=lambda message: typer.echo(message))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
