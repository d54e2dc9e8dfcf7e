import json
from importlib import resources

import pytest

from opentelemetry_instrumentation_corevital.profiles import (
    ARCHITECTURES,
    PROFILE_KEYS,
    RISK_FEATURE_NAMES,
    load_profile,
    load_profile_file,
    profile_name,
)


def test_defaults_match_the_documented_values():
    profile = load_profile("default")
    assert profile.name == "default" and profile.calibrated is False
    assert profile.high_entropy_bits == 4.0
    assert profile.repetition_cosine == 0.2
    assert profile.repetition_relative_cosine == 0.0
    assert profile.repetition_min_steps == 10
    assert profile.l2_explosion_multiplier == 8.0
    assert profile.risk_threshold_critical == 0.7
    assert len(profile.risk_model.features) == len(profile.risk_model.weights) == len(profile.risk_model.reference)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_architecture_ships_a_json_that_loads(architecture):
    text = resources.files("opentelemetry_instrumentation_corevital.profiles").joinpath(f"{architecture}.json")
    assert isinstance(json.loads(text.read_text()), dict)
    assert load_profile(architecture).name == architecture


@pytest.mark.parametrize(
    "model_type, expected",
    [("gpt2", "gpt2"), ("LLaMA", "llama"), ("qwen3", "qwen2"), ("mixtral", "mistral"), ("mt5", "t5"),
     ("mbart", "bart"), ("falcon", "default"), ("", "default")],
)
def test_model_types_map_to_profiles(model_type, expected):
    assert profile_name(model_type) == expected
    assert load_profile(model_type).name == expected


def test_overrides_replace_values_and_leave_the_rest():
    profile = load_profile("llama", {"high_entropy_bits": 5, "repetition_max_period": 12})
    assert profile.high_entropy_bits == 5.0 and isinstance(profile.high_entropy_bits, float)
    assert profile.repetition_max_period == 12
    assert profile.repetition_cosine == load_profile("llama").repetition_cosine


def test_nested_overrides_merge_per_entry():
    profile = load_profile("default", {"risk_model": {"bias": -1.0}, "early_warning_weights": {"surprisal_spike": 0.9}})
    assert profile.risk_model.bias == -1.0
    assert profile.risk_model.features == load_profile("default").risk_model.features
    assert profile.early_warning_weights.surprisal_spike == 0.9


def test_unknown_key_is_named_and_allowed_keys_listed():
    with pytest.raises(ValueError) as error:
        load_profile("gpt2", {"high_entropy_bit": 4.0})
    message = str(error.value)
    assert "'high_entropy_bit'" in message
    assert all(key in message for key in PROFILE_KEYS)


@pytest.mark.parametrize(
    "key, value",
    [
        ("high_entropy_bits", "4.0"),
        ("high_entropy_bits", True),
        ("high_entropy_bits", float("nan")),
        ("high_entropy_bits", -1.0),
        ("repetition_cosine", 1.5),
        ("repetition_min_steps", 2.5),
        ("repetition_min_steps", 0),
        ("l2_explosion_multiplier", 1.0),
        ("risk_threshold_warning", 1.2),
        ("early_warning_window", 1),
    ],
)
def test_bad_values_name_the_key_and_the_range(key, value):
    with pytest.raises(ValueError) as error:
        load_profile("default", {key: value})
    assert repr(key) in str(error.value)
    assert " in [" in str(error.value) or " in (" in str(error.value)


def test_inconsistent_thresholds_are_refused():
    with pytest.raises(ValueError, match="risk_threshold_warning"):
        load_profile("default", {"risk_threshold_warning": 0.8, "risk_threshold_critical": 0.6})
    with pytest.raises(ValueError, match="low_entropy_bits"):
        load_profile("default", {"low_entropy_bits": 5.0})


@pytest.mark.parametrize(
    "risk_model, named",
    [
        (
            {"features": ["entropy_mean", "no_such_feature"], "weights": [1, 1], "reference": [0, 0]},
            "risk_model.features",
        ),
        ({"weights": [1.0]}, "risk_model.weights"),
        ({"bias": "high"}, "risk_model.bias"),
        ({"slope": 1.0}, "risk_model"),
    ],
)
def test_bad_risk_models_are_refused(risk_model, named):
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        load_profile("default", {"risk_model": risk_model})


def test_bad_warning_weights_are_refused():
    with pytest.raises(ValueError, match="early_warning_weights"):
        load_profile("default", {"early_warning_weights": {"typo": 0.5}})
    with pytest.raises(ValueError, match="early_warning_weights.entropy_rising"):
        load_profile("default", {"early_warning_weights": {"entropy_rising": 2.0}})


def test_overrides_must_be_a_mapping():
    with pytest.raises(ValueError, match="mapping"):
        load_profile("default", [("high_entropy_bits", 4.0)])


def test_risk_model_features_are_known_names():
    assert set(load_profile("default").risk_model.features) <= set(RISK_FEATURE_NAMES)


@pytest.mark.parametrize("model_type", ["gemma3_text", "llama", *ARCHITECTURES])
def test_no_shipped_profile_is_fitted_so_none_claims_to_be_calibrated(model_type):
    # Fitting is `corevital calibrate`'s job, on the user's own model.
    assert not load_profile(model_type).calibrated
    assert load_profile(model_type).risk_model == load_profile("default").risk_model


def test_a_profile_file_is_merged_over_the_default_and_keeps_its_name(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "calibrated-gemma", "model_type": "gemma3_text", "calibration": {"prompts": 3},
                                "calibrated": True, "high_entropy_bits": 6.5}))
    profile = load_profile_file(path, {"repetition_min_steps": 7})
    assert (profile.name, profile.calibrated, profile.high_entropy_bits) == ("calibrated-gemma", True, 6.5)
    assert profile.repetition_min_steps == 7
    assert profile.risk_model == load_profile("default").risk_model


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found; write one with `corevital calibrate`"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"high_entropy_bits": -1}', "'high_entropy_bits' must be a number in (0, 32]"),
        ('{"calibrated": "yes"}', "'calibrated' must be true or false"),
    ],
)
def test_a_bad_profile_file_is_refused_in_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError) as error:
        load_profile_file(path)
    assert str(error.value).startswith(f"profile file {path}: ") and message in str(error.value)
    assert "\n" not in str(error.value)
