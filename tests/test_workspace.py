"""The workspace hands out what chapters 01 and 02 wrote, and refuses what does not belong."""

from __future__ import annotations

import pytest
import torch
import toys

from helpers import data, models, predictivity, prompt_trials, prompting, tuning
from helpers.workspace import StaleResultsError, Workspace

TASK = "rotten_tomatoes"


def _task(key: str) -> data.TaskData:
    return toys.review_task(key)


@pytest.fixture
def written(store):
    """A store where chapter 01 trained two prompts and chapter 02 probed them."""
    tiny, task = models.tiny_backbone("llama"), _task("splits-a")
    config = prompting.PromptConfig(length=2, max_text_tokens=8)
    train = tuning.TrainConfig(max_steps=1, eval_every=1, batch_size=3)
    runs = [
        prompt_trials.run_trial(tiny, task, config, train, seed, store, progress=False)
        for seed in (0, 1)
    ]
    store.write_results("01_prompt_tuning", {"prompt_keys": {TASK: [a.key for a in runs]}})
    prompts = [prompt_trials.load_prompt(a, tiny) for a in runs]
    probe = predictivity.ProbeConfig(baseline_size=4, batch_size=4)
    probes = predictivity.probe_trials(prompts, runs, task, probe, store)
    store.write_results("02_neuron_discovery", {"neuron_keys": {TASK: [a.key for a in probes]}})
    return tiny, store, runs, probes


def test_the_workspace_hands_out_prompts_and_probes_in_trial_order(written) -> None:
    tiny, store, runs, probes = written
    work = Workspace(store, tiny, {TASK: _task("splits-a")})
    assert [a.key for a in work.trained[TASK]] == [a.key for a in runs]
    torch.testing.assert_close(work.prompts[TASK][1].prompt, runs[1].tensors()["prompt"])
    assert work.neuron_keys == {TASK: [a.key for a in probes]}
    n_scored = work.prompts[TASK][0].n_scored
    assert work.mask("prompt").tolist() == [True] * n_scored
    assert work.mask("soft").tolist()[-1] is False  # the read-out position is not soft
    assert work.types == {TASK: "sentiment"}
    assert len(work.first("dev", 4)[TASK]) == 4 and work.first("dev", None)[TASK] is not None
    assert len(work.first("test", 100)[TASK]) == 6


def test_prompts_trained_on_other_splits_are_refused_naming_both(written) -> None:
    tiny, store, runs, _ = written
    work = Workspace(store, tiny, {TASK: _task("splits-b")})  # e.g. the task file was edited
    with pytest.raises(StaleResultsError, match="splits-a.*splits-b"):
        work.prompts  # noqa: B018 (the property loads and checks)


def test_a_task_that_chapter_01_did_not_train_is_refused(written) -> None:
    tiny, store, _, _ = written
    work = Workspace(store, tiny, {TASK: _task("splits-a"), "amazon": _task("splits-c")})
    with pytest.raises(StaleResultsError, match=r"no prompt_keys for \['amazon'\]"):
        work.trained  # noqa: B018


def test_probes_of_other_prompts_are_refused(written) -> None:
    tiny, store, runs, probes = written
    store.write_results("01_prompt_tuning", {"prompt_keys": {TASK: [runs[1].key]}})
    store.write_results("02_neuron_discovery", {"neuron_keys": {TASK: [probes[0].key]}})
    work = Workspace(store, tiny, {TASK: _task("splits-a")})
    with pytest.raises(StaleResultsError, match="read from none of the prompts"):
        work.probes  # noqa: B018
