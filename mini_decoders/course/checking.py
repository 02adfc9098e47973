"""The machinery every ``check_*`` function uses: call the student's function, compare, explain.

A check runs the student's function on fresh random inputs (new ones on every call, so an
answer cannot be memorised) and on a few fixed edge cases, and compares each result with the
package's implementation. When something is off it raises :class:`CheckFailed` (an
``AssertionError``) whose message says *which* output is off — its shape, dtype, or the first
entry that differs and by how much — on *which* inputs, and gives a hint. It never prints the
reference code.

A stub that still raises ``NotImplementedError`` gets :class:`ExerciseNotImplemented`, which is
both a ``CheckFailed`` and a ``NotImplementedError``: a student notebook run top to bottom then
fails only with ``NotImplementedError``-type errors, in its exercise and check cells.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np
import torch


class CheckFailed(AssertionError):
    """The student's function gave a wrong answer (the message says where, and a hint)."""


class ExerciseNotImplemented(CheckFailed, NotImplementedError):
    """The student's function is still the stub: it raises ``NotImplementedError``."""


def fresh_seed() -> int:
    """A new seed on every call (from the OS), so that every run of a check sees new inputs."""
    return int(np.random.SeedSequence().entropy % (2**31))


def describe(value: Any) -> str:
    """A short description of an input for messages: shapes and dtypes, never whole arrays."""
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
    if isinstance(value, np.ndarray):
        return f"ndarray{value.shape} {value.dtype}"
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"{type(value).__name__} of {len(value)}"
    if isinstance(value, torch.Generator):
        return "torch.Generator"
    text = repr(value)
    return text if len(text) <= 60 else f"{type(value).__name__}"


def _describe_call(args: tuple, kwargs: dict) -> str:
    parts = [describe(a) for a in args] + [f"{k}={describe(v)}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def _copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    return value


def call_student(function: Callable, args: tuple = (), kwargs: dict | None = None, *, case: str = "") -> Any:
    """Call the student's ``function`` on copies of the inputs and translate its failures.

    Raises:
        ExerciseNotImplemented: the function raises ``NotImplementedError`` (still the stub).
        CheckFailed: it is not a function, takes the wrong arguments, or raises anything else
            (the message names the exception, the inputs and the case).
    """
    kwargs = kwargs or {}
    if not callable(function):
        raise CheckFailed(f"expected a function, got {type(function).__name__}: pass the function itself, "
                          f"e.g. check_x(my_function), not check_x(my_function(...))")
    name = getattr(function, "__name__", "your function")
    try:
        inspect.signature(function).bind(*args, **kwargs)
    except TypeError as error:
        raise CheckFailed(f"`{name}` cannot be called with the check's arguments {_describe_call(args, kwargs)}: "
                          f"{error}. Keep the signature of the exercise's stub.") from None
    except ValueError:  # builtins without a signature: just call them
        pass
    try:
        return function(*[_copy(a) for a in args], **{k: _copy(v) for k, v in kwargs.items()})
    except NotImplementedError:
        raise ExerciseNotImplemented(
            f"`{name}` is not written yet: it still raises NotImplementedError. Replace the "
            f"`raise NotImplementedError(...)` line with your code, run that cell, then run this check "
            f"again.") from None
    except CheckFailed:
        raise
    except Exception as error:  # the student's bug: say what and where, keep the chain for the traceback
        where = f" ({case})" if case else ""
        raise CheckFailed(f"`{name}` raised {type(error).__name__}: {error}\n  inputs{where}: "
                          f"{_describe_call(args, kwargs)}") from error


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def compare(got: Any, expected: Any, *, what: str, case: str = "", hint: str = "", atol: float = 1e-6,
            rtol: float = 1e-5, exact: bool = False, kind: str | None = None) -> None:
    """Assert that ``got`` equals ``expected`` (arrays, tensors or numbers), explaining any difference.

    Args:
        got: the student's value.
        expected: the package's value.
        what: a name for the value in messages (``"the masked input"``).
        case: which inputs produced it (``"seed 123, ratio 0.3"``).
        hint: what to look at when the values differ.
        atol, rtol: tolerances for floating-point values; ``exact`` demands equality.
        kind: ``"tensor"`` or ``"array"`` to require that container type (default: the type of
            ``expected``).

    Raises:
        CheckFailed: with the shape / dtype / first differing entry and the hint.
    """
    where = f" ({case})" if case else ""
    tail = f"\n  hint: {hint}" if hint else ""
    kind = kind or ("tensor" if isinstance(expected, torch.Tensor) else
                    "array" if isinstance(expected, np.ndarray) else "number")
    if kind == "tensor" and not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what}{where} should be a torch.Tensor, got {type(got).__name__}{tail}")
    if kind == "array" and isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what}{where} should be a numpy array, got a torch.Tensor (use .numpy()){tail}")
    if kind == "number":
        try:
            got_value = float(got.detach() if isinstance(got, torch.Tensor) else got)
        except (TypeError, ValueError):
            raise CheckFailed(f"{what}{where} should be a single number, got {describe(got)}{tail}") from None
        expected_value = float(expected)
        if not np.isclose(got_value, expected_value, atol=atol, rtol=rtol, equal_nan=True):
            raise CheckFailed(f"{what}{where} is {got_value:.6g}, expected {expected_value:.6g}{tail}")
        return
    got_array, expected_array = _as_numpy(got), _as_numpy(expected)
    if got_array.shape != expected_array.shape:
        raise CheckFailed(f"{what}{where} has shape {tuple(got_array.shape)}, expected "
                          f"{tuple(expected_array.shape)}{tail}")
    if expected_array.dtype == bool and got_array.dtype != bool:
        raise CheckFailed(f"{what}{where} should be boolean (True/False), got dtype {got_array.dtype}{tail}")
    if expected_array.dtype == bool or exact:
        differs = got_array != expected_array
    else:
        differs = ~np.isclose(got_array.astype(np.float64), expected_array.astype(np.float64), atol=atol, rtol=rtol,
                              equal_nan=True)
    if differs.any():
        first = tuple(int(i) for i in np.argwhere(differs)[0])
        index = first if len(first) != 1 else first[0]
        message = (f"{what}{where}: entry {index} is {got_array[first]!r}, expected {expected_array[first]!r} "
                   f"({int(differs.sum())} of {differs.size} entries differ")
        if expected_array.dtype != bool and not exact:
            largest = np.nanmax(np.abs(got_array.astype(np.float64) - expected_array.astype(np.float64)))
            message += f"; largest difference {largest:.3g}"
        raise CheckFailed(message + ")" + tail)


def passed(name: str, reference: str, n_cases: int, extra: str = "") -> None:
    """Print the success line every check ends with."""
    print(f"✓ {name} matches {reference} on {n_cases} case{'s' if n_cases != 1 else ''}{extra}")


def student_name(function) -> str:
    """The student's function's name, for messages."""
    return getattr(function, "__name__", "your function")


def tuple_of(result, n: int, what: str, name: str):
    """``result`` when it is a tuple or list of ``n`` values; else a failed check that says what was expected."""
    if not isinstance(result, (tuple, list)) or len(result) != n:
        count = {2: "two", 3: "three", 4: "four"}.get(n, str(n))
        raise CheckFailed(f"`{name}` should return {count} values ({what}), got {type(result).__name__}"
                          + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else ""))
    return result


def pair_of(result, what: str, name: str):
    """``result`` when it is two values (a tuple or list); else a failed check that says what was expected."""
    return tuple_of(result, 2, what, name)
