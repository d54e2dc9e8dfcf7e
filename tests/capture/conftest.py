import pytest

from opentelemetry_instrumentation_corevital.capture import decoding_loop


@pytest.fixture(autouse=True)
def decoding_loop_removed_afterwards():
    """Capture tests drive sessions without the instrumentor: the first session installs the
    decoding-loop wrappers, which only uninstrument() removes; remove them after each test."""
    yield
    decoding_loop.uninstall()
