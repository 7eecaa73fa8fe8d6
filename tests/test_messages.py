"""Every user-facing message lives in agnostic_saliency.messages, is used, and says what to do."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from agnostic_saliency import messages

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [*ROOT.glob("agnostic_saliency/**/*.py"), *ROOT.glob("backends/*/*/*.py"),
           *ROOT.glob("examples/*/*/*.py")]
MESSAGE_FUNCTIONS = [name for name, value in vars(messages).items()
                     if inspect.isfunction(value) and not name.startswith("_")
                     and value.__module__ == messages.__name__ and name != "describe_output"]

NEXT_STEP = re.compile(
    r"\b(pass|call|install|check|use|convert|replace|move|report|explain|add|pick|reinstall|"
    r"uninstall|drop|save|resize|put|raise|register|rename|make|set)\b", re.IGNORECASE)

def _sample(annotation: str) -> object:
    if annotation.startswith("Mapping"):
        return {"a": (2, 3), "b": (2, 4)}
    if "Sequence" in annotation or "Iterable" in annotation:
        return ["a", "b"]
    if "tuple" in annotation:
        return (2, 3, 4, 5)
    if "BaseException" in annotation:
        return ValueError("boom")
    for name, value in (("str", "thing"), ("int", 3), ("float", 0.5), ("bool", True)):
        if annotation.startswith(name):
            return value
    return "value"


@pytest.mark.parametrize("name", MESSAGE_FUNCTIONS)
def test_message_names_the_next_step(name: str) -> None:
    function = getattr(messages, name)
    parameters = inspect.signature(function).parameters.values()
    arguments = [_sample(str(parameter.annotation)) for parameter in parameters]
    text = function(*arguments)
    assert isinstance(text, str) and text.endswith((".", ")"))
    assert NEXT_STEP.search(text), f"{name} does not say what to do: {text}"


@pytest.mark.parametrize("name", MESSAGE_FUNCTIONS)
def test_message_is_used_somewhere(name: str) -> None:
    users = [path for path in SOURCES if path.name != "messages.py"
             and f"messages.{name}(" in path.read_text()]
    assert users, f"messages.{name} is never raised or warned"
