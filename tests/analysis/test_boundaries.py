"""Analysis stays pure: numpy, stdlib and the package's own summaries/profiles only."""

import ast
from pathlib import Path

import pytest

import opentelemetry_instrumentation_corevital.analysis as analysis
import opentelemetry_instrumentation_corevital.profiles as profiles

FORBIDDEN = ("torch", "opentelemetry", "transformers")
SOURCES = sorted(Path(analysis.__file__).parent.glob("*.py")) + sorted(Path(profiles.__file__).parent.glob("*.py"))


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_no_torch_or_opentelemetry_imports(source):
    tree = ast.parse(source.read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0]
    assert not [name for name in imported if name.split(".")[0] in FORBIDDEN]
