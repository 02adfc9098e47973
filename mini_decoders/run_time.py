"""How long a chapter took to run, on what, stated in the chapter itself.

Each chapter's introduction says ``Run time: {glue:md}`run_time```; its last cell calls
:func:`state_run_time`, which measures the time since the package was first imported in this
kernel (so Colab's install cell is not counted), names the machine and the profile, prints the
line, and glues it for the book (MyST-NB), so the number on the page is the one measured while
that page was executed, on the machine that built it.
"""

from __future__ import annotations

import os
import time

import mini_decoders


def machine_description() -> str:
    """The device the chapter ran on, in words: a GPU's name, or a CPU's core and torch-thread counts."""
    import torch

    if torch.cuda.is_available():
        return f"a {torch.cuda.get_device_name(0)} GPU"
    threads = torch.get_num_threads()
    return f"a {os.cpu_count()}-core CPU ({threads} torch thread{'s' if threads != 1 else ''})"


def run_time_text(seconds: float, profile: str, machine: str) -> str:
    """``"3.4 min (quick profile, a 2-core CPU (1 torch thread))"``: minutes from one decimal, seconds under a minute."""
    amount = f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"
    return f"{amount} ({profile} profile, {machine})"


def state_run_time(profile: str, name: str = "run_time") -> str:
    """Print and glue how long this chapter has run, since ``mini_decoders`` was first imported.

    Args:
        profile: the profile the chapter ran in (``tiny``, ``quick`` or ``full``).
        name: the glue key the chapter's introduction pastes with ``{glue:md}``.

    Returns:
        the text, e.g. ``"3.4 min (quick profile, a 2-core CPU (1 torch thread))"``.
    """
    text = run_time_text(time.monotonic() - mini_decoders.IMPORTED_AT, profile, machine_description())
    print(f"This chapter ran in {text}.")
    try:  # the book build (MyST-NB) pastes it into the introduction; elsewhere the print is the record
        from IPython.display import Markdown
        from myst_nb import glue
    except ImportError:
        return text
    glue(name, Markdown(text), display=False)
    return text
