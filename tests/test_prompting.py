"""Hard prompts, prediction positions and the verbalizer on tiny backbones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import data, models, prompting


def _split() -> data.Dataset:
    texts = ["a good movie", "the worst film", "great fun", "boring and bad"]
    return data._dataset(texts, [1, 0, 1, 0], ("negative", "positive"))


def test_prediction_position_is_last_real_token_or_mask(tiny: models.Backbone) -> None:
    batches = prompting.hard_prompt_batches(tiny, _split(), "{text} sentiment :", 4, 16)
    encoded, labels = next(batches)
    positions = prompting.prediction_positions(
        tiny, encoded["input_ids"], encoded["attention_mask"]
    )
    ids = encoded["input_ids"][torch.arange(4), positions]
    if tiny.kind == "encoder":
        assert (ids == tiny.tokenizer.mask_token_id).all()
    else:
        assert (ids == tiny.tokenizer.convert_tokens_to_ids(":")).all()
        assert (encoded["attention_mask"].sum(1) < encoded["input_ids"].shape[1]).any()
    assert labels.tolist() == [1, 0, 1, 0]


def test_head_at_one_position_equals_full_sequence_logits(tiny: models.Backbone) -> None:
    encoded, _ = next(prompting.hard_prompt_batches(tiny, _split(), "{text} sentiment :", 4, 16))
    positions = prompting.prediction_positions(
        tiny, encoded["input_ids"], encoded["attention_mask"]
    )
    label_ids = data.verbalizer_ids(tiny.tokenizer, ["negative", "positive"])
    hidden = tiny.model.base_model(**encoded).last_hidden_state
    fast = prompting.label_logits(tiny, hidden, positions, label_ids)
    full = tiny.model(**encoded).logits[torch.arange(4), positions][:, label_ids]
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)


def test_zero_shot_returns_one_prediction_per_example(tiny: models.Backbone) -> None:
    result = prompting.zero_shot(tiny, _split(), "{text} sentiment :", ["negative", "positive"], 3)
    assert result.labels.tolist() == [1, 0, 1, 0]
    assert set(result.predictions.tolist()) <= {0, 1}
    assert 0.0 <= result.accuracy <= 1.0


def test_zero_shot_bad_input(tiny: models.Backbone) -> None:
    with pytest.raises(data.LabelWordError, match="single tokens"):
        prompting.zero_shot(tiny, _split(), "{text} :", ["negative", "very good"])
    with pytest.raises(ValueError, match="empty split"):
        prompting.zero_shot(tiny, _split().select([]), "{text} :", ["negative", "positive"])


def test_balanced_accuracy_known_answers() -> None:
    labels = np.array([0, 0, 0, 1])
    assert prompting.balanced_accuracy(labels, np.zeros(4, dtype=int)) == 0.5
    assert prompting.balanced_accuracy(labels, labels) == 1.0
    assert prompting.Evaluation(labels, np.zeros(4, dtype=int)).accuracy == 0.75


def test_truncate_keeps_the_first_tokens() -> None:
    tokenizer = models.tiny_tokenizer("decoder")
    assert prompting.truncate(tokenizer, "a good movie and a bad plot", 3) == "a good movie"
    assert prompting.truncate(tokenizer, "a good movie", 10) == "a good movie"


@pytest.mark.slow
def test_embedded_backbone_zero_shot_beats_chance_on_sentiment(store) -> None:
    backbone = models.load_backbone("smollm2-135m")
    task = data.load_task("rotten_tomatoes", data.SplitSizes(10, 10, 64), store=store)
    rows = prompting.zero_shot_table(backbone, [task], "test", 32, 64)
    assert rows[0]["label_words"] == "negative/positive"
    assert rows[0]["accuracy"] > 55.0
