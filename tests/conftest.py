"""Shared fixtures: the real OTel SDK with in-memory exporters, and tiny models built from configs."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from opentelemetry.sdk._logs import LoggerProvider  # noqa: E402
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor  # noqa: E402

VOCAB = 256


def _build(model_class, config, attn_implementation="sdpa"):
    torch.manual_seed(0)
    config._attn_implementation = attn_implementation
    model = model_class(config).eval()
    model.generation_config.pad_token_id = config.pad_token_id
    return model


def build_gpt2(attn_implementation="sdpa", n_layer=2):
    config = GPT2Config(
        n_layer=n_layer, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=1024,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return _build(GPT2LMHeadModel, config, attn_implementation)


def build_llama(attn_implementation="sdpa", layers=3):
    config = LlamaConfig(
        num_hidden_layers=layers, hidden_size=64, intermediate_size=128, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=1024,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return _build(LlamaForCausalLM, config, attn_implementation)


def build_qwen2(attn_implementation="sdpa"):
    config = Qwen2Config(
        num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=1024,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return _build(Qwen2ForCausalLM, config, attn_implementation)


def build_t5(attn_implementation="sdpa"):
    config = T5Config(
        num_layers=2, num_decoder_layers=2, d_model=32, d_ff=64, num_heads=4, d_kv=8,
        vocab_size=VOCAB, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    return _build(T5ForConditionalGeneration, config, attn_implementation)


BUILDERS = {"gpt2": build_gpt2, "llama": build_llama, "qwen2": build_qwen2, "t5": build_t5}


@pytest.fixture(scope="session")
def models():
    """One instance of each tiny model per session (sdpa, the transformers default)."""
    return {name: build() for name, build in BUILDERS.items()}


def prompt_ids(batch=1, length=6, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=generator)


class Telemetry:
    def __init__(self):
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metrics])
        self.logs = InMemoryLogRecordExporter()
        self.logger_provider = LoggerProvider()
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.logs))

    def log_events(self, name):
        """Log-based events named `name` (the SDK's ReadableLogRecords)."""
        return [r for r in self.logs.get_finished_logs() if r.log_record.event_name == name]

    def finished(self):
        return list(self.spans.get_finished_spans())

    def only_span(self):
        spans = self.finished()
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]

    def metric_points(self, name):
        data = self.metrics.get_metrics_data()
        points = []
        for resource_metrics in data.resource_metrics if data else []:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points

    def metric(self, name):
        data = self.metrics.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else []:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        return metric
        return None


@pytest.fixture
def telemetry():
    return Telemetry()


@pytest.fixture
def instrument(telemetry):
    """Call instrument(**settings) with the test's providers; always uninstrumented afterwards."""
    instrumentor = CoreVitalInstrumentor()

    def _instrument(**settings):
        instrumentor.instrument(
            tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
            logger_provider=telemetry.logger_provider, **settings
        )
        return instrumentor

    yield _instrument
    instrumentor.uninstrument()
