"""The torch layer never imports scikit-learn, skorch or the estimator layer."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sklearn_arcsm"
TORCH_LAYER = [
    *sorted((PACKAGE / "nn").glob("*.py")),
    *(
        PACKAGE / f"{name}.py"
        for name in (
            "adaptive",
            "ais",
            "bounds",
            "entropy",
            "objectives",
            "quadrature",
            "restoration",
            "sampling",
            "vae",
        )
    ),
]
FORBIDDEN = (
    "sklearn",
    "skorch",
    "sklearn_arcsm._",
    "sklearn_arcsm.callbacks",
    "sklearn_arcsm.demo",
)


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize("path", TORCH_LAYER, ids=lambda p: p.stem)
def test_torch_layer_modules_import_only_torch_and_each_other(path):
    assert path.exists()
    bad = [
        name
        for name in _imports(path)
        if any(
            name == f or name.startswith(f if f.endswith("_") else f + ".")
            for f in FORBIDDEN
        )
    ]
    assert not bad, f"{path.name} imports {bad}: the torch layer must stay pure torch"
