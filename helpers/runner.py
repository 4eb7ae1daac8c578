"""Execute the chapters with papermill under a profile, stage them, and build the book.

A profile is a set of parameter overrides: ``embedded`` (none, the notebooks' own
defaults), or ``params/<profile>.yaml`` (``ci``, ``paper``). Each key of a profile is
injected into every notebook whose ``parameters`` cell declares it; there is no
``if ci:`` branch anywhere: every profile runs the same code. Executed copies are staged
with the book's pages in ``_build/stage`` and rendered by Jupyter Book with execution off
and warnings as errors, so the book shows exactly what papermill ran.

Command line::

    python -m helpers.runner book --profile embedded     # execute, stage, build
    python -m helpers.runner execute --profile ci        # execute only
    python -m helpers.runner book --profile mine.yaml    # your own overrides
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROFILES = ("embedded", "ci", "paper", "replicate")
ROOT = Path(__file__).resolve().parent.parent


class ProfileError(ValueError):
    """A profile is unknown, or sets a parameter that no notebook declares."""


class ChapterError(RuntimeError):
    """A chapter failed while it ran: which one, in which cell, and why."""


def processor() -> str:
    """Return the processor's model name and whether it has bf16 matrix instructions."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    matrix = [f for f in ("amx_bf16", "avx512_bf16", "avx2") if f in flags]
    return f"{fields.get('Model name', '?').strip()} ({', '.join(matrix) or 'no avx2'})"


def bench_parser(
    doc: str,
    task: str | None = "rotten_tomatoes",
    batch_size: int | None = 32,
    prompt_length: bool = True,
) -> argparse.ArgumentParser:
    """The arguments the benchmarks in ``bench/`` share: the backbone, the task, the batch
    size, the prompt length (each left out where None or False) and the timed repeats; a
    benchmark adds its own."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--backbone", default="smollm2-135m")
    if task is not None:
        parser.add_argument("--task", default=task)
    if prompt_length:
        parser.add_argument("--prompt-length", type=int, default=8)
    if batch_size is not None:
        parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed blocks")
    return parser


def notebooks(root: Path = ROOT) -> list[Path]:
    """Return the chapter notebooks in book order."""
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def load_profile(profile: str, root: Path = ROOT) -> dict[str, Any]:
    """Return a profile's parameter overrides (``embedded`` has none).

    A profile is one of `PROFILES`, or the path of a YAML file of your own (e.g. your
    backbone and task files: ``backbone: path/to/model``, ``tasks: [reviews.csv]``).
    """
    if Path(profile).suffix in (".yaml", ".yml"):
        file = Path(profile)
        if not file.is_file():
            raise ProfileError(f"profile file {profile} does not exist")
    elif profile not in PROFILES:
        raise ProfileError(f"unknown profile {profile!r}; use one of {PROFILES} or a .yaml file")
    elif profile == "embedded":
        return {}
    else:
        file = root / "params" / f"{profile}.yaml"
    overrides = yaml.safe_load(file.read_text()) or {}
    if not isinstance(overrides, dict):
        raise ProfileError(f"{file} must be a mapping of parameter: value")
    return overrides


def declared_parameters(notebook: Path) -> dict[str, Any]:
    """Return the parameters a notebook's ``parameters`` cell declares, by name."""
    import papermill

    return dict(papermill.inspect_notebook(str(notebook)))


def parameters_for(notebook: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Keep the overrides that this notebook declares."""
    declared = declared_parameters(notebook)
    return {key: value for key, value in overrides.items() if key in declared}


def _choices(default: object, help_text: str) -> tuple[str, ...] | None:
    """The allowed values of a string parameter whose comment lists them in quotes
    (``scope = "all"  # "all" (...) or "prompt" (...)``), or None for a free string."""
    quoted = tuple(dict.fromkeys(re.findall(r'"([^"]*)"', help_text)))
    if isinstance(default, str) and len(quoted) >= 2 and default in quoted:
        return quoted
    return None


def _type_problem(name: str, value: object, default: object) -> str | None:
    """Why ``value`` cannot stand for a parameter declared with ``default``, or None.

    None is accepted everywhere (several sizes and choices mean "all" by None); a float
    parameter takes an int; otherwise the type of the default is required.
    """
    if value is None or default is None:
        return None
    if isinstance(default, bool):
        fits = isinstance(value, bool)
    elif isinstance(default, float):
        fits = isinstance(value, int | float) and not isinstance(value, bool)
    elif isinstance(default, int):
        fits = isinstance(value, int) and not isinstance(value, bool)
    else:
        fits = isinstance(value, type(default))
    if fits:
        return None
    text_number = isinstance(value, str) and isinstance(default, float)
    hint = " (YAML reads 3e-2 as text: write 3.0e-2 or 0.03)" if text_number else ""
    return (
        f"{name} = {value!r} is a {type(value).__name__}; it must be "
        f"{'an' if type(default).__name__ == 'int' else 'a'} "
        f"{type(default).__name__} like its default {default!r}{hint}"
    )


@dataclass(frozen=True)
class Range:
    """The values a numeric parameter may take (each element, for a list parameter).

    ``integer`` asks for whole numbers; a bound is inclusive unless marked open.
    """

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    integer: bool = False

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            return f"{kind} in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{kind} {'>' if self.open_low else '>='} {self.low:g}"
        return kind

    def admits(self, value: object) -> bool:
        """Whether one value (not a list) lies in the range."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)


COUNT = Range(1, integer=True)
SEED = Range(0, integer=True)
SHARE = Range(0, 1, open_low=True)  # a share that must keep something
POSITIVE = Range(0, open_low=True)
NON_NEGATIVE = Range(0)

# Every numeric parameter of the chapters, by its one name (a test keeps this complete):
# a profile value outside its range is refused before anything runs, not hours later
# inside the chapter that first uses it.
RANGES: dict[str, Range] = {
    "train_size": Range(2, integer=True),  # a split needs two examples (data.SplitSizes)
    "dev_size": Range(2, integer=True),
    "test_size": Range(2, integer=True),
    "split_seed": SEED,
    "control_seed": SEED,
    "robustness_seed": SEED,
    "replicate": SEED,
    "max_text_tokens": COUNT,
    "prompt_length": COUNT,
    "learning_rate": POSITIVE,
    "method_learning_rate": POSITIVE,
    "batch_size": COUNT,
    "eval_batch_size": COUNT,
    "probe_batch_size": COUNT,
    "length_window": COUNT,
    "max_steps": COUNT,
    "retrain_steps": COUNT,
    "method_steps": COUNT,
    "robustness_steps": COUNT,
    "eval_every": COUNT,
    "patience": COUNT,
    "dev_eval_size": COUNT,
    "text_cache_gb": NON_NEGATIVE,
    "text_store_gb": NON_NEGATIVE,
    "trials": COUNT,
    "joint_trials": COUNT,
    "init_comparison_trials": COUNT,
    "sweep_trials": COUNT,
    "retrain_trials": COUNT,
    "baseline_size": COUNT,
    "spread_size": Range(2, integer=True),  # a spread needs two examples
    "skill_fraction": SHARE,
    "kept_fraction": SHARE,
    "layer_share": SHARE,
    "on_fraction": SHARE,
    "sweep_fractions": SHARE,
    "search_fractions": SHARE,
    "search_layer_shares": SHARE,
    "fractions": Range(0, 1),  # perturbed shares: 0 is the unperturbed reference
    "permutations": COUNT,
    "stability_count": COUNT,
    "sweep_size": COUNT,
    "transfer_size": COUNT,
    "random_draws": COUNT,
    "criteria_draws": COUNT,
    "bootstrap_draws": COUNT,
    "sigma": NON_NEGATIVE,
    "lora_rank": COUNT,
    "robustness_choices": COUNT,
    "word_count": COUNT,
    "activation_words": COUNT,
    "max_drop": NON_NEGATIVE,
    "target_speedup": POSITIVE,
    "latency_batch_sizes": COUNT,
    "latency_seq_lens": COUNT,
    "latency_repeats": COUNT,
    "on_threshold": Range(),
    "top_count": COUNT,
    "ablation_fractions": Range(0, 1),  # ablated shares: 0 is the unablated reference
    "swap_fractions": Range(0, 1),  # class-swapped shares: 0 is the unpatched reference
    "stability_draws": COUNT,
    "diagnostic_count": COUNT,
    "redundancy_bar": Range(0, 1),
    "learnt_margin": NON_NEGATIVE,
}

# Parameters that count trials chapter 01 trained: each may use at most ``trials``.
TRIAL_COUNTS = ("init_comparison_trials", "sweep_trials", "retrain_trials")


def range_problem(name: str, value: object) -> str | None:
    """Why ``value`` is outside the range of parameter ``name`` (each element of a list),
    or None (also for None, which several sizes read as "all")."""
    allowed = RANGES.get(name)
    if allowed is None or value is None:
        return None
    values = value if isinstance(value, list) else [value]
    bad = [v for v in values if not allowed.admits(v)]
    if not bad:
        return None
    each = "each element must be " if isinstance(value, list) else "it must be "
    return f"{name} = {value!r} is out of range: {each}{allowed}"


def _effective(name: str, overrides: dict[str, Any], defaults: dict[str, Any]) -> Any:
    return overrides.get(name, defaults.get(name))


def cross_problems(overrides: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """Problems between parameters of different chapters: trial counts beyond the trials
    chapter 01 trains, and random-word seeds that a default trial already uses."""
    problems = []
    trials = _effective("trials", overrides, defaults)
    if range_problem("trials", trials) is not None:
        return problems  # reported as trials' own problem
    for name in TRIAL_COUNTS:
        value = _effective(name, overrides, defaults)
        if isinstance(value, int) and not isinstance(value, bool) and value > trials:
            problems.append(
                f"{name} = {value} asks for more trials than chapter 01 trains (trials = {trials})"
            )
    seed = _effective("robustness_seed", overrides, defaults)
    if isinstance(seed, int) and 0 <= seed < trials:
        problems.append(
            f"robustness_seed = {seed} is a seed of chapter 01's trials (0 to {trials - 1}); "
            f"it must be at least {trials}"
        )
    return problems


def task_problem(name: object, root: Path = ROOT) -> str | None:
    """Why a ``tasks`` entry names nothing a chapter can load, or None: a registry name,
    or an existing CSV/JSONL file (absolute, or relative to ``notebooks/`` where the
    chapters run) whose text can be read."""
    from helpers import data

    if not isinstance(name, str):
        return f"tasks holds {name!r}, which is not a task name or file"
    if name in data.TASKS:
        return None
    file = Path(name) if Path(name).is_absolute() else root / "notebooks" / name
    if Path(name).suffix not in data.TASK_FILE_SUFFIXES:
        close = difflib.get_close_matches(name, list(data.TASKS), n=1)
        return (
            f"tasks names {name!r}, which is not a registered task "
            f"{sorted(data.TASKS)} nor a {'/'.join(data.TASK_FILE_SUFFIXES)} file"
            + (f" (did you mean {close[0]!r}?)" if close else "")
        )
    if not file.is_file():
        return f"tasks names the file {name!r}, which does not exist (looked for {file})"
    try:
        data.check_task_file(file)
    except ValueError as error:  # TaskFileError, LabelWordError, SplitError: each names the file
        return str(error)
    return None


def _defaults(notebook: Path) -> dict[str, Any]:
    """A notebook's parameters with their default values (None where not a literal)."""
    import ast

    found = {}
    for name, info in declared_parameters(notebook).items():
        try:
            found[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            found[name] = None
    return found


def task_parameters(notebook: Path, overrides: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Check a notebook's task-valued parameters (``*_task``, ``*_tasks``) against its
    ``tasks``.

    Returns:
        the values to inject for parameters the profile leaves alone whose default names a
        task outside ``tasks`` (the first task, or the tasks that remain), and the problems
        of parameters the profile sets to tasks outside ``tasks``.
    """
    defaults = _defaults(notebook)
    tasks = overrides.get("tasks", defaults.get("tasks"))
    fixes: dict[str, Any] = {}
    problems: list[str] = []
    if not isinstance(tasks, list) or not tasks:
        return fixes, problems  # `check_profile` reports it, once
    for name, default in defaults.items():
        if not name.endswith(("_task", "_tasks")):
            continue
        value = overrides.get(name, default)
        named = [value] if name.endswith("_task") else (value or [])
        missing = [t for t in named if isinstance(t, str) and t not in tasks]
        if not missing:
            continue
        if name in overrides:
            problems.append(
                f"{name} = {value!r} names {missing}, not among tasks {tasks} ({notebook.stem})"
            )
        elif name.endswith("_task"):
            fixes[name] = tasks[0]
        else:
            fixes[name] = [t for t in named if t in tasks] or tasks[:1]
    return fixes, problems


def check_profile(profile: str, root: Path = ROOT) -> None:
    """Raise `ProfileError` before anything runs if the profile is not one the chapters
    can run: a key that no notebook declares, a value of the wrong type, a value outside
    the choices a parameter's comment lists or outside its `RANGES`, trial counts and
    seeds that clash across chapters (`cross_problems`), a ``tasks`` entry that names
    no registered task and no readable file, a task listed twice, or a task-valued
    parameter set to a task that is not among the chapter's ``tasks``. Every problem is
    listed, each naming the parameter, the value and what is allowed."""
    overrides = load_profile(profile, root)
    declared: set[str] = set()
    problems: list[str] = []
    every_default: dict[str, Any] = {}
    chapters: dict[str, list[str]] = {}  # a value's problem -> the chapters it reaches
    for notebook in notebooks(root):
        parameters = declared_parameters(notebook)
        defaults = _defaults(notebook)
        declared |= set(parameters)
        for name, value in overrides.items():
            if name not in parameters:
                continue
            problem = _type_problem(name, value, defaults[name])
            choices = _choices(defaults[name], parameters[name].get("help") or "")
            if problem is None and choices is not None and value not in (*choices, None):
                problem = f"{name} = {value!r} is not one of {', '.join(map(repr, choices))}"
            problem = problem or range_problem(name, value)
            if problem is not None:
                chapters.setdefault(problem, []).append(notebook.stem)
        problems += task_parameters(notebook, overrides)[1]
        every_default |= defaults
    problems = [f"{p} ({', '.join(c)})" for p, c in chapters.items()] + problems
    problems += cross_problems(overrides, every_default)
    tasks = overrides.get("tasks", every_default.get("tasks", []))
    if (not isinstance(tasks, list) or not tasks) and "tasks" in every_default | overrides:
        problems.insert(0, f"tasks = {tasks!r} must list at least one task")
    elif "tasks" in overrides:
        problems += [p for p in (task_problem(name, root) for name in tasks) if p]
        repeated = sorted({str(t) for t in tasks if tasks.count(t) > 1})
        if repeated:
            problems.append(f"tasks lists {repeated} more than once")
    unknown = sorted(set(overrides) - declared)
    if unknown:
        problems.insert(0, f"it sets undeclared parameters {unknown}")
    if problems:
        listed = "\n".join(f"- {p}" for p in dict.fromkeys(problems))
        raise ProfileError(f"profile {profile!r} cannot run:\n{listed}")


def store_dir(profile: str, overrides: dict[str, Any]) -> str:
    """The artefact store a profile's chapters share, as the chapters see it (from
    ``notebooks/``): the default store for ``embedded``, a store of its own for any other
    profile (``artefacts/<profile name>``), so that two profiles never mix results; a
    profile's own ``store_dir`` wins."""
    if "store_dir" in overrides:
        return str(overrides["store_dir"])
    if profile == "embedded":
        return "../artefacts"
    return f"../artefacts/{Path(profile).stem}"


def execute(
    profile: str,
    out: Path,
    root: Path = ROOT,
    only: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Execute every chapter (or those whose name starts with one of ``only``) in order.

    Task-valued parameters that the profile leaves alone and whose defaults name a task
    outside ``tasks`` are set to tasks that are in it (`task_parameters`), with a note.

    Raises:
        ProfileError: the profile cannot run (`check_profile`), or ``only`` matches no
            chapter; before anything runs.
        ChapterError: a chapter failed; names it, the cell and the error.

    ``extra`` overrides parameters on top of the profile (e.g. another ``store_dir``).
    After each chapter the run's status so far is written to ``run_status.json`` beside
    ``out``; a chapter declaring a ``run_status`` parameter is given its path.

    Returns:
        one status row per notebook: name, seconds, parameters injected.
    """
    import papermill

    check_profile(profile, root)
    status_file = out.parent / "run_status.json"
    overrides = load_profile(profile, root)
    overrides |= {"store_dir": store_dir(profile, overrides), "run_status": str(status_file)}
    overrides |= extra or {}
    chosen = [
        notebook
        for notebook in notebooks(root)
        if not only or any(notebook.stem.startswith(prefix) for prefix in only)
    ]
    if not chosen:
        names = [notebook.stem for notebook in notebooks(root)]
        raise ProfileError(f"no chapter starts with {only}; the chapters are {names}")
    out.mkdir(parents=True, exist_ok=True)
    status: list[dict[str, Any]] = []
    for notebook in chosen:
        fixes = task_parameters(notebook, overrides)[0]
        for name, value in fixes.items():
            print(f"{notebook.stem}: {name} = {value!r} (its default names a task not in tasks)")
        parameters = parameters_for(notebook, overrides | fixes)
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(notebook),
                str(out / notebook.name),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(notebook.parent),
                progress_bar=False,
                log_output=False,
            )
        except papermill.PapermillExecutionError as error:
            raise ChapterError(
                f"chapter {notebook.stem} failed in cell {error.exec_count}: "
                f"{error.ename}: {error.evalue}\n(the whole traceback is in the executed "
                f"notebook {out / notebook.name})"
            ) from None
        seconds = time.perf_counter() - start
        print(f"executed {notebook.name} [{profile}] in {seconds:.0f} s", flush=True)
        status.append(
            {
                "notebook": notebook.stem,
                "seconds": round(seconds, 1),
                "precision": ran_in(
                    parameters.get("precision", _defaults(notebook).get("precision"))
                ),
                "parameters": parameters,
            }
        )
        # Written after every chapter, so a later chapter (the run-status page) can show it.
        status_file.write_text(json.dumps(run_status(profile, status, root), indent=1))
    return status


def ran_in(precision: str | None) -> str:
    """The dtype a chapter's ``precision`` parameter ran the backbone in ("" if it has none)."""
    from helpers.models import dtype_name, resolve_precision

    return "" if precision is None else dtype_name(resolve_precision(precision))


def run_status(profile: str, rows: list[dict[str, Any]], root: Path = ROOT) -> dict[str, Any]:
    """Describe a run: profile, machine, package versions, git commit, notebook timings."""
    from helpers.store import versions

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    import torch

    device = (
        f"cuda: {torch.cuda.get_device_name(0)}"
        if torch.cuda.is_available()
        else f"cpu, {torch.get_num_threads()} threads"
    )
    return {
        "profile": profile,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {platform.system()}, {os.cpu_count()} cores",
        "device": device,
        "processor": processor(),
        "versions": versions(),
        "commit": commit or "unknown",
        "notebooks": rows,
    }


def stage(executed: Path, staged: Path, root: Path = ROOT) -> None:
    """Lay out the book's sources with the executed notebooks in place of the sources."""
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, staged / name)
    shutil.copytree(root / "book", staged / "book")
    (staged / "notebooks").mkdir()
    for notebook in notebooks(root):
        source = executed / notebook.name
        if not source.exists():
            raise FileNotFoundError(f"{notebook.name} was not executed into {executed}")
        shutil.copy2(source, staged / "notebooks" / notebook.name)


def build(staged: Path, output: Path) -> Path:
    """Build the HTML book from a staged folder with warnings as errors; return index.html."""
    command = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(staged)]
    command += ["--path-output", str(output), "--warningiserror", "--nitpick", "--keep-going"]
    subprocess.run(command, check=True)
    return output / "_build" / "html" / "index.html"


def main(argv: list[str] | None = None) -> None:
    """Command line: ``execute`` or ``book`` under a profile."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("execute", "book"))
    parser.add_argument(
        "--profile", default="embedded", help=f"one of {PROFILES}, or a .yaml file of your own"
    )
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 00 01")
    parser.add_argument("--out", default=str(ROOT), help="the book goes to OUT/_build/html")
    args = parser.parse_args(argv)
    build_dir = Path(args.out) / "_build"
    executed = build_dir / "executed"
    start = time.perf_counter()
    try:
        execute(args.profile, executed, ROOT, args.only)
    except (ProfileError, ChapterError) as error:
        sys.exit(f"error: {error}")
    if args.action == "book":
        stage(executed, build_dir / "stage")
        print(f"book built: {build(build_dir / 'stage', Path(args.out))}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
