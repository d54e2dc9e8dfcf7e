"""Layer discovery across architectures, and the reason given when attention cannot be seen."""

from opentelemetry_instrumentation_corevital.capture.layout import find_layout
from tests.families.zoo import models


def test_a_hybrid_stack_of_several_layer_classes_is_found_whole():
    model = models("jamba")[0]
    layout = find_layout(model)
    assert layout.decoder_layers == list(model.model.layers)
    assert {index for index, _ in layout.attention_modules.values()} == {1}  # only layer 1 attends


def test_attention_run_outside_the_registry_is_named_with_the_fix():
    reason = find_layout(models("falcon")[0]).never_observed_reason()
    assert reason.startswith("FalconAttention runs its 'sdpa' attention itself") and "attn_implementation='eager'" in reason
    assert find_layout(models("llama")[0]).unregistered_attention == ""  # Llama goes through the registry
