import pytest

from opentelemetry_instrumentation_corevital.capture import attention_registry


@pytest.fixture(autouse=True)
def attention_probes():
    """The registry wrapper instrument() installs; capture tests drive sessions without the instrumentor."""
    attention_registry.install()
    yield
    attention_registry.uninstall()
