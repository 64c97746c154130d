"""Command line: `python -m cpd_core <command>`. Bad input ends with a one-line message, not a traceback."""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from cpd_core.errors import CPDInputError

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
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
):
    """R²_full, R²_comp and R²_geom of one target with shuffled K-fold CV."""
    from cpd_core.cpd import cpd_scores

    H = load_array(features, "features")
    C = load_array(composition, "composition")
    y = load_array(target, "target")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise CPDInputError(f"Target must be one column, got shape {y.shape}.")
    result = cpd_scores(H, C, y, probe=probe_name, folds=folds, seed=seed, projection=projection)[0]
    out = result.to_dict()
    if as_json:
        typer.echo(json.dumps(out))
        return
    for part in ("full", "comp", "geom"):
        typer.echo(f"R²_{part:4s} {out[f'r2_{part}']:+.3f} ± {out[f'r2_{part}_std']:.3f}")
    typer.echo(f"n={out['n']} (dropped {out['n_dropped']} non-finite targets), probe={probe_name}, "
               f"{folds}-fold shuffled (seed {seed}), projection={projection}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
