import pytest

from opentelemetry_instrumentation_corevital.capture import attention_registry, decoding_loop


@pytest.fixture(autouse=True)
def attention_probes():
    """The wrappers instrument() installs; capture tests drive sessions without the instrumentor."""
    attention_registry.install()
    decoding_loop.install()
    yield
    decoding_loop.uninstall()
    attention_registry.uninstall()
