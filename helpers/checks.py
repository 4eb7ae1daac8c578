"""Checks of user input that name the bad value and what is allowed, before any work."""

from __future__ import annotations

from typing import Any, get_args


def check_choice(
    name: str, value: object, allowed: Any, error: type[ValueError] = ValueError
) -> None:
    """Raise ``error`` (a ``ValueError``) unless ``value`` is one of the values of the
    ``Literal`` type ``allowed``; the message names the parameter, the value and every
    allowed value, read from the type itself so that the two cannot drift apart."""
    options = get_args(allowed)
    if not options:
        raise TypeError(f"{allowed!r} is not a Literal type")
    if value not in options:
        listed = ", ".join(repr(option) for option in options)
        raise error(f"{name} must be one of {listed}; got {value!r}")
