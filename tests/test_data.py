"""Task registry, splits, binary subtasks and verbalizers."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset

from helpers import data, models


def _pools(labels: list[int], names=("negative", "positive")) -> data.Pools:
    texts = [f"text {i}" for i in range(len(labels))]
    return {"all": data.dataset(texts, labels, names)}


def test_stable_seed_is_sha256_not_python_hash() -> None:
    expected = int.from_bytes(hashlib.sha256(b"splits|rt|13").digest()[:8], "little") >> 1
    assert data.stable_seed("splits", "rt", 13) == expected


def test_split_indices_are_balanced_capped_and_disjoint() -> None:
    labels = [0] * 300 + [1] * 700
    chosen = data.split_indices(_pools(labels), data.SplitSizes(100, 40, 60), seed=1)
    rows = {split: rows for split, (_, rows) in chosen.items()}
    assert [len(rows[s]) for s in data.SPLITS] == [100, 40, 60]
    for split in data.SPLITS:
        counts = np.bincount(np.asarray(labels)[rows[split]])
        assert counts[0] == counts[1]
    assert not set(rows["train"]) & set(rows["dev"])
    assert not set(rows["train"]) & set(rows["test"])
    assert not set(rows["dev"]) & set(rows["test"])


def test_unbalanced_split_keeps_class_proportions_available() -> None:
    labels = [0] * 300 + [1] * 700
    chosen = data.split_indices(_pools(labels), data.SplitSizes(None, None, None), 1, balance=False)
    assert sum(len(rows) for _, rows in chosen.values()) == 1000


def test_official_splits_keep_test_and_cut_dev_from_train() -> None:
    pools = {
        "train": data.dataset(
            [f"t{i}" for i in range(100)], [i % 2 for i in range(100)], ("a", "b")
        ),
        "test": data.dataset([f"s{i}" for i in range(30)], [i % 2 for i in range(30)], ("a", "b")),
    }
    chosen = data.split_indices(pools, data.SplitSizes(None, None, None), seed=3)
    assert chosen["test"][0] == "test" and sorted(chosen["test"][1]) == list(range(30))
    assert chosen["dev"][0] == "train" and len(chosen["dev"][1]) == 20
    assert len(chosen["train"][1]) == 80


SPLIT_SCRIPT = """
import json, sys
from helpers import data
data.register_file_task("mine", sys.argv[1])
task = data.load_task("mine", data.SplitSizes(8, 4, 4), seed=5)
print(json.dumps({s: list(task.split(s)["text"]) for s in data.SPLITS}))
"""


def test_splits_are_identical_in_two_processes(tiny_csv: Path) -> None:
    outputs = [
        subprocess.run(
            [sys.executable, "-c", SPLIT_SCRIPT, str(tiny_csv)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in (1, 2)
    ]
    assert outputs[0] == outputs[1]
    assert len(json.loads(outputs[0])["train"]) == 8


def test_splits_are_persisted_and_reused(tiny_csv: Path, store) -> None:
    data.register_file_task("mine", tiny_csv)
    first = data.load_task("mine", data.SplitSizes(8, 4, 4), seed=5, store=store)
    saved = store.load("splits", first.key).json("indices")
    assert saved["train"]["rows"] and saved["train"]["pool"] == "all"
    second = data.load_task("mine", data.SplitSizes(8, 4, 4), seed=5, store=store)
    assert second.key == first.key and second.train["text"] == first.train["text"]
    other = data.load_task("mine", data.SplitSizes(8, 4, 4), seed=6, store=store)
    assert other.key != first.key


def test_an_edited_task_file_gets_new_splits(tiny_csv: Path, store) -> None:
    data.register_file_task("mine", tiny_csv)
    first = data.load_task("mine", data.SplitSizes(8, 4, 4), seed=5, store=store)
    text = tiny_csv.read_text()
    flipped = (
        text.replace("positive", "TMP").replace("negative", "positive").replace("TMP", "negative")
    )
    assert flipped != text and len(flipped.splitlines()) == len(text.splitlines())
    tiny_csv.write_text(flipped)  # every label flipped, the same rows
    data.register_file_task("mine", tiny_csv)
    second = data.load_task("mine", data.SplitSizes(8, 4, 4), seed=5, store=store)
    assert second.key != first.key
    tiny_csv.write_text(text)
    data.register_file_task("mine", tiny_csv)
    assert data.load_task("mine", data.SplitSizes(8, 4, 4), seed=5, store=store).key == first.key


def test_a_moved_task_file_keeps_its_splits(tmp_path: Path, tiny_csv: Path) -> None:
    """The splits follow the file's content, not the path that names it."""
    moved = tmp_path / "elsewhere" / "copy.csv"
    moved.parent.mkdir()
    moved.write_text(tiny_csv.read_text())
    first = data.load_task(str(tiny_csv), data.SplitSizes(8, 4, 4), seed=5)
    second = data.load_task(str(moved), data.SplitSizes(8, 4, 4), seed=5)
    assert first.spec.name != second.spec.name
    for split in data.SPLITS:
        assert first.split(split)["text"] == second.split(split)["text"]
    other = data.load_task(str(moved), data.SplitSizes(8, 4, 4), seed=6)
    assert other.train["text"] != first.train["text"]


def test_a_split_without_some_class_is_an_error_naming_it(tmp_path: Path) -> None:
    """Three classes, the third with two examples: balanced splits of the other two are
    possible, but some split must lack the third class; the error says which."""
    rows = [f"t{i},{['bad', 'good'][i % 2]}" for i in range(40)] + ["r1,rare", "r2,rare"]
    rare = tmp_path / "rare.csv"
    rare.write_text("text,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(data.SplitError, match=r"split \(\d+ examples\) has none of the classes"):
        data.load_task(str(rare), data.SplitSizes(None, None, None), balance=False)


def test_file_task_structure(tiny_csv: Path) -> None:
    spec = data.register_file_task("mine", tiny_csv)
    assert spec.label_names == ("negative", "positive")
    task = data.load_task("mine", data.SplitSizes(8, 4, 4))
    assert task.train.column_names == ["text", "text_pair", "label"]
    assert task.label_names == ["negative", "positive"]
    assert task.train[0]["text_pair"] is None
    assert {row["split"]: row["n"] for row in task.summary()} == {"train": 8, "dev": 4, "test": 4}


def test_a_task_named_by_its_file_registers_itself(tmp_path: Path, tiny_csv: Path) -> None:
    spec = data.task_spec(str(tiny_csv))
    assert spec.source == "file" and spec.task_type == "sentiment"
    assert spec.label_names == ("negative", "positive") and not spec.has_pair
    assert data.task_spec(str(tiny_csv)) is data.TASKS[str(tiny_csv)]
    pairs = tmp_path / "pairs.jsonl"
    records = [
        {"text": f"a man runs {i}", "text_pair": "a man sits", "label": ["no", "yes"][i % 2]}
        for i in range(100)  # 16 rows reach the dev pool: both classes, all but surely
    ]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in records))
    spec = data.task_spec(str(pairs))
    assert spec.has_pair and spec.task_type == "nli" and spec.label_names == ("no", "yes")
    task = data.load_task(str(pairs), data.SplitSizes(8, 4, 4))
    assert task.train[0]["text_pair"] == "a man sits"
    with pytest.raises(data.UnknownTaskError):
        data.task_spec(str(tmp_path / "missing.csv"))


def test_file_task_bad_input(tmp_path: Path, tiny_csv: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.register_file_task("x", tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="no column 'sentence'"):
        data.register_file_task("x", tiny_csv, text_column="sentence")
    cases = {
        b"text,label\n\xff\xfe bad bytes,positive\nfine,negative\n": "is not UTF-8 text",
        b"text,label\n": "has no examples",
        b"text,label\nok,positive\n,negative\nfine,positive\n": (
            "1 examples have no 'text' \\(the first on line 3\\)"
        ),
    }
    cases[b""] = "is empty: it has no header and no examples"
    cases[b"text;label\ngood;positive\nbad;negative\n"] = (
        "has no column 'text': \\['text;label'\\] \\(its header is split by ';': use commas\\)"
    )
    cases[b"text,label\ngood,positive\nbad,negative\nmeh,\n"] = (
        "1 examples have no 'label' \\(the first on line 4\\)"
    )
    cases["\ufefftext,label\r\ngood,positive\r\nbad,\r\n".encode()] = (  # Excel's BOM and CRLF
        "1 examples have no 'label' \\(the first on line 3\\)"
    )
    cases[b"text,label\n" + b"".join(b"t %d,%d\n" % (i, 2 * (i % 2)) for i in range(20))] = (
        "has no examples of the classes \\['1'\\]"
    )
    for i, (content, message) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}.csv"
        bad.write_bytes(content)
        with pytest.raises(ValueError, match=f"task file {bad}.*{message}"):
            data.register_file_task("x", bad)
        # named in a profile's tasks, the file is registered on first use: the same error
        with pytest.raises(ValueError, match=f"task file {bad}.*{message}"):
            data.load_task(str(bad), data.SplitSizes(8, 4, 4))


def test_natural_words_give_one_word_per_class(tmp_path: Path) -> None:
    numbered = tmp_path / "numbered.csv"
    numbered.write_text("text,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(20)))
    spec = data.register_file_task("two", numbered, natural_words=["bad", "good"])
    assert spec.label_words("natural") == ("bad", "good")
    for words, message in (
        (["bad", "good", "fine"], r"give 3 words for 2 classes \['0', '1'\]"),
        (["bad"], r"give 1 words for 2 classes"),
        (["bad", ""], "must be distinct single words, none empty"),
        (["bad", "very good"], "must be distinct single words"),
        (["bad", "bad"], "must be distinct single words"),
    ):
        with pytest.raises(data.LabelWordError, match=f"task file {numbered}: natural_words"):
            data.register_file_task("words", numbered, natural_words=words)
        with pytest.raises(data.LabelWordError, match=message):
            data.register_file_task("words", numbered, natural_words=words)
    assert "words" not in data.TASKS


def test_an_empty_label_word_is_refused() -> None:
    from helpers import models

    tokenizer = models.tiny_backbone("llama").tokenizer
    with pytest.raises(data.LabelWordError, match="hold an empty word"):
        data.verbalizer_ids(tokenizer, ["good", " "])


def test_integer_labels_name_their_classes_by_number_or_by_label_names(tmp_path: Path) -> None:
    numbered = tmp_path / "numbered.csv"
    numbered.write_text("text,label\n" + "".join(f"text {i},{i % 3}\n" for i in range(60)))
    spec = data.task_spec(str(numbered))  # as a profile's tasks name it
    assert spec.label_names == ("0", "1", "2")
    task = data.load_task(str(numbered), data.SplitSizes(12, 6, 6))
    assert sorted(set(task.train["label"])) == [0, 1, 2]
    named = data.register_file_task("named", numbered, label_names=["a", "b", "c"])
    assert named.label_names == ("a", "b", "c")
    with pytest.raises(ValueError, match=r"integer labels \[2\] .* outside 0..1"):
        data.register_file_task("few", numbered, label_names=["a", "b"])
        data.load_task("few", data.SplitSizes(12, 6, 6))
    floats = tmp_path / "floats.csv"
    floats.write_text("text,label\n" + "".join(f"text {i},{i % 2}.5\n" for i in range(10)))
    with pytest.raises(ValueError, match=r"class names or integers 0, 1, ...; found \['float'\]"):
        data.register_file_task("floats", floats)


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(data.UnknownTaskError, match="unknown task 'sst3'.*rotten_tomatoes"):
        data.load_task("sst3")


def test_empty_and_one_class_splits_are_errors(tmp_path: Path) -> None:
    one_class = tmp_path / "one.csv"
    one_class.write_text("text,label\n" + "".join(f"t{i},good\n" for i in range(20)))
    data.register_file_task("one", one_class)
    with pytest.raises(data.SplitError, match="empty|single class"):
        data.load_task("one", data.SplitSizes(8, 4, 4))
    with pytest.raises(data.SplitError, match="the train split holds a single class"):
        data.load_task("one", data.SplitSizes(8, 4, 4), balance=False)
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\nonly one,good\nanother,bad\n")
    data.register_file_task("tiny", empty)
    with pytest.raises(data.SplitError, match="empty"):
        data.load_task("tiny", data.SplitSizes(8, 4, 4))


def test_binary_subtasks_follow_the_official_mapping_and_are_balanced() -> None:
    names = ("negative", "neutral", "positive")
    labels = [0] * 10 + [1] * 30 + [2] * 6
    split = data.dataset([f"t{i}" for i in range(46)], labels, names)
    pn = data.binary_subtask(split, "pn")
    assert pn.features["label"].names == ["negative", "positive"]
    assert np.bincount(pn["label"]).tolist() == [6, 6]
    by_text = dict(zip(split["text"], split["label"], strict=True))
    assert all((by_text[t] == 2) == (y == 1) for t, y in zip(pn["text"], pn["label"], strict=True))
    neu = data.binary_subtask(split, "neu")
    assert neu.features["label"].names == ["non-neutral", "neutral"]
    assert np.bincount(neu["label"]).tolist() == [16, 16]
    assert all(
        (by_text[t] == 1) == (y == 1) for t, y in zip(neu["text"], neu["label"], strict=True)
    )
    with pytest.raises(ValueError, match="3 classes"):
        data.binary_subtask(pn, "pn")


def test_verbalizer_words_must_be_single_distinct_tokens() -> None:
    tokenizer = models.tiny_tokenizer("decoder")
    ids = data.verbalizer_ids(tokenizer, ["negative", "positive"])
    assert tokenizer.convert_ids_to_tokens(ids) == ["negative", "positive"]
    with pytest.raises(data.LabelWordError, match="'very good' is 2 tokens"):
        data.verbalizer_ids(tokenizer, ["bad", "very good"])
    with pytest.raises(data.LabelWordError, match="distinct"):
        data.verbalizer_ids(tokenizer, ["good", "good"])


def test_label_words_shared_and_natural() -> None:
    snli = data.task_spec("snli")
    assert snli.label_words() == ("negative", "neutral", "positive")
    assert snli.label_words("natural") == ("yes", "maybe", "no")
    assert data.task_spec("bbc").label_words() == ("negative", "positive")
    assert snli.has_pair and not data.task_spec("bbc").has_pair


def test_hub_loader_converts_and_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def fake_load_dataset(path, name=None, split=None):
        assert (path, name) == ("ag_news", None)
        return Dataset.from_dict({"text": ["w", "s", "b", "t", "b2"], "label": [0, 1, 2, 3, 2]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    pools = data.task_spec("agnews").loader()
    assert set(pools) == {"train", "test"}
    assert pools["train"]["text"] == ["s", "b", "b2"]
    assert pools["train"]["label"] == [1, 0, 0]
    assert pools["train"].features["label"].names == ["business", "sports"]


@pytest.mark.slow
@pytest.mark.parametrize("name", data.EMBEDDED_TASKS)
def test_embedded_tasks_load_real_data(name: str, store) -> None:
    task = data.load_task(name, data.SplitSizes(60, 30, 30), store=store)
    assert task.label_names == list(task.spec.label_names)
    for split in data.SPLITS:
        counts = np.bincount(task.split(split)["label"])
        assert len(counts) == task.spec.n_classes and counts.min() == counts.max()
        assert all(len(text) > 0 for text in task.split(split)["text"])
    assert all(pair is not None for pair in task.train["text_pair"]) == task.spec.has_pair


@pytest.mark.slow
def test_the_second_nli_and_topic_tasks_reformulate_and_extend_the_first() -> None:
    three = data.TASKS["snli"].loader()
    binary = data.TASKS["snli_binary"].loader()
    for pool in ("train", "test"):
        gold = {(r["text"], r["text_pair"]): r["label"] for r in three[pool]}
        assert len(binary[pool]) == len(three[pool])
        # entailment stays class 0; neutral (1) and contradiction (2) become not_entailment
        assert all(int(gold[r["text"], r["text_pair"]] > 0) == r["label"] for r in binary[pool])
    topics = data.TASKS["bbc_tech"].loader()["all"]
    first = set(data.TASKS["bbc"].loader()["all"]["text"])
    assert topics.features["label"].names == ["politics", "tech"]
    assert np.bincount(topics["label"]).tolist() == [399, 337]  # 417 and 401, less repeats
    assert not first & set(topics["text"])  # other sections, other articles


def test_binary_subtask_fingerprint_is_stable_for_the_same_split() -> None:
    names = ("negative", "neutral", "positive")
    split = data.dataset([f"t{i}" for i in range(30)], [i % 3 for i in range(30)], names)
    first, second = data.binary_subtask(split, "pn"), data.binary_subtask(split, "pn")
    assert first._fingerprint == second._fingerprint
    assert first._fingerprint != data.binary_subtask(split, "neu")._fingerprint


def test_one_vs_rest_rows_balance_the_class_against_the_rest() -> None:
    labels = [0] * 5 + [1] * 3 + [2] * 12
    split = data.dataset([f"t{i}" for i in range(20)], labels, ("a", "b", "c"))
    rows, binary = data.one_vs_rest_rows(split, 1)
    assert sorted(rows[binary == 1].tolist()) == [5, 6, 7]  # every example of the class
    assert int((binary == 0).sum()) == 3  # the rest cut to the class count
    assert all(labels[r] != 1 for r in rows[binary == 0])
    again, _ = data.one_vs_rest_rows(split, 1)
    assert again.tolist() == rows.tolist()
    with pytest.raises(ValueError, match="label 3 is not a class"):
        data.one_vs_rest_rows(split, 3)


def test_a_task_beyond_three_classes_uses_its_natural_words_and_says_so() -> None:
    from dataclasses import replace

    from helpers import prompting

    four = replace(
        data.task_spec("bbc"),
        label_names=("a", "b", "c", "d"),
        natural_words=("business", "sport", "film", "market"),
    )
    assert four.words_style("shared") == "natural" and four.words_style("natural") == "natural"
    assert data.task_spec("snli").words_style("shared") == "shared"
    with pytest.raises(ValueError, match="shared label words exist for"):
        four.label_words("shared")
    split = data.dataset(["x"] * 4, [0, 1, 2, 3], four.label_names)
    task = data.TaskData(four, split, split, split, "k")
    with pytest.warns(UserWarning, match="uses its natural words business/sport/film/market"):
        config = prompting.prompt_config_for(task, prompting.PromptConfig(length=2))
    assert config.label_words == ("business", "sport", "film", "market")


def test_a_small_pool_is_cut_by_class_where_a_plain_cut_would_miss_one() -> None:
    rare = np.array([0] * 95 + [1] * 5)
    for seed in range(20):  # some plain cuts leave the 5 rare rows out of dev or test
        cut = data._pool_fractions(rare, np.random.default_rng(seed), 0.2, 0.2)
        assert all(set(rare[rows].tolist()) == {0, 1} for rows in cut.values()), seed
        assert sorted(np.concatenate(list(cut.values())).tolist()) == list(range(100))
    common = np.arange(1000) % 2  # every plain cut holds both classes: it is kept as it is
    cut = data._pool_fractions(common, np.random.default_rng(3), 0.2, 0.2)
    order = np.random.default_rng(3).permutation(1000)
    assert cut["test"].tolist() == order[:200].tolist()
    assert cut["dev"].tolist() == order[200:360].tolist()


def test_split_digest_follows_the_texts_and_labels_not_the_object() -> None:
    names = ("negative", "positive")
    split = data.dataset(["a good film", "a bad film"], [1, 0], names)
    same = data.dataset(["a good film", "a bad film"], [1, 0], names)
    assert data.split_digest(split) == data.split_digest(same)
    assert data.split_digest(split) != data.split_digest(
        data.dataset(["a good film", "a bad film"], [0, 1], names)
    )
    assert data.split_digest(split) != data.split_digest(split.select([1, 0]))
