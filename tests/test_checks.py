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
