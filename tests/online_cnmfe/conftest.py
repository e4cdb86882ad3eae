"""Fixtures shared by the engine tests."""

from __future__ import annotations

import pytest

from tests.online_cnmfe.engine_harness import ResultsClient, endpoints


@pytest.fixture
def client(tmp_path):
    """A subscriber on the results endpoint of an engine started in ``tmp_path``."""
    c = ResultsClient(endpoints(tmp_path)[1])
    yield c
    c.close()
