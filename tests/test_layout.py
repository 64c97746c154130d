"""The package layout: public names importable from `cpd_core`, stage subpackages importable one-way, and a
module docstring naming its job in every module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("data", "models", "representations", "engine", "study", "training")


def test_public_names_import_from_the_top_level_without_loading_torch():
    code = ("import sys, cpd_core; assert 'torch' not in sys.modules, 'import cpd_core loaded torch'; "
            "from cpd_core import cpd_scores, cpd_grid, CompositionProjector, RidgeProbe, make_probe, load_dataset, "
            "StructureSet, composition_matrix, CPDInputError, describe_model, model_ids; "
            "from cpd_core.engine.scores import cpd_scores as s; assert s is cpd_scores; "
            "from cpd_core.engine.projection import CompositionProjector as P; assert P is CompositionProjector; "
            "print(sorted(cpd_core.__all__) == sorted(set(cpd_core.__all__)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_unknown_public_name_is_an_attribute_error():
    import cpd_core

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cpd_core.nope  # noqa: B018


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cpd_core."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("cpd_core.")}
    return names


def test_stages_import_only_earlier_stages():
    """data -> models -> representations -> engine -> study; training may use data and models."""
    allowed = {
        "data": {"data"},
        "models": {"data", "models"},
        "representations": {"data", "models", "representations"},
        "engine": {"engine"},
        "study": {"data", "models", "representations", "engine", "study"},
        "training": {"data", "models", "training"},
    }
    common = {"errors", "paths", "cluster"}
    for stage in STAGES:
        for path in (ROOT / "cpd_core" / stage).rglob("*.py"):
            used = _imports(path) - common
            assert used <= allowed[stage], f"{path.relative_to(ROOT)} imports {sorted(used - allowed[stage])}"


def test_every_module_says_what_it_does_and_its_stage():
    for path in (ROOT / "cpd_core").rglob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        stage = path.relative_to(ROOT / "cpd_core").parts[0]
        expected = f"Stage: {stage}" if stage in STAGES else "Stage: "
        assert len(doc) > 40 and expected in doc, f"{path.relative_to(ROOT)}: docstring lacks a job or '{expected}'"
    for folder in ("dashboard", "pages"):
        assert (ROOT / folder).is_dir()
        for path in (ROOT / folder).rglob("*.py"):
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert len(doc) > 20, f"{path.relative_to(ROOT)} has no module docstring"


def test_the_readme_python_example_runs():
    """The README's Python API example, run as written (it prints R²_full, R²_comp, R²_geom)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    code = section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 9)]
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    r2 = [float(v) for v in out.stdout.strip().splitlines()[-1].split()]  # mace prints a notice first
    assert len(r2) == 3 and r2[0] > r2[2] > 0.0
