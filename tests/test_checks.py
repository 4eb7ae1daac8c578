"""Input checks name the bad value and what is allowed."""

from __future__ import annotations

from typing import Literal

import pytest

from helpers.checks import check_choice


def test_check_choice_reads_the_allowed_values_from_the_literal() -> None:
    Colour = Literal["red", "green"]
    check_choice("colour", "red", Colour)
    with pytest.raises(ValueError, match="colour must be one of 'red', 'green'; got 'blue'"):
        check_choice("colour", "blue", Colour)
    with pytest.raises(TypeError, match="not a Literal type"):
        check_choice("colour", "red", str)


def test_helpers_raise_their_own_error_types() -> None:
    # Each module family has an error type (a ValueError, so callers that catch
    # ValueError still do); only the shared validator raises a plain one.
    from pathlib import Path

    helpers = Path(__file__).parents[1] / "helpers"
    plain = [
        f"{path.name}:{number}"
        for path in sorted(helpers.glob("*.py"))
        if path.name != "checks.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "raise ValueError(" in line
    ]
    assert plain == []


def test_check_choice_raises_the_error_type_it_is_given() -> None:
    class MineError(ValueError):
        pass

    with pytest.raises(MineError, match="colour must be one of 'red'; got 'blue'"):
        check_choice("colour", "blue", Literal["red"], MineError)


def test_helpers_import_each_other_without_circles() -> None:
    # Module-level imports only: a function-level or TYPE_CHECKING import is how a lower
    # module names a higher one's type without depending on it.
    import ast
    from pathlib import Path

    helpers = Path(__file__).parents[1] / "helpers"
    graph: dict[str, set[str]] = {}
    for path in sorted(helpers.glob("*.py")):
        found = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "helpers":
                    found |= {alias.name for alias in node.names}
                elif node.module.startswith("helpers."):
                    found.add(node.module.split(".")[1])
        graph[path.stem] = found - {path.stem}
    assert {"prompting", "zeroshot", "tuning", "prompt_trials"} <= set(graph)

    def reaches(start: str, seen: tuple[str, ...]) -> None:
        for nxt in graph.get(start, ()):
            assert nxt not in seen, " -> ".join((*seen, nxt))
            reaches(nxt, (*seen, nxt))

    for module in graph:
        reaches(module, (module,))
