"""New job's form for simple types: one input per parameter of an ``@offload`` function.

The inputs come from the function's signature: ``int`` and ``float`` a
number input, ``str`` a text input, ``bool`` a checkbox; any other
annotation, or none, a JSON field (where ``"@file"`` stands for the uploaded
``.npy``, as among the JSON arguments). The values are parsed here, on the
server side, with an error naming the parameter (a :class:`ConfigError`, shown
on the page) rather than trusting the browser's own checks. Field names are
``f:FUNCTION:PARAMETER`` so every function's fieldset can sit in one form and
only the chosen one's count.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping
from html import escape
from typing import Any

from .. import _exceptions as errors

#: Annotations that get their own input (by name: ``from __future__ import annotations``).
SIMPLE = {"int": "int", "float": "float", "str": "str", "bool": "bool"}
_EMPTY = inspect.Parameter.empty


def parameters(fn: Callable[..., Any]) -> list[tuple[inspect.Parameter, str]]:
    """The function's parameters and their kind of input: int, float, str, bool or json."""
    target = getattr(fn, "__wrapped__", fn)
    try:
        signature = inspect.signature(target, eval_str=True)
    except (NameError, TypeError, SyntaxError):  # an annotation that does not evaluate here
        signature = inspect.signature(target)
    found = []
    for parameter in signature.parameters.values():
        note = parameter.annotation
        if isinstance(note, str):
            kind = SIMPLE.get(note, "json")
        else:
            kind = note.__name__ if note in (int, float, str, bool) else "json"
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            kind = "json"
        found.append((parameter, kind))
    return found


def field_name(function: str, parameter: str) -> str:
    """The form field of ``parameter`` of ``function`` (``module:name``)."""
    return f"f:{function}:{parameter}"


def fieldset(
    function: str, fn: Callable[..., Any], values: Mapping[str, str] | None, shown: bool
) -> str:
    """The inputs of ``fn``'s parameters, filled from ``values`` (a form sent back) if given."""
    rows = []
    for parameter, kind in parameters(fn):
        name = field_name(function, parameter.name)
        ident = escape(f"p-{function.split(':')[-1]}-{parameter.name}")
        given = values.get(name) if values is not None else None
        default = "" if parameter.default is _EMPTY else parameter.default
        label = parameter.name
        if parameter.kind is parameter.VAR_POSITIONAL:
            label, default = f"*{label} (a JSON list)", []
        elif parameter.kind is parameter.VAR_KEYWORD:
            label, default = f"**{label} (a JSON object)", {}
        elif kind == "json":
            label += " (JSON)"
        else:
            label += f" ({kind})"
        if parameter.default is _EMPTY and parameter.kind not in (
            parameter.VAR_POSITIONAL,
            parameter.VAR_KEYWORD,
        ):
            label += " *"
        if kind == "bool":
            checked = given is not None if values is not None else bool(default)
            control = (
                f'<input type="checkbox" id="{ident}" name="{escape(name)}" value="on"'
                f"{' checked' if checked else ''}>"
            )
        else:
            if given is None:
                given = (
                    json.dumps(default)
                    if kind == "json" and default != ""
                    else ("" if default == "" else str(default))
                )
            kinds = {"int": 'type="number" step="1"', "float": 'type="number" step="any"'}
            attrs = kinds.get(kind, 'type="text"')
            control = f'<input {attrs} id="{ident}" name="{escape(name)}" value="{escape(given)}">'
        rows.append(f'<label for="{ident}">{escape(label)}</label>{control}')
    hidden = "" if shown else " hidden disabled"
    body = "".join(rows) or '<p class="muted">It takes no arguments.</p>'
    return f'<fieldset class="fields" data-fn="{escape(function)}"{hidden}>{body}</fieldset>'


def parse_fields(
    function: str, fn: Callable[..., Any], form: Mapping[str, str], upload: Any = None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments from ``fn``'s fields in ``form``; ConfigError naming a bad one.

    An empty field takes the parameter's default (an error if it has none, but for a
    text: the empty string);
    ``upload`` (a loaded ``.npy``) replaces a JSON field that says ``"@file"``.
    """
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    skipped = False  # a positional parameter left to its default: the rest go by name
    for parameter, kind in parameters(fn):
        text = form.get(field_name(function, parameter.name))
        if kind == "bool":
            value: Any = text is not None and text not in ("", "off", "false")
        elif kind == "str" and text == "" and parameter.default is _EMPTY:
            value = ""  # an empty text is a string too
        elif text is None or text.strip() == "":
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if parameter.default is _EMPTY:
                raise errors.ConfigError(f"{parameter.name}: a value is needed")
            skipped = True
            continue
        else:
            value = _value(parameter.name, kind, text, upload)
        if parameter.kind is parameter.VAR_POSITIONAL:
            if not isinstance(value, list):
                raise errors.ConfigError(f"*{parameter.name}: a JSON list, not {text!r}")
            if skipped and value:
                raise errors.ConfigError(f"*{parameter.name}: give every parameter before it")
            args.extend(value)
        elif parameter.kind is parameter.VAR_KEYWORD:
            if not isinstance(value, dict):
                raise errors.ConfigError(f"**{parameter.name}: a JSON object, not {text!r}")
            kwargs.update(value)
        elif parameter.kind is parameter.KEYWORD_ONLY or (
            skipped and parameter.kind is parameter.POSITIONAL_OR_KEYWORD
        ):
            kwargs[parameter.name] = value
        elif skipped:  # positional-only after one left out: not expressible
            raise errors.ConfigError(f"{parameter.name}: give every parameter before it")
        else:
            args.append(value)
    return tuple(args), kwargs


def _value(name: str, kind: str, text: str, upload: Any) -> Any:
    text = text.strip() if kind != "str" else text
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise errors.ConfigError(f"{name}: {text!r} is not a whole number") from None
    if kind == "float":
        try:
            number = float(text)
        except ValueError:
            raise errors.ConfigError(f"{name}: {text!r} is not a number") from None
        if not math.isfinite(number):
            raise errors.ConfigError(f"{name}: {text!r} is not a finite number")
        return number
    if kind == "str":
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.ConfigError(f"{name}: not JSON ({exc})") from None
    if value == "@file":
        if upload is None:
            raise errors.ConfigError(f'{name}: "@file" stands for an uploaded .npy; none came')
        return upload
    return value
