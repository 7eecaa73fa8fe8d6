"""Named definitions and the presets that reproduce other libraries.

Every choice that changes the numbers (absolute value, channel reducer, noise
scale, what is averaged, quadrature) is a named argument of a method. A
``preset`` fills all of them with one library's definitions; an argument given
explicitly always wins over the preset. Without a preset, the defaults are
Xplique's (``"xplique"``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from agnostic_saliency import messages

__all__ = ["DEFAULT", "PRESETS", "check_choice", "check_positive", "layer_reducer",
           "resolve_definitions"]

PRESETS = ("xplique", "captum", "pair")


class _Default:
    """Marks an argument left to the preset (or to the default preset)."""

    def __repr__(self) -> str:
        return "DEFAULT"

    def __reduce__(self) -> str:
        return "DEFAULT"


#: Default value of every definition argument: "take the preset's value".
DEFAULT: Any = _Default()


def resolve_definitions(
    method: str,
    table: Mapping[str, Mapping[str, Any] | None],
    preset: str | None,
    given: Mapping[str, Any],
) -> dict[str, Any]:
    """Return the definitions of ``method``: explicit arguments over ``preset`` over Xplique's.

    Raises
    ------
    ValueError
        For an unknown preset, or a library that has no such method.
    """
    name = "xplique" if preset is None else preset
    if name not in PRESETS:
        raise ValueError(messages.unknown_preset(preset, PRESETS))
    values = table.get(name)
    if values is None:
        available = [key for key, value in table.items() if value is not None]
        raise ValueError(messages.preset_unavailable(method, name, available))
    return {key: values[key] if value is DEFAULT else value for key, value in given.items()}


def layer_reducer(reducer: Any, options: Mapping[str, Any]) -> Any:
    """``"l2"`` for a reducer left to the preset when a ``layer`` is explained: a layer's
    hidden axis is reduced by its norm (Captum's and Inseq's habit); else ``reducer``."""
    return "l2" if reducer is DEFAULT and options.get("layer") is not None else reducer


def check_choice(name: str, value: Any, choices: Collection[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError``."""
    if value not in choices:
        raise ValueError(messages.bad_choice(name, value, list(choices)))
    return value


def check_positive(name: str, value: Any, minimum: float, integer: bool) -> Any:
    """Return ``value`` if it is a number (an int if ``integer``) of at least ``minimum``."""
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    number = hasattr(value, "__index__") if integer else isinstance(value, kinds)
    if isinstance(value, bool) or not number or value < minimum:
        raise ValueError(messages.bad_number(name, value, minimum, integer))
    return int(value) if integer else float(value)
