from opentelemetry_instrumentation_corevital.analysis import HealthFlags, analyze
from opentelemetry_instrumentation_corevital.profiles import load_profile
from opentelemetry_instrumentation_corevital.summaries import RunSummaries

from tests.support.summaries import hidden_column, logit_column, make_run

PROFILE = load_profile("default")


def test_batch_aggregates_take_the_worst_and_the_union():
    run = make_run(steps=20, layers=6, sequences=3)
    run.logits[1, [2, 5], logit_column("entropy")] = 6.0
    run.logits[2, [7], logit_column("entropy")] = 5.0
    run.hidden[2, 9, 3, hidden_column("inf_count")] = 1
    result = analyze(run, PROFILE)
    assert [s.index for s in result.sequences] == [0, 1, 2]
    assert [s.label for s in result.sequences] == ["healthy", "healthy", "critical"]
    aggregate = result.aggregate
    assert aggregate.risk_score == 1.0 and aggregate.label == "critical" and aggregate.worst_sequence == 2
    assert aggregate.flags == HealthFlags(inf_detected=True, mid_layer_anomaly_detected=True, high_entropy_steps=3)
    assert aggregate.blamed_layers == [3]
    assert aggregate.failure_risk == 1.0
    assert aggregate.warning_signals[0] == "nan_or_inf"
    assert aggregate.risk_factors[0] == "nan_or_inf"
    assert result.sequences[1].flagged_steps == [2, 5]
    assert result.sequences[2].flagged_steps == [7, 9]


def test_aggregate_means_are_over_all_valid_steps():
    run = make_run(steps=4, sequences=2)
    run.logits[1, :, logit_column("entropy")] = 4.0
    run.valid[1, 2:] = False
    aggregate = analyze(run, PROFILE).aggregate
    assert aggregate.entropy_mean == (4 * 2.0 + 2 * 4.0) / 6
    assert aggregate.entropy_max == 4.0


def test_degenerate_shapes():
    for run in (RunSummaries.empty(2, 3), RunSummaries.empty(1), make_run(steps=5, layers=1), make_run(steps=1)):
        result = analyze(run, PROFILE)
        assert len(result.sequences) == run.num_sequences
        assert 0.0 <= result.aggregate.risk_score <= 1.0
    assert analyze(RunSummaries.empty(0), PROFILE).aggregate.worst_sequence is None


def test_profile_defaults_to_the_run_model_type():
    run = make_run(steps=6)
    run.logits[0, 2, logit_column("entropy")] = 3.5
    run.model_type = "llama"
    assert analyze(run).sequences[0].flags.high_entropy_steps == 0
    custom = load_profile("llama", {"high_entropy_bits": 3.0})
    assert analyze(run, custom).sequences[0].flags.high_entropy_steps == 1


def test_unobserved_all_nan_summaries_are_not_reported_as_model_nans():
    run = make_run(steps=6, layers=3, attention=True)
    run.logits[:] = float("nan")
    run.hidden[:] = float("nan")
    run.attention[:] = float("nan")
    run.repetition_cosine[:] = float("nan")
    sequence = analyze(run, PROFILE).sequences[0]
    assert sequence.flags == HealthFlags()
    assert sequence.label == "healthy" and sequence.blamed_layers == [] and sequence.failure_risk == 0.0
