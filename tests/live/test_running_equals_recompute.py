"""The incremental live health equals, at every step of real tiny models, the full analysis of
the steps so far (the way the live health was computed before it was incremental)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import StoppingCriteria

from opentelemetry_instrumentation_corevital import CoreVitalStoppingCriteria, observe
from opentelemetry_instrumentation_corevital.analysis import running
from opentelemetry_instrumentation_corevital.live.monitor import active_monitor
from opentelemetry_instrumentation_corevital.summaries import LOGIT_STATS
from tests.conftest import prompt_ids
from tests.support.running_reference import EVERY_FEATURE, expected_at, full_recompute

from .conftest import FLUENT_START_TOKEN, LOOP_START_TOKEN, NONFINITE_START_TOKEN, prompt_ending_in

ENTROPY, SURPRISAL, MARGIN = (LOGIT_STATS.index(name) for name in ("entropy", "surprisal", "margin"))
FLUENT_EOS_STEP = 5
FLUENT_EOS = FLUENT_START_TOKEN + 1 + FLUENT_EOS_STEP  # the fluent chain counts up from its start


class CompareWithFullRecompute(StoppingCriteria):
    """After each step, compares what the live monitor gives with the full recompute; never stops.
    With `every` = n, the steps the live health skips must give nothing."""

    def __init__(self, every: int = 1):
        self.every = every
        self.compared: dict[int, list[int]] = {}  # step -> sequences compared there
        self.loop_steps: list[tuple[int, int]] = []
        self.profile = None

    def __call__(self, input_ids, scores, **kwargs):
        monitor = active_monitor()
        live = monitor.advance(input_ids)
        computer = monitor.computer
        step, self.profile = computer.session.step, computer.profile
        if (step + 1) % self.every:
            assert live == [], f"step {step}"
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        summaries = full_recompute(computer.session, input_ids, set(computer.eos_token_ids.tolist()))
        running = [i for i in np.flatnonzero(summaries.valid[:, step]).tolist() if i not in monitor.interventions]
        assert [s.sequence for s in live] == running, f"step {step}"
        for summary in live:
            i, where = summary.sequence, f"sequence {summary.sequence} step {step}"
            expected = expected_at(summaries, i, step, computer.profile)
            assert summary.token_id == summaries.token_ids[i, step], where
            values = [summary.entropy, summary.surprisal, summary.margin]
            np.testing.assert_array_equal(values, summaries.logits[i, step, [ENTROPY, SURPRISAL, MARGIN]], where)
            assert summary.risk == pytest.approx(expected.risk, abs=1e-9), where
            assert summary.signals == expected.signals, where
            assert summary.repetition_loop == expected.repetition_loop, where
            assert summary.nonfinite == expected.nonfinite, where
            if summary.repetition_loop:
                self.loop_steps.append((i, step))
        self.compared[step] = [s.sequence for s in live]
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def generate_compared(model, prompt, criteria=(), every=1, **kwargs):
    check = CompareWithFullRecompute(every)
    kwargs.setdefault("do_sample", False)
    with observe(on_step=lambda summary: None):
        output = model.generate(prompt, stopping_criteria=[check, *criteria], **kwargs)
    return output, check


@pytest.mark.parametrize("name", ["llama", "t5", "gpt2", "qwen2"])
def test_every_step_equals_the_full_analysis(models, telemetry, instrument, name):
    instrument()
    _, check = generate_compared(models[name], prompt_ids(batch=2), max_new_tokens=24, min_new_tokens=24)
    assert check.compared == {step: [0, 1] for step in range(24)}
    assert "corevital.error" not in telemetry.only_span().attributes


def test_sampled_steps_equal_the_full_analysis(models, telemetry, instrument):
    instrument()
    torch.manual_seed(0)
    _, check = generate_compared(models["llama"], prompt_ids(batch=3), do_sample=True, temperature=1.5, top_k=20,
                                 max_new_tokens=32, min_new_tokens=32)
    assert check.compared == {step: [0, 1, 2] for step in range(32)}


@pytest.mark.parametrize("overrides", [{}, EVERY_FEATURE], ids=["llama profile", "calibrated profile"])
def test_a_batch_of_a_loop_an_early_eos_and_a_nan_equals_the_full_analysis(successor_model, telemetry, instrument,
                                                                            overrides):
    instrument(profile_overrides=overrides)
    prompt = prompt_ending_in(LOOP_START_TOKEN, FLUENT_START_TOKEN, NONFINITE_START_TOKEN)
    output, check = generate_compared(successor_model, prompt, max_new_tokens=40, eos_token_id=FLUENT_EOS)
    # the fluent sequence ends at its EOS (that step included), the others run on
    assert output[1, 3 + FLUENT_EOS_STEP].item() == FLUENT_EOS
    assert [step for step, rows in check.compared.items() if 1 in rows] == list(range(FLUENT_EOS_STEP + 1))
    assert all(rows == [0, 2] for step, rows in check.compared.items() if step > FLUENT_EOS_STEP)
    assert len(check.compared) == 40
    assert {i for i, _ in check.loop_steps} == {0}  # the loop is confirmed live, on the looping sequence only
    assert check.profile.calibrated == bool(overrides)
    assert "corevital.error" not in telemetry.only_span().attributes


@pytest.mark.parametrize("every", [2, 4, 20])  # 20: longer than a block of pending steps
def test_with_live_every_the_computed_steps_equal_the_full_analysis(successor_model, telemetry, instrument, every):
    """Between the computed steps nothing reaches the host; the running state catches up on them."""
    instrument(live_every=every)
    prompt = prompt_ending_in(LOOP_START_TOKEN, FLUENT_START_TOKEN, NONFINITE_START_TOKEN)
    _, check = generate_compared(successor_model, prompt, every=every, max_new_tokens=40, eos_token_id=FLUENT_EOS)
    assert list(check.compared) == list(range(every - 1, 40, every))
    # the fluent sequence is seen at the computed steps up to its EOS step, not after
    assert [step for step, rows in check.compared.items() if 1 in rows] == list(range(every - 1, FLUENT_EOS_STEP + 1, every))
    assert {i for i, _ in check.loop_steps} == {0}
    assert "corevital.error" not in telemetry.only_span().attributes


def test_the_health_stop_sees_the_same_values_and_stops_at_the_same_steps(successor_model, telemetry, instrument):
    instrument()
    prompt = prompt_ending_in(LOOP_START_TOKEN, FLUENT_START_TOKEN, NONFINITE_START_TOKEN)
    stop = CoreVitalStoppingCriteria(risk_threshold=0.99, min_steps=2)
    output, check = generate_compared(successor_model, prompt, criteria=[stop], max_new_tokens=40)
    stops = {e.attributes["corevital.intervention.sequence"]: e.attributes["corevital.intervention.reason"]
             for e in telemetry.only_span().events if e.name == "corevital.intervention"}
    assert stops == {0: "repetition_loop", 2: "nonfinite"}
    # a stopped sequence is compared up to its stop, never after
    last_compared = {i: max(step for step, rows in check.compared.items() if i in rows) for i in (0, 2)}
    first_loop = min(step for i, step in check.loop_steps if i == 0)
    assert last_compared[0] == first_loop


class InjectedFault(Exception):
    pass


def test_a_fault_in_the_running_update_ends_live_health_for_the_call_and_generation_goes_on(
    models, telemetry, instrument, monkeypatch
):
    """After a failed update the running state is incomplete: no value is better than a wrong one."""
    model = models["llama"]
    expected = model.generate(prompt_ids(), max_new_tokens=12, min_new_tokens=12, do_sample=False)
    instrument()
    add_repetition = running._Repetition.add
    faults = []

    def fails_once_at_step_3(repetition, *args):  # the step's other features are in by then
        if repetition.steps == 3 and not faults:
            faults.append(3)
            raise InjectedFault("update")
        return add_repetition(repetition, *args)

    monkeypatch.setattr(running._Repetition, "add", fails_once_at_step_3)
    seen = []
    with observe(on_step=seen.append):
        output = model.generate(prompt_ids(), max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert torch.equal(output, expected)
    assert [s.step for s in seen] == [0, 1, 2]
    assert telemetry.only_span().attributes["corevital.error"].startswith("live: InjectedFault")
