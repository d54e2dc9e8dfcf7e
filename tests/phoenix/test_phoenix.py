"""Arize Phoenix end to end: a real Phoenix server on 127.0.0.1, spans over OTLP/HTTP, read back
through Phoenix's own REST and GraphQL APIs.

    instrumented generate ──OTLP/HTTP──▶ Phoenix 20.26.1 (.phoenix-venv, scripts/ci/phoenix.sh)
    PhoenixRiskAnnotator ──REST /v1/span_annotations──▶ the same Phoenix

What a user of Phoenix relies on: the span is an LLM span with the model's token counts, the
Input/Output columns hold the prompt and completion text (only with content capture), the risk
headline is in `metadata`, the risk is a CODE annotation, the filters docs/backends.md gives
find the risky run and only it, a chat keeps its roles in Phoenix's message view, and the
project is the one named in the resource.

Skipped where Phoenix is not installed; under CI=true it must run (`.ci/run` installs it).
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import torch
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from opentelemetry_instrumentation_corevital import CoreVitalInstrumentor
from opentelemetry_instrumentation_corevital.phoenix import PhoenixRiskAnnotator
from tests.conftest import build_gpt2, prompt_ids
from tests.support.delivery import LOOPBACK, RANDOM_MODEL_PROFILE, ROOT, background, free_port, missing
from tests.support.tokenizers import CHAT, chat_tokenizer, tiny_tokenizer

PHOENIX_PYTHON = Path(os.environ.get("COREVITAL_PHOENIX_PYTHON", ROOT / ".phoenix-venv" / "bin" / "python"))
SERVE = Path(__file__).resolve().parent / "serve_loopback.py"
STARTUP_TIMEOUT_S = 180  # first start migrates its SQLite database; slow on 2 cores
ARRIVAL_TIMEOUT_S = 30
PROJECT = "corevital-phoenix-test"
NEW_TOKENS = 5


class Phoenix:
    def __init__(self, port: int):
        self.base = f"http://{LOOPBACK}:{port}"

    def get(self, path: str, **query):
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(query, doseq=True)}" if query else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def graphql(self, query: str, **variables):
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(f"{self.base}/graphql", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        assert "errors" not in answer, answer
        return answer["data"]

    def spans(self, project: str) -> list[dict]:
        return self.get(f"/v1/projects/{project}/spans")["data"]

    def annotations(self, project: str, span_ids: list[str]) -> list[dict]:
        return self.get(f"/v1/projects/{project}/span_annotations", span_ids=span_ids)["data"]

    def filtered(self, project: str, condition: str) -> set[str]:
        projects = {p["name"]: p["id"] for p in self.get("/v1/projects")["data"]}
        data = self.graphql(
            """query($id: ID!, $f: String!) { node(id: $id) { ... on Project {
                 spans(first: 100, filterCondition: $f) { edges { node { spanId } } } } } }""",
            id=projects[project], f=condition,
        )
        return {edge["node"]["spanId"] for edge in data["node"]["spans"]["edges"]}


def _listening_addresses(ports: set[int]) -> list[str]:
    """Local addresses (hex, as /proc/net shows them) of the sockets listening on `ports`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.split(":")
            if state == "0A" and int(port, 16) in ports:
                found.append(address)
    return found


LOOPBACK_HEX = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory):
    if not PHOENIX_PYTHON.exists():
        missing("Arize Phoenix", "run `bash scripts/ci/phoenix.sh`")
    workdir = tmp_path_factory.mktemp("phoenix")
    http_port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_"))}
    env.update(
        PHOENIX_HOST=LOOPBACK, PHOENIX_PORT=str(http_port), PHOENIX_GRPC_PORT=str(grpc_port),
        PHOENIX_WORKING_DIR=str(workdir), PHOENIX_TELEMETRY_ENABLED="false",
    )
    with background([str(PHOENIX_PYTHON), str(SERVE)], workdir / "phoenix.log", env=env) as process:
        server = Phoenix(http_port)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert process.poll() is None, (workdir / "phoenix.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(f"{server.base}/healthz", timeout=1).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "Phoenix did not start in time"
                time.sleep(0.5)
        server.ports = {http_port, grpc_port}
        yield server


RISKY_PROFILE = {"risk_model": {"bias": 12.0}}


def export_runs(phoenix: Phoenix, content: bool) -> dict[str, dict]:
    """One risky and one healthy generate (tiny GPT-2), exported as an app would; returns them by label."""
    tokenizer = tiny_tokenizer()
    project = f"{PROJECT}-{'content' if content else 'private'}"
    provider = TracerProvider(resource=Resource.create({"openinference.project.name": project}))
    annotator = PhoenixRiskAnnotator(phoenix.base)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{phoenix.base}/v1/traces")))
    provider.add_span_processor(annotator)
    model = build_gpt2()
    runs = {}
    # a random model's near-uniform logits are an unsure `warning` under the default risk model; a
    # raised risk bias makes it `critical`, the delivery tests' profile makes it `healthy`
    for expected, overrides in (("critical", RISKY_PROFILE), ("healthy", RANDOM_MODEL_PROFILE)):
        instrumentor = CoreVitalInstrumentor()
        instrumentor.instrument(
            tracer_provider=provider, capture_message_content=content, profile_overrides=overrides
        )
        try:
            ids = prompt_ids(seed=len(runs) + 1)
            output = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, tokenizer=tokenizer)
        finally:
            instrumentor.uninstrument()
        runs[expected] = {
            "prompt": tokenizer.decode(ids[0], skip_special_tokens=True),
            "completion": tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True),
            "input_tokens": ids.shape[1],
        }
    assert provider.force_flush() and annotator.force_flush()
    provider.shutdown()
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while True:
        spans = phoenix.spans(project) if project in {p["name"] for p in phoenix.get("/v1/projects")["data"]} else []
        annotations = phoenix.annotations(project, [s["context"]["span_id"] for s in spans]) if spans else []
        if len(spans) == 2 and len(annotations) == 2:
            break
        assert time.monotonic() < deadline, f"{len(spans)} spans, {len(annotations)} annotations arrived"
        time.sleep(0.5)
    for span in spans:
        label = span["attributes"]["corevital.risk.label"]
        runs[label]["span"] = span
        runs[label]["annotations"] = [a for a in annotations if a["span_id"] == span["context"]["span_id"]]
    runs["project"] = project
    return runs


def wait_for_spans(phoenix: Phoenix, project: str, count: int) -> list[dict]:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while True:
        if project in {p["name"] for p in phoenix.get("/v1/projects")["data"]}:
            spans = phoenix.spans(project)
            if len(spans) >= count:
                return spans
        assert time.monotonic() < deadline, f"no {count} spans in {project}"
        time.sleep(0.5)


def test_phoenix_shows_a_chat_with_its_roles(phoenix):
    """A pipeline given chat messages: Phoenix lists a chat span whose message view keeps the roles."""
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = chat_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tokenizer) + 8, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    pipe = transformers.pipeline("text-generation", model=LlamaForCausalLM(config).eval(), tokenizer=tokenizer)
    project = f"{PROJECT}-chat"
    provider = TracerProvider(resource=Resource.create({"openinference.project.name": project}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{phoenix.base}/v1/traces")))
    instrumentor = CoreVitalInstrumentor()
    instrumentor.instrument(tracer_provider=provider, capture_message_content=True)
    try:
        result = pipe([CHAT], max_new_tokens=3, do_sample=False)
    finally:
        instrumentor.uninstrument()
    assert provider.force_flush()
    provider.shutdown()
    (span,) = wait_for_spans(phoenix, project, 1)
    attributes = span["attributes"]
    assert span["name"].startswith("chat ") and attributes["gen_ai.operation.name"] == "chat"
    roles = [attributes[f"llm.input_messages.{i}.message.role"] for i in range(2)]
    assert roles == ["system", "user"]
    assert attributes["llm.input_messages.1.message.content"] == "Capital of France?"
    reply = result[0][0]["generated_text"][-1]["content"]
    assert attributes["llm.output_messages.0.message.content"] == reply


def test_phoenix_listens_on_loopback_only(phoenix):
    addresses = _listening_addresses(phoenix.ports)
    assert len(addresses) >= 2  # HTTP and the gRPC receiver
    assert set(addresses) <= LOOPBACK_HEX, addresses


def test_phoenix_shows_an_llm_span_with_text_tokens_metadata_and_annotation(phoenix):
    runs = export_runs(phoenix, content=True)
    for label in ("critical", "healthy"):
        run = runs[label]
        span, attributes = run["span"], run["span"]["attributes"]
        assert span["span_kind"] == "LLM"
        assert span["name"] == "text_completion GPT2LMHeadModel"
        assert attributes["llm.token_count.prompt"] == run["input_tokens"]
        assert attributes["llm.token_count.completion"] == NEW_TOKENS
        assert attributes["input.value"] == run["prompt"] and attributes["input.mime_type"] == "text/plain"
        assert attributes["output.value"] == run["completion"] and attributes["output.mime_type"] == "text/plain"
        assert run["completion"].startswith("zq")
        # Phoenix turns the gen_ai messages (JSON strings) into its own message view
        assert attributes["llm.input_messages.0.message.role"] == "user"
        assert attributes["llm.input_messages.0.message.content"] == run["prompt"]
        assert attributes["llm.output_messages.0.message.content"] == run["completion"]
        assert attributes["metadata.risk_label"] == label
        assert attributes["metadata.risk_score"] == pytest.approx(attributes["corevital.risk.score"])
        (annotation,) = run["annotations"]
        assert annotation["name"] == "corevital.risk" and annotation["annotator_kind"] == "CODE"
        assert annotation["result"]["label"] == label
        assert annotation["result"]["score"] == pytest.approx(attributes["corevital.risk.score"])
        assert annotation["result"]["explanation"] == attributes["corevital.narrative"]
    risky = runs["critical"]["span"]["context"]["span_id"]
    for condition in (  # the filters docs/backends.md gives
        "metadata['risk_label'] == 'critical'",
        "attributes['corevital']['risk']['score'] >= 0.7",
        "annotations['corevital.risk'].label == 'critical'",
    ):
        assert phoenix.filtered(runs["project"], condition) == {risky}, condition


def test_phoenix_gets_no_text_without_content_capture(phoenix):
    runs = export_runs(phoenix, content=False)
    for label in ("critical", "healthy"):
        attributes = runs[label]["span"]["attributes"]
        # Phoenix fills output.value from gen_ai.response.model by itself: no text in it
        assert attributes.get("output.value", "{}") == '{"model": "GPT2LMHeadModel"}'
        assert not [key for key in attributes if key.startswith(("gen_ai.input", "gen_ai.output", "llm.input_messages"))]
        assert "zq" not in json.dumps(runs[label]["span"])
        assert runs[label]["annotations"][0]["result"]["label"] == label  # the risk still shows
