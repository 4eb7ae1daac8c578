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
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

PROFILES = ("embedded", "ci", "paper")
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
        f"{name} = {value!r} is a {type(value).__name__}; it must be a "
        f"{type(default).__name__} like its default {default!r}{hint}"
    )


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
    the choices a parameter's comment lists, or a task-valued parameter set to a task
    that is not among the chapter's ``tasks``. Every problem is listed, each naming the
    parameter, the value and what is allowed."""
    overrides = load_profile(profile, root)
    declared: set[str] = set()
    problems: list[str] = []
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
            if problem is not None:
                problems.append(f"{problem} ({notebook.stem})")
        problems += task_parameters(notebook, overrides)[1]
    tasks = overrides.get("tasks", [None])
    if not isinstance(tasks, list) or not tasks:
        problems.insert(0, f"tasks = {tasks!r} must list at least one task")
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
            {"notebook": notebook.stem, "seconds": round(seconds, 1), "parameters": parameters}
        )
        # Written after every chapter, so a later chapter (the run-status page) can show it.
        status_file.write_text(json.dumps(run_status(profile, status, root), indent=1))
    return status


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
