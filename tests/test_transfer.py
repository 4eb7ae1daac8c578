"""Transfer accuracy, ON and the correlation of indicators with transfer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from helpers import data, engine, models, prompt_trials, prompting, transfer, tuning


def _split(labels: list[int], names: tuple[str, ...]) -> data.Dataset:
    texts = ["a good movie", "the worst film", "great fun", "boring and bad", "loved it", "it"]
    return data.dataset(texts[: len(labels)], labels, names)


def _task(name: str, labels: list[int]) -> data.TaskData:
    spec = data.task_spec(name)
    split = _split(labels, spec.label_names)
    return data.TaskData(spec, split, split, split, name)


def _prompt(tiny: models.Backbone, seed: int = 0) -> prompting.SoftPromptModel:
    config = prompting.PromptConfig(length=3, max_text_tokens=8)
    return prompting.SoftPromptModel(tiny, config, seed=seed)


def test_on_of_a_prompt_with_itself_is_one(tiny: models.Backbone) -> None:
    state = transfer.activation_state(_prompt(tiny))
    assert state.shape == (tiny.n_layers, tiny.ffn_width) and state.any()
    assert transfer.overlap_rate(state, state) == pytest.approx(1.0)
    assert engine.hook_count(tiny.model) == 0


def test_on_within_all_neurons_equals_plain_on() -> None:
    tiny = models.tiny_backbone("llama")
    a = transfer.activation_state(_prompt(tiny, 0))
    b = transfer.activation_state(_prompt(tiny, 1))
    everything = torch.ones_like(a)
    assert transfer.overlap_rate(a, b, within=everything) == pytest.approx(
        transfer.overlap_rate(a, b)
    )


def test_on_is_the_cosine_of_binary_states_within_a_set() -> None:
    a = torch.tensor([[True, True, False, False]])
    b = torch.tensor([[True, False, True, False]])
    assert transfer.overlap_rate(a, b) == pytest.approx(0.5)
    within = torch.tensor([[True, True, False, True]])
    assert transfer.overlap_rate(a, b, within) == pytest.approx(1 / np.sqrt(2))
    assert transfer.overlap_rate(a, torch.zeros_like(a)) == 0.0


def test_activation_state_reads_the_last_prompt_position_of_an_empty_input() -> None:
    tiny = models.tiny_backbone("llama")
    model = _prompt(tiny)
    with engine.record_neurons(tiny) as recorded:
        tiny.model.base_model(inputs_embeds=model.prompt.detach()[None])
    expected = torch.stack([recorded[layer][0, -1] for layer in range(tiny.n_layers)]) > 0
    assert torch.equal(transfer.activation_state(model), expected)
    assert model.prefix_cache  # restored


def test_transfer_to_the_own_task_is_the_prompt_accuracy_and_reads_target_words() -> None:
    tiny = models.tiny_backbone("llama")
    model = _prompt(tiny)
    own = _task("rotten_tomatoes", [1, 0, 1, 0, 1, 0])
    expected = model.evaluate(own.test, batch_size=4).accuracy
    assert transfer.transfer_accuracy(model, own, batch_size=4) == pytest.approx(expected)
    three = _task("cf_tweets", [0, 1, 2, 0, 1, 2])
    accuracy = transfer.transfer_accuracy(model, three, batch_size=4)
    reader = prompt_trials.on_backbone(model, tiny, label_words=("negative", "neutral", "positive"))
    assert accuracy == pytest.approx(reader.evaluate(three.test, batch_size=4).accuracy)
    assert model.config.label_words == ("negative", "positive")  # the source is unchanged


def test_target_correlations_match_scipy_per_target() -> None:
    rng = np.random.default_rng(1)
    indicator = torch.from_numpy(rng.random((5, 5)))
    measured = torch.from_numpy(rng.random((5, 5)))
    ours = transfer.target_correlations(indicator, measured)
    for t in range(5):
        sources = [s for s in range(5) if s != t]
        expected = stats.spearmanr(indicator[sources, t], measured[sources, t]).statistic
        assert float(ours[t]) == pytest.approx(expected, abs=1e-6)
    assert torch.allclose(transfer.target_correlations(measured, measured), torch.ones(5))


def test_relative_transfer_bootstrap_and_leave_one_out() -> None:
    accuracy = torch.tensor([[0.8, 0.4], [0.6, 0.5]])
    assert torch.allclose(
        transfer.relative_transfer(accuracy, torch.tensor([0.8, 0.5])),
        torch.tensor([[1.0, 0.8], [0.75, 1.0]]),
    )
    failed = transfer.relative_transfer(accuracy, torch.tensor([0.8, 0.0]))
    assert torch.allclose(failed[:, 0], torch.tensor([1.0, 0.75])), failed
    assert bool(failed[:, 1].isnan().all()), failed  # no own accuracy to divide by
    assert transfer.bootstrap_interval(torch.full((4,), 0.3)) == pytest.approx((0.3, 0.3))
    low, high = transfer.bootstrap_interval(torch.tensor([0.0, 1.0, 0.5, 0.2]))
    assert 0.0 <= low < high <= 1.0
    measured = torch.rand(4, 4, generator=torch.Generator().manual_seed(0))
    assert transfer.leave_one_out(measured, measured) == pytest.approx([1.0] * 4)
    with pytest.raises(ValueError, match="at least three tasks"):
        transfer.target_correlations(accuracy, accuracy)
    three = torch.rand(3, 3, generator=torch.Generator().manual_seed(1))
    assert len(transfer.target_correlations(three, three)) == 3
    with pytest.raises(ValueError, match="leave-one-out needs at least 4 tasks, got 3"):
        transfer.leave_one_out(three, three)
    with pytest.raises(ValueError, match=r"at least 4 tasks .*got 3: \['a', 'b', 'c'\]"):
        transfer.check_task_count(["a", "b", "c"])
    transfer.check_task_count(["a", "b", "c", "d"])


def test_token_similarity_is_the_largest_inner_product_between_prompt_vectors() -> None:
    tiny = models.tiny_backbone("llama")
    a, b = _prompt(tiny), _prompt(tiny)
    with torch.no_grad():
        a.prompt.zero_()
        b.prompt.zero_()
        a.prompt[0, 0], a.prompt[2, 1] = 1.0, 3.0
        b.prompt[1, 1], b.prompt[2, 0] = 2.0, -4.0  # pairs: 1*-4, 3*2 -> the largest is 6
    assert transfer.token_similarity(a, b) == pytest.approx(6.0)
    assert transfer.token_similarity(b, a) == pytest.approx(6.0)
    shuffled = _prompt(tiny)
    with torch.no_grad():
        shuffled.prompt.copy_(a.prompt.flip(0))  # the vectors' order does not matter
    assert transfer.token_similarity(shuffled, b) == pytest.approx(6.0)
    assert transfer.prompt_cosine(shuffled, b) != pytest.approx(transfer.prompt_cosine(a, b))


def test_pairwise_averages_over_trial_pairs() -> None:
    prompts = {"a": [0, 1], "b": [2]}
    matrix = transfer.pairwise(prompts, lambda s, i, t, j: prompts[s][i] + prompts[t][j])
    assert torch.allclose(matrix, torch.tensor([[1.0, 2.5], [2.5, 4.0]]))


def test_transfer_is_computed_once_per_prompt_and_averaged_over_source_trials(store) -> None:
    tiny = models.tiny_backbone("llama")
    task = _task("rotten_tomatoes", [1, 0, 1, 0, 1, 0])
    config = prompting.PromptConfig(length=3, max_text_tokens=8)
    train = tuning.TrainConfig(max_steps=1, eval_every=1, batch_size=3)
    runs = [prompt_trials.run_trial(tiny, task, config, train, s, store, False) for s in (0, 1)]
    models_ = [prompt_trials.load_prompt(a, tiny) for a in runs]
    targets = {"rotten_tomatoes": task}

    def matrix(size: int | None = None) -> torch.Tensor:
        trained, prompts = {"rotten_tomatoes": runs}, {"rotten_tomatoes": models_}
        per_prompt = transfer.prompt_transfer(store, trained, prompts, targets, 4, size=size)
        return transfer.task_means(per_prompt, transfer.prompt_owners(prompts))

    first = matrix()
    each = [transfer.transfer_accuracy(m, task, batch_size=4) for m in models_]
    assert first.shape == (1, 1) and float(first[0, 0]) == pytest.approx(np.mean(each))
    per_prompt = transfer.prompt_transfer(
        store, {"rotten_tomatoes": runs}, {"rotten_tomatoes": models_}, targets, 4
    )
    assert per_prompt[:, 0].tolist() == pytest.approx(each)
    with torch.no_grad():
        models_[0].prompt.add_(5.0)  # a changed prompt under the same key: the stored value
    assert torch.equal(matrix(), first)
    # The size is part of the key: new values, on the first two test examples.
    head = [m.evaluate(task.test.select([0, 1]), batch_size=4).accuracy for m in models_]
    assert float(matrix(size=2)[0, 0]) == pytest.approx(np.mean(head))


def test_prompt_level_matrices_have_a_row_per_source_prompt() -> None:
    prompts = {"a": [0, 1], "b": [2]}
    assert transfer.prompt_owners(prompts) == [0, 0, 1]
    matrix = transfer.prompt_pairwise(prompts, lambda s, i, t, j: prompts[s][i] + prompts[t][j])
    # rows a0, a1, b0; each averaged over the target's trials only
    assert torch.allclose(matrix, torch.tensor([[0.5, 2.0], [1.5, 3.0], [2.5, 4.0]]))
    assert torch.allclose(
        transfer.task_means(matrix, [0, 0, 1]), torch.tensor([[1.0, 2.5], [2.5, 4.0]])
    )


def test_prompt_level_correlations_leave_out_the_targets_own_prompts() -> None:
    # three tasks of two prompts each; the target's own rows would spoil a perfect ranking
    owners = [0, 0, 1, 1, 2, 2]
    measured = torch.tensor(
        [[9.0, 1, 2], [9, 3, 4], [5, 9, 6], [7, 9, 8], [10, 11, 9], [12, 13, 9]]
    )
    indicator = measured.clone()
    indicator[[0, 1], 0] = -9.0  # the target's own prompts: not among its sources
    found = transfer.target_correlations(indicator, measured, owners)
    assert found.tolist() == pytest.approx([1.0, 1.0, 1.0])
    reversed_ = transfer.target_correlations(-measured, measured, owners)
    assert reversed_.tolist() == pytest.approx([-1.0, -1.0, -1.0])
    # by hand for target 0: sources are rows 2-5, ranks of 5,7,10,12 against 1,2,3,4 reversed
    mixed = measured.clone()
    mixed[2:, 0] = torch.tensor([4.0, 3.0, 1.0, 2.0])
    expected = stats.spearmanr([5, 7, 10, 12], [4, 3, 1, 2]).statistic
    assert float(transfer.target_correlations(measured, mixed, owners)[0]) == pytest.approx(
        expected
    )
    with pytest.raises(ValueError, match="5 owners for 6 source rows"):
        transfer.target_correlations(measured, measured, owners[:5])


def test_prompt_level_leave_one_out_drops_the_tasks_prompts() -> None:
    owners = [0, 0, 1, 1, 2, 2, 3, 3]
    measured = torch.rand(8, 4, generator=torch.Generator().manual_seed(3))
    assert transfer.leave_one_out(measured, measured, owners) == pytest.approx([1.0] * 4)
    # with task 3 left out, what remains is the three-task prompt-level problem
    noisy = measured + torch.rand(8, 4, generator=torch.Generator().manual_seed(4))
    expected = transfer.target_correlations(noisy[:6, :3], measured[:6, :3], owners[:6])
    assert transfer.leave_one_out(noisy, measured, owners)[3] == pytest.approx(
        float(expected.mean())
    )


def test_indicator_and_correlation_rows_of_a_perfect_and_a_reversed_indicator() -> None:
    measured = torch.rand(4, 4, generator=torch.Generator().manual_seed(2))
    found = {"ON": measured.clone(), "reversed": -measured}
    rows = transfer.indicator_rows(found)
    off = measured[~torch.eye(4, dtype=torch.bool)]
    assert rows[0]["indicator"] == "ON"
    assert rows[0]["mean off the diagonal"] == pytest.approx(float(off.mean()))
    assert rows[1]["max"] == pytest.approx(float(-measured.min()))
    correlations, per_target = transfer.correlation_rows(found, measured, draws=50)
    assert correlations[0]["mean Spearman ρ"] == pytest.approx(1.0)
    assert (correlations[0]["interval low"], correlations[0]["interval high"]) == pytest.approx(
        (1.0, 1.0)
    )
    assert correlations[0]["paper"] == 0.53 and np.isnan(correlations[1]["paper"])
    assert correlations[1]["leave-one-out max"] == pytest.approx(-1.0)
    assert per_target["reversed"].tolist() == pytest.approx([-1.0] * 4)
