"""Metric instruments, with the semantic-convention names, units and bucket boundaries."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import Counter, Histogram, Meter
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics

DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_USAGE_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)
TIME_TO_FIRST_TOKEN_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)
TIME_PER_OUTPUT_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
RISK_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
ENTROPY_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0)

RISK_SCORE = "corevital.risk.score"
LOGITS_ENTROPY = "corevital.logits.entropy"
HEALTH_FLAGS = "corevital.health.flags"


@dataclass(frozen=True)
class Instruments:
    operation_duration: Histogram
    server_request_duration: Histogram
    token_usage: Histogram
    time_to_first_token: Histogram
    time_per_output_token: Histogram
    risk_score: Histogram
    logits_entropy: Histogram
    health_flags: Counter

    @classmethod
    def create(cls, meter: Meter) -> "Instruments":
        return cls(
            operation_duration=meter.create_histogram(
                gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION,
                unit="s",
                description="Duration of one generate call",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
            # gen-ai-metrics.md: the model runs in-process, so this process is also the GenAI server
            server_request_duration=meter.create_histogram(
                gen_ai_metrics.GEN_AI_SERVER_REQUEST_DURATION,
                unit="s",
                description="Duration of one generate call, as the model server sees it",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
            token_usage=meter.create_histogram(
                gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE,
                unit="{token}",
                description="Input and output tokens of one generate call",
                explicit_bucket_boundaries_advisory=TOKEN_USAGE_BUCKETS,
            ),
            time_to_first_token=meter.create_histogram(
                gen_ai_metrics.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
                unit="s",
                description="Time until the first new token existed, measured in-process",
                explicit_bucket_boundaries_advisory=TIME_TO_FIRST_TOKEN_BUCKETS,
            ),
            time_per_output_token=meter.create_histogram(
                gen_ai_metrics.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN,
                unit="s",
                description="Time per output token after the first",
                explicit_bucket_boundaries_advisory=TIME_PER_OUTPUT_TOKEN_BUCKETS,
            ),
            risk_score=meter.create_histogram(
                RISK_SCORE,
                unit="1",
                description="CoreVital risk score of one generation (max over returned sequences)",
                explicit_bucket_boundaries_advisory=RISK_BUCKETS,
            ),
            logits_entropy=meter.create_histogram(
                LOGITS_ENTROPY,
                unit="bit",
                description="Entropy of the raw next-token distribution, one record per generated token",
                explicit_bucket_boundaries_advisory=ENTROPY_BUCKETS,
            ),
            health_flags=meter.create_counter(
                HEALTH_FLAGS,
                unit="{flag}",
                description="Generations on which a CoreVital health flag was raised",
            ),
        )
