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
