import numpy as np
import pytest

from opentelemetry_instrumentation_corevital.analysis.calibration import (
    CalibrationRun,
    agreement,
    auroc,
    calibrate,
    held_out,
    is_question,
    label_run,
    recalibrated_risk_model,
    risk_model_of,
)
from opentelemetry_instrumentation_corevital.profiles import load_profile

from tests.support.summaries import make_run

LOOP = "I am a cat. I am a cat. I am a cat. I am a cat. I am a cat."


def run_of(greedy, samples, index=0, summaries=None):
    return CalibrationRun(index, summaries or make_run(steps=12), greedy, tuple(samples))


@pytest.mark.parametrize(
    "prompt, question",
    [("What is the capital of France?", True), ("Q: Who wrote Hamlet?\nA:", True),
     ("Write a poem about the sea.", False), ("I am a cat. I am a cat.", False)],
)
def test_questions_are_prompts_ending_in_a_question_mark_before_an_answer_cue(prompt, question):
    assert is_question(prompt) is question


def test_samples_agree_on_the_answer_not_on_its_wording():
    prompt = "What is the capital of France?"
    assert agreement("The capital of France is Paris.", ("Paris.", "It is Paris, of course."), prompt) == 1.0
    assert agreement("The capital of France is Paris.", ("Lyon.", "Paris."), prompt) == 0.5
    assert agreement("5 + 3 = 8", ("The answer is 8.", "9"), "What is 5 + 3?") == 0.5


def test_labels_loops_always_and_unsure_answers_only_for_questions():
    assert label_run(run_of(LOOP, [LOOP]), "Say it again").reason == "degenerate"
    assert label_run(run_of("Paris.", ["Lyon.", "Rome."]), "What is the capital of France?").reason == "disagreement"
    assert label_run(run_of("Paris.", ["Paris!", "Rome."]), "What is the capital of France?").failure is False
    story = run_of("Once upon a time a dog flew.", ["The sea was calm.", "Rain fell on the town."])
    assert label_run(story, "Write a short story.").failure is False  # open-ended samples differ by nature


def test_calibrate_fits_weights_that_rank_held_out_failures_first():
    runs, prompts = [], []
    for k in range(40):
        unsure = (k // 4) % 2 == 1
        summaries = make_run(steps=12)
        summaries.logits[0, :, 3] = 0.2 if unsure else 0.9  # max_prob: unsure answers are unsure inside too
        prompts.append(f"Question {k}?")
        runs.append(run_of("Paris.", ["Lyon.", "Rome."] if unsure else ["Paris."] * 2, k, summaries))
    keys, report = calibrate(runs, prompts, load_profile("default"))
    assert keys["calibrated"] is True
    assert report["prompts"] == 40 and report["held_out"] == 10 and report["disagreement"] == 20
    assert report["held_out_auroc"] == 1.0
    profile = load_profile("default", keys)
    assert profile.risk_model.weights[profile.risk_model.features.index("answer_uncertainty")] > 0


def test_calibrate_refuses_too_few_runs_or_a_single_kind_of_label():
    with pytest.raises(ValueError, match="calibration needs at least"):
        calibrate([run_of("Paris.", ["Paris."], k) for k in range(3)], ["Q?"] * 3, load_profile("default"))
    runs = [run_of("Paris.", ["Paris."], k) for k in range(20)]
    with pytest.raises(ValueError, match="looked healthy; add prompts of mixed difficulty"):
        calibrate(runs, ["Q?"] * 20, load_profile("default"))


def test_every_fourth_prompt_is_held_out_and_auroc_counts_ties_half():
    assert held_out(np.arange(8), 0.25).tolist() == [False, False, False, True] * 2
    assert auroc(np.array([1, 0, 1, 0], bool), np.array([0.9, 0.1, 0.5, 0.5])) == 0.875


def test_recalibration_shrinks_an_overconfident_fit_without_reordering_and_keeps_a_calibrated_one():
    rng = np.random.default_rng(0)
    # 40 rows, 10 features of pure noise: the plain fit is confident on rows it memorised.
    x, y = rng.normal(size=(40, 10)), (np.arange(40) % 2).astype(float)
    names = tuple(f"f{k}" for k in range(10))
    plain, recalibrated = risk_model_of(x, y, names), recalibrated_risk_model(x, y, names)
    w_plain, w_recal = np.array(plain["weights"]), np.array(recalibrated["weights"])
    assert np.all(np.abs(w_recal) <= np.abs(w_plain) + 1e-9)  # logits shrink toward the base rate...
    assert np.all(np.sign(w_recal[w_recal != 0]) == np.sign(w_plain[w_recal != 0]))  # ...never flip
    # One informative feature on plenty of rows: out of fold it ranks as well, slope stays near 1.
    signal = rng.normal(size=400)
    label = (rng.random(400) < 1 / (1 + np.exp(-2 * signal))).astype(float)
    fitted = recalibrated_risk_model(signal[:, None], label, ("f0",))
    assert fitted["weights"][0] == pytest.approx(risk_model_of(signal[:, None], label, ("f0",))["weights"][0], rel=0.15)
