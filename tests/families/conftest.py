"""The compatibility table: what each family's cases showed, written when asked for.

    pytest tests/families --compatibility-doc=docs/compatibility.md
"""

from __future__ import annotations

import pytest

from tests.families.compatibility import CompatibilityTable

OPTION = "--compatibility-doc"


def pytest_addoption(parser):
    parser.addoption(OPTION, default=None, help="write the model-compatibility table (markdown) to this path")


_TABLE = CompatibilityTable()


@pytest.fixture
def compatibility():
    return _TABLE


def pytest_sessionfinish(session):
    path = session.config.getoption(OPTION, default=None)
    if path and _TABLE.rows:
        _TABLE.write(path)
