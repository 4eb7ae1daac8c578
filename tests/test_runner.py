"""Profiles, notebook hygiene, and (marked `notebooks`) executing the chapters and the book."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from helpers import browser, runner

NOTEBOOKS = runner.notebooks()


def test_there_are_chapters() -> None:
    assert [nb.stem[:2] for nb in NOTEBOOKS][:1] == ["00"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(notebook: Path) -> None:
    cells = nbformat.read(notebook, as_version=4).cells
    code = [cell for cell in cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_one_parameters_cell_of_literals(notebook: Path) -> None:
    cells = nbformat.read(notebook, as_version=4).cells
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    for line in tagged[0].source.splitlines():
        assert " = " in line and "(" not in line.split("#")[0], line
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")


def test_nothing_refers_to_documents_outside_the_repository() -> None:
    # A reader has the repository only: the project's internal planning documents are not
    # in it, so code, chapters and pages must say what they need in place.
    outside = re.compile(r"design\.md|paper-spec\.md|resources\.md|house-style\.md|\.\./shared")
    files = [runner.ROOT / "README.md"] + [
        path
        for folder in ("helpers", "notebooks", "book", "bench", "tests")
        for path in (runner.ROOT / folder).rglob("*")
        if path.suffix in (".py", ".ipynb", ".md", ".yml", ".bib")
    ]
    found = [
        str(path.relative_to(runner.ROOT))
        for path in files
        if path.name != "test_runner.py" and outside.search(path.read_text(errors="replace"))
    ]
    assert len(files) > 30 and found == []


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_avoids_what_house_style_forbids(notebook: Path) -> None:
    cells = nbformat.read(notebook, as_version=4).cells
    source = "\n".join(c.source for c in cells if c.cell_type == "code")
    for forbidden in ("!pip", "%cd", "sys.path", "import *"):
        assert forbidden not in source, forbidden
    assert not re.search(r"^\s*(def|class)\s", source, re.MULTILINE), "logic belongs in helpers"


MAX_CELL_LINES = 15


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_cells_are_short_and_setup_opens_a_workspace(notebook: Path) -> None:
    # A chapter reads like a lecture: short cells of helper calls. The parameters cell is
    # a list of declarations (one per line, as papermill reads them) and may be longer.
    cells = nbformat.read(notebook, as_version=4).cells
    code = [c for c in cells if c.cell_type == "code"]
    long = [
        (index, len(c.source.splitlines()))
        for index, c in enumerate(code)
        if "parameters" not in c.get("metadata", {}).get("tags", [])
        and len(c.source.splitlines()) > MAX_CELL_LINES
    ]
    assert long == [], f"code cells over {MAX_CELL_LINES} lines (index, lines): {long}"
    source = "\n".join(c.source for c in code)
    if 'read_results("01_prompt_tuning")["prompt_keys"]' in source:
        pytest.fail("load chapter 01's prompts through helpers.workspace.Workspace")


@pytest.mark.parametrize("profile", ["ci", "paper", "replicate"])
def test_profile_keys_are_declared_by_the_notebooks(profile: str) -> None:
    runner.check_profile(profile)
    assert runner.load_profile(profile)


def _root_with_chapters(tmp_path: Path, profile: str) -> Path:
    (tmp_path / "notebooks").mkdir()
    for notebook in NOTEBOOKS:
        (tmp_path / "notebooks" / notebook.name).write_text(notebook.read_text())
    (tmp_path / "mine.yaml").write_text(profile)
    return tmp_path


def test_profile_values_are_checked_before_anything_runs(tmp_path: Path) -> None:
    root = _root_with_chapters(
        tmp_path,
        "trials: three\nlearning_rate: 3e-2\npositions: sofft\nscope: all\n"
        "tasks: [rotten_tomatoes, mine.csv]\nrobustness_task: amazon\nsweep_size: null\n",
    )
    with pytest.raises(runner.ProfileError) as error:
        runner.check_profile(str(root / "mine.yaml"), root)
    message = str(error.value)
    assert "trials = 'three' is a str; it must be an int like its default 3" in message
    assert "learning_rate = '3e-2' is a str; it must be a float" in message
    assert "write 3.0e-2 or 0.03" in message
    assert "positions = 'sofft' is not one of 'prompt', 'soft'" in message
    assert "robustness_task = 'amazon' names ['amazon'], not among tasks" in message
    assert "scope" not in message and "sweep_size" not in message  # valid values pass
    assert "'soft' (02_neuron_discovery, 04_cross_task_similarity)" in message
    assert "mine.csv', which does not exist" in message
    (root / "none.yaml").write_text("tasks: []\n")
    with pytest.raises(runner.ProfileError, match=r"tasks = \[\] must list at least one task"):
        runner.check_profile(str(root / "none.yaml"), root)


def test_values_out_of_range_are_refused_before_anything_runs(tmp_path: Path) -> None:
    root = _root_with_chapters(
        tmp_path,
        "train_size: -5\nskill_fraction: 1.5\nkept_fraction: 0.0\nsigma: -1.0\n"
        "fractions: [0.0, 2.0]\nlatency_batch_sizes: [1, 0]\nsearch_fractions: [a]\n"
        "fractions: [0.0, 0.17]\non_threshold: -3.0\nsweep_size: null\n",
    )
    with pytest.raises(runner.ProfileError) as error:
        runner.check_profile(str(root / "mine.yaml"), root)
    lines = str(error.value).splitlines()[1:]
    assert lines[0] == (
        "- train_size = -5 is out of range: it must be an integer >= 2 (00_data_and_models, "
        "01_prompt_tuning, 02_neuron_discovery, 03_perturbation, 04_cross_task_similarity, "
        "05_pruning, 06_transferability, 07_beyond_the_paper)"
    )  # one line for a value every chapter reads
    message = "\n".join(lines)
    assert "skill_fraction = 1.5 is out of range: it must be a number in (0, 1]" in message
    assert "kept_fraction = 0.0 is out of range: it must be a number in (0, 1]" in message
    assert "sigma = -1.0 is out of range: it must be a number >= 0" in message
    assert "latency_batch_sizes = [1, 0] is out of range: each element must be an integer" in (
        message
    )
    assert "search_fractions = ['a'] is out of range" in message
    # The last of a repeated YAML key wins; unbounded and None values pass.
    assert all(name not in message for name in ("fractions = [0.0", "on_threshold", "sweep_size"))
    assert len(lines) == 6


def test_range_bounds_known_answers() -> None:
    share, count = runner.SHARE, runner.COUNT
    assert [share.admits(v) for v in (0, 1e-9, 0.5, 1, 1.0001)] == [False, True, True, True, False]
    assert [count.admits(v) for v in (0, 1, 2.0, True, "3")] == [False, True, False, False, False]
    assert runner.Range(0, 1).admits(0.0) and not runner.Range(0, 1, open_high=True).admits(1)
    assert runner.Range().admits(-1e9) and not runner.Range().admits(None)
    assert str(share) == "a number in (0, 1]" and str(count) == "an integer >= 1"
    assert runner.range_problem("sigma", None) is None  # None means "all" for sizes


def test_every_numeric_parameter_has_a_range() -> None:
    declared: dict[str, object] = {}
    for notebook in NOTEBOOKS:
        declared |= runner._defaults(notebook)
    numeric = {
        name
        for name, value in declared.items()
        if isinstance(value, int | float)
        and not isinstance(value, bool)
        or isinstance(value, list)
        and value
        and all(isinstance(v, int | float) for v in value)
    }
    assert numeric - set(runner.RANGES) == set(), "give these parameters a range in RANGES"
    assert set(runner.RANGES) - set(declared) == set(), "RANGES names undeclared parameters"
    for name in runner.RANGES:  # every default lies in its own range
        assert runner.range_problem(name, declared[name]) is None, name


def test_the_chapters_ask_for_the_same_text_states() -> None:
    # A split's text states are stored per batch size and split: chapters that batch or
    # cut their splits differently would each run the same texts again.
    values: dict[str, set[object]] = {"batch": set(), "fit": set()}
    for notebook in NOTEBOOKS:
        defaults = runner._defaults(notebook)
        values["batch"] |= {
            defaults[k] for k in ("eval_batch_size", "probe_batch_size") if k in defaults
        }
        values["fit"] |= {defaults[k] for k in ("baseline_size", "spread_size") if k in defaults}
    assert {k: len(v) for k, v in values.items()} == {"batch": 1, "fit": 1}, values


def test_trial_counts_and_seeds_are_checked_across_chapters(tmp_path: Path) -> None:
    root = _root_with_chapters(
        tmp_path, "trials: 2\nsweep_trials: 3\nretrain_trials: null\nrobustness_seed: 1\n"
    )
    with pytest.raises(runner.ProfileError) as error:
        runner.check_profile(str(root / "mine.yaml"), root)
    message = str(error.value)
    assert "sweep_trials = 3 asks for more trials than chapter 01 trains (trials = 2)" in message
    assert "robustness_seed = 1 is a seed of chapter 01's trials (0 to 1); it must be at " in (
        message
    )
    assert "retrain_trials" not in message and "init_comparison_trials" not in message
    (root / "zero.yaml").write_text("trials: 0\n")
    with pytest.raises(runner.ProfileError) as error:
        runner.check_profile(str(root / "zero.yaml"), root)
    assert str(error.value).splitlines()[1:] == [
        "- trials = 0 is out of range: it must be an integer >= 1 (01_prompt_tuning)"
    ]  # not also every count measured against it


def test_tasks_are_checked_before_anything_runs(tmp_path: Path) -> None:
    from helpers import data

    good, latin = tmp_path / "good.csv", tmp_path / "latin.csv"
    good.write_text("text,label\nfine film,positive\nbad film,negative\n")
    latin.write_bytes("text,label\ncaf\xe9,positive\n".encode("latin-1"))
    root = _root_with_chapters(
        tmp_path,
        f"tasks: [rotten_tomatos, missing.csv, {good}, {latin}, snli, snli, notes.txt]\n",
    )
    known = set(data.TASKS)
    with pytest.raises(runner.ProfileError) as error:
        runner.check_profile(str(root / "mine.yaml"), root)
    message = str(error.value)
    assert "tasks names 'rotten_tomatos', which is not a registered task" in message
    assert "(did you mean 'rotten_tomatoes'?)" in message
    missing = root / "notebooks" / "missing.csv"
    assert f"tasks names the file 'missing.csv', which does not exist (looked for {missing})" in (
        message
    )
    assert f"task file {latin} is not UTF-8 text" in message
    assert "lists ['snli'] more than once" in message
    assert "tasks names 'notes.txt', which is not a registered task" in message
    assert str(good) not in message  # a readable file passes
    assert set(data.TASKS) == known  # checking registers nothing


def test_task_parameters_follow_tasks_unless_set(tmp_path: Path) -> None:
    chapters = {nb.stem: nb for nb in NOTEBOOKS}
    mine = {"tasks": ["rotten_tomatoes", "mine.csv"]}
    fixes, problems = runner.task_parameters(chapters["01_prompt_tuning"], mine)
    assert fixes == {"init_comparison_task": "rotten_tomatoes"} and problems == []
    fixes, _ = runner.task_parameters(chapters["03_perturbation"], mine)
    assert fixes == {"method_tasks": ["rotten_tomatoes"]}
    kept = mine | {"init_comparison_task": "mine.csv"}
    assert runner.task_parameters(chapters["01_prompt_tuning"], kept) == ({}, [])


def test_each_profile_has_a_store_of_its_own() -> None:
    assert runner.store_dir("embedded", {}) == "../artefacts"
    assert runner.store_dir("ci", {}) == "../artefacts/ci"
    assert runner.store_dir("path/to/mine.yaml", {}) == "../artefacts/mine"
    assert runner.store_dir("ci", {"store_dir": "/data/store"}) == "/data/store"


def test_a_failing_chapter_is_named_with_its_cell(tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell("size = 3  # how many")
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# 00 · Failing"),
        parameters,
        nbformat.v4.new_code_cell("total = size + 1"),
        nbformat.v4.new_code_cell("{}['missing']"),
    ]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    (tmp_path / "notebooks").mkdir()
    nbformat.write(notebook, tmp_path / "notebooks" / "00_failing.ipynb")
    out = tmp_path / "_build" / "executed"
    with pytest.raises(
        runner.ChapterError, match=r"chapter 00_failing failed in cell 3: KeyError: 'missing'"
    ):
        runner.execute("embedded", out, tmp_path)
    assert (out / "00_failing.ipynb").exists()
    with pytest.raises(runner.ProfileError, match=r"no chapter starts with \['09'\]"):
        runner.execute("embedded", out, tmp_path, only=["09"])


def test_unknown_profile_and_undeclared_key(tmp_path: Path) -> None:
    with pytest.raises(runner.ProfileError, match="unknown profile 'fast'"):
        runner.load_profile("fast")
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "ci.yaml").write_text("not_a_parameter: 1\n")
    (tmp_path / "notebooks").mkdir()
    for notebook in NOTEBOOKS:
        (tmp_path / "notebooks" / notebook.name).write_text(notebook.read_text())
    with pytest.raises(runner.ProfileError, match="not_a_parameter"):
        runner.check_profile("ci", tmp_path)


def test_a_profile_can_be_a_yaml_file_of_your_own(tmp_path: Path) -> None:
    mine, reviews = tmp_path / "mine.yaml", tmp_path / "reviews.csv"
    reviews.write_text("text,label\nfine film,positive\nbad film,negative\n")
    mine.write_text(f"tasks: [{reviews}]\ntest_size: 50\n")
    assert runner.load_profile(str(mine)) == {"tasks": [str(reviews)], "test_size": 50}
    runner.check_profile(str(mine))
    mine.write_text("test_sise: 50\n")
    with pytest.raises(runner.ProfileError, match="test_sise"):
        runner.check_profile(str(mine))
    with pytest.raises(runner.ProfileError, match="does not exist"):
        runner.load_profile(str(tmp_path / "nope.yaml"))


def test_embedded_profile_injects_nothing() -> None:
    assert runner.load_profile("embedded") == {}
    assert runner.parameters_for(NOTEBOOKS[0], {"test_size": 10, "nope": 1}) == {"test_size": 10}


@pytest.mark.slow
@pytest.mark.notebooks
def test_chapters_execute_and_the_book_builds_in_the_ci_profile(tmp_path: Path) -> None:
    executed = tmp_path / "_build" / "executed"
    rows = runner.execute("ci", executed, extra={"store_dir": str(tmp_path / "artefacts")})
    assert [row["notebook"] for row in rows] == [nb.stem for nb in NOTEBOOKS]
    for notebook in NOTEBOOKS:
        cells = nbformat.read(executed / notebook.name, as_version=4).cells
        outputs = [o for c in cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"]
        assert any("image/png" in o.get("data", {}) for o in outputs)
    runner.stage(executed, tmp_path / "_build" / "stage")
    index = runner.build(tmp_path / "_build" / "stage", tmp_path)
    assert index.exists()
    chapter = tmp_path / "_build" / "html" / "notebooks" / "00_data_and_models.html"
    assert "<img" in chapter.read_text()
    if browser.usable():  # `make test` installs Chromium where it can
        shots = runner.ROOT / "_build" / "screenshots"
        reports = browser.check_book(tmp_path / "_build" / "html", shots)
        assert len(reports) == len(NOTEBOOKS) + 1
        chapters = [r for r in reports if r.page != "index.html"]
        assert all(r.images > 0 for r in chapters), [(r.page, r.images) for r in chapters]


# The paper profile's sizes that the stand-in run shrinks; every other key (backbone,
# tasks, prompt length, initialisation, scope, tuning methods...) runs as the paper's.
PAPER_STANDIN_SIZES = {
    "max_steps": 4,
    "retrain_steps": 4,
    "eval_every": 2,
    "trials": 2,
    "sweep_trials": 2,
    "fractions": [0.0, 0.1],
    "random_draws": 2,
    "method_steps": 2,
    "robustness_choices": 2,
    "latency_repeats": 2,
    "stability_count": 20,  # of the stand-in's 96 neurons
    "top_count": 20,  # likewise
}


@pytest.mark.notebooks
def test_paper_profile_runs_end_to_end_on_hub_standins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """roberta-base and the seven Hub tasks, resolved from the Hugging Face caches."""
    import hub_standins

    for key, value in hub_standins.write_standins(tmp_path / "hf").items():
        monkeypatch.setenv(key, value)  # the notebook kernels inherit the environment
    paper = runner.load_profile("paper")
    assert set(PAPER_STANDIN_SIZES) <= set(paper) | {
        "latency_repeats",
        "stability_count",
        "top_count",
    }
    executed = tmp_path / "_build" / "executed"
    extra = PAPER_STANDIN_SIZES | {"store_dir": str(tmp_path / "artefacts")}
    rows = runner.execute("paper", executed, extra=extra)
    assert [row["notebook"] for row in rows] == [nb.stem for nb in NOTEBOOKS]
    assert rows[1]["parameters"]["backbone"] == "roberta-base"
    assert rows[1]["parameters"]["prompt_length"] == 127
    for notebook in NOTEBOOKS:
        cells = nbformat.read(executed / notebook.name, as_version=4).cells
        errors = [
            o for c in cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
        ]
        assert not errors, (notebook.name, errors[:1])


def _own_files(folder: Path) -> list[str]:
    """Four task files of one's own over two types: two of single texts (sentiment) and
    two of text pairs (inference), with integer labels in one file of each type. The
    integer-labelled ones have four classes (beyond the shared label words) and three
    (none named "neutral", so no paper subtasks: one view per class)."""
    import csv
    import random

    rng = random.Random(0)
    words = {0: "bad awful boring hated worst", 1: "good great fun loved best"}
    four = words | {2: "team match goal win", 3: "market bank profit price"}
    pair_words = {0: "yes sits runs", 1: "maybe outside inside", 2: "no not sleeps"}
    files = []
    for name, table, pairs, integers in (
        ("reviews.csv", words, False, False),
        ("opinions.csv", four, False, True),
        ("premises.csv", pair_words, True, False),
        ("claims.csv", pair_words, True, True),
    ):
        names = (
            ["negative", "positive"] if not pairs else ["entailment", "neutral", "contradiction"]
        )
        rows = []
        for i in range(90):
            label = i % len(table)
            text = " ".join(rng.choices(table[label].split(), k=4) + ["the", "movie"])
            row = {"text": text, "label": label if integers else names[label]}
            if pairs:
                row["text_pair"] = " ".join(rng.choices("man woman dog park".split(), k=3))
            rows.append(row)
        with (folder / name).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        files.append(str(folder / name))
    return files


@pytest.mark.notebooks
def test_a_profile_of_your_own_model_and_files_runs_the_whole_book(tmp_path: Path) -> None:
    """A local model folder and four CSV tasks over two types, none of them built in."""

    from helpers import models

    # Integer labels name their classes "0", "1", ...: the natural words need those tokens.
    tiny = models.tiny_backbone("llama", words=(*models.TINY_WORDS, "0", "1", "2", "3"))
    tiny.model.save_pretrained(tmp_path / "model")
    tiny.tokenizer.save_pretrained(tmp_path / "model")
    rows = _run_tiny_book(
        tmp_path, {"backbone": str(tmp_path / "model"), "tasks": _own_files(tmp_path)}
    )
    assert rows[1]["parameters"]["backbone"].endswith("model")


def _run_tiny_book(tmp_path: Path, mine: dict[str, object]) -> list[dict[str, object]]:
    """Execute every chapter under a profile of one's own on a tiny model, at the ci
    profile's step counts and tiny sizes; check that no cell failed."""
    import yaml

    ci = runner.load_profile("ci")
    own = {k: v for k, v in ci.items() if not k.endswith(("_task", "_tasks"))} | mine
    own |= {"train_size": 60, "dev_size": 30, "test_size": 30, "stability_count": 20}
    own |= {"top_count": 20}  # of the tiny model's 96 neurons
    own |= {"max_text_tokens": 16}  # the tiny model has 128 positions
    profile = tmp_path / "mine.yaml"
    profile.write_text(yaml.safe_dump(own))
    executed = tmp_path / "_build" / "executed"
    rows = runner.execute(str(profile), executed, extra={"store_dir": str(tmp_path / "store")})
    assert [row["notebook"] for row in rows] == [nb.stem for nb in NOTEBOOKS]
    for notebook in NOTEBOOKS:
        cells = nbformat.read(executed / notebook.name, as_version=4).cells
        errors = [
            o for c in cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
        ]
        assert not errors, (notebook.name, errors[:1])
    return rows


def _readme_profile() -> dict[str, object]:
    """The profile of one's own that the README shows (its ``# mine.yaml`` block)."""
    import yaml

    text = (runner.ROOT / "README.md").read_text()
    block = re.search(r"```yaml\n(# mine\.yaml\n.*?)```", text, re.S)
    assert block, "the README shows a profile of one's own in a ```yaml block"
    return yaml.safe_load(block.group(1))


@pytest.mark.notebooks
def test_the_readme_profile_of_your_own_runs_the_whole_book(tmp_path: Path) -> None:
    """The README's example as written (registry tasks beside a CSV file of one's own, no
    amazon), with only its two paths pointed at a tiny model and a tiny file."""

    from helpers import models

    readme = _readme_profile()
    tasks = readme["tasks"]
    assert isinstance(tasks, list) and "amazon" not in tasks
    files = [t for t in tasks if str(t).endswith(".csv")]
    assert files and set(readme) == {"backbone", "tasks"}
    tiny = models.tiny_backbone("llama")
    tiny.model.save_pretrained(tmp_path / "model")
    tiny.tokenizer.save_pretrained(tmp_path / "model")
    own = {p.name: p for p in map(Path, _own_files(tmp_path))}
    tasks = [str(own[t]) if t in files else t for t in tasks]
    _run_tiny_book(tmp_path, {"backbone": str(tmp_path / "model"), "tasks": tasks})


def test_the_replicate_shifts_every_seed_of_the_book_and_keeps_the_splits() -> None:
    from helpers import data

    overrides = runner.load_profile("replicate")
    shift = data.seed_shift(overrides["replicate"])
    assert shift > 0 and "split_seed" not in overrides  # the same examples
    declared = {nb.stem: runner.declared_parameters(nb) for nb in runner.notebooks()}
    # every chapter that trains, draws or resamples takes the replicate
    drawing = [
        name for name, found in declared.items() if name[:2] in {"01", "02", "03", "04", "05", "07"}
    ]
    assert all("replicate" in declared[name] for name in drawing)
    # the book's own seeds all lie below the shift, so no replicate seed is one of them
    defaults = {k: v for found in declared.values() for k, v in found.items()}
    trials = int(defaults["trials"]["default"])
    book = [*range(trials), int(defaults["control_seed"]["default"])]
    first = int(defaults["robustness_seed"]["default"])
    book += range(first, first + int(defaults["robustness_choices"]["default"]))
    assert max(book) < shift
    assert {s + shift for s in book}.isdisjoint(book)
    assert data.seed_shift(0) == 0
    with pytest.raises(data.ReplicateError, match="got -1"):
        data.seed_shift(-1)
