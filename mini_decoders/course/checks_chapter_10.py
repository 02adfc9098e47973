"""Checks of chapter 10's exercises (what is a token?): each re-derives one piece of the token lab.

Every check takes the student's function, runs it on fresh random inputs plus fixed edge cases,
and compares it with the package's implementation (see :mod:`mini_decoders.course.checking`).
"""

from __future__ import annotations

import numpy as np

from mini_decoders.course.checking import CheckFailed, call_student, compare, fresh_seed, passed, student_name
from mini_decoders.course.registry import exercise
from mini_decoders.models.token_lab import TOKEN_KINDS, LabUnits, match_width, own_count, tokens_per_window

CH10 = "10_what_is_a_token"

TOKEN_HINTS = {
    "spikes": "one token per spike, N·r per second, plus a start and an end token per neuron in every window "
              "(2N per window of T s: 2N / T per second)",
    "bins": "one token per bin: 1 / bin_size per second, whatever the neurons or the firing",
    "patches": "one token per bin and group of P neurons: ceil(N / P) / bin_size per second (round the groups up: "
               "-(-N // P))",
    "codes": "one code per W bins: ceil(n / W) codes in a window of n = round(T / bin_size) bins (a last, partial "
             "group still makes a code), divided by T",
    "conv": "one token per stride s bins: ceil(n / s) in a window of n = round(T / bin_size) bins, divided by T",
}


@exercise(function="my_tokens_per_second", source=CH10, reference="mini_decoders.models.token_lab.tokens_per_window")
def check_lab_tokens_per_second(student_fn) -> None:
    """Tokens per second of data of the token lab's five tokenizers."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = [(f"seed {seed}", int(rng.integers(5, 200)), float(rng.uniform(1, 40)), 0.02 * int(rng.integers(10, 150)),
              0.02, 4, 2, 2)]
    cases += [("neurons not a multiple of the patch size, an odd number of bins", 37, 16.0, 0.98, 0.02, 4, 2, 2),
              ("no spikes at all: only the start and end tokens", 24, 0.0, 1.0, 0.02, 4, 2, 2),
              ("10 ms bins, 8 neurons per patch, 3 bins per code, stride 4", 50, 12.5, 0.5, 0.01, 8, 3, 4)]
    for case, n_neurons, rate, window, bin_size, per_patch, per_code, stride in cases:
        got = call_student(student_fn, (n_neurons, rate, window, bin_size, per_patch, per_code, stride), case=case)
        if not isinstance(got, dict) or set(got) != set(TOKEN_KINDS):
            keys = sorted(got) if isinstance(got, dict) else type(got).__name__
            raise CheckFailed(f"`{student_name(student_fn)}` should return a dict with the keys {list(TOKEN_KINDS)}, "
                              f"got {keys}")
        for kind in TOKEN_KINDS:
            expected = tokens_per_window(kind, n_neurons, rate, window, bin_size, neurons_per_patch=per_patch,
                                         bins_per_code=per_code, conv_stride=stride) / window
            hint = TOKEN_HINTS[kind]
            try:
                value = float(got[kind])
            except (TypeError, ValueError):
                value = None
            if value is not None and np.isclose(value, expected * window) and not np.isclose(window, 1.0):
                hint = "that is tokens per *window*: divide by the window's length T for tokens per second"
            elif kind == "spikes" and value is not None and np.isclose(value, n_neurons * rate):
                hint = "the spikes alone: each neuron also has a start and an end token in every window (2N / T per s)"
            compare(got[kind], expected, what=f"{kind} tokens per second", case=case, kind="number", rtol=1e-9,
                    hint=hint)
    passed(student_name(student_fn), "mini_decoders.models.token_lab.tokens_per_window", len(cases))


@exercise(function="my_match_width", source=CH10, reference="mini_decoders.models.token_lab.match_width")
def check_match_width(student_fn) -> None:
    """The width that matches a tokenizer's own parameter count to a target."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    heldin = [int(rng.integers(6, 30)), int(rng.integers(6, 30))]
    units = LabUnits(heldin, [4, 5], [f"s{s}/u{i}" for s, n in enumerate(heldin) for i in range(n)],
                     int(rng.integers(20, 60)))
    dim = 32
    target = own_count("bins", dim, units, dim)
    cases = []
    for kind in ("spikes", "conv"):
        widths = list(range(2, 65, 2))
        cases.append((f"the {kind} tokenizer against the bin tokenizer's {target:,} parameters, seed {seed}",
                      lambda width, kind=kind: own_count(kind, width, units, dim), target, widths,
                      match_width(kind, target, units, dim, widths)))

    def dip(width):  # grows, but drops where an adapter disappears (as at width == D)
        return 100 * width + (5000 if width != 32 else 0)

    cases.append(("a count that is not monotonic: it drops at one width", dip, 3000, list(range(2, 65, 2)), 32))
    cases.append(("two widths equally close: the first of them in `widths` wins (as min does)", lambda w: 10 * w, 45,
                  [6, 5, 4, 3], 5))
    cases.append(("a target below every count: the smallest", lambda w: 1000 + w, 10, [40, 20, 30], 20))
    for case, count, target_, widths, expected in cases:
        got = call_student(student_fn, (count, target_, list(widths)), case=case)
        hint = ("the width w (from `widths`) whose |count(w) - target| is smallest; on a tie the first of them in "
                "`widths` (min(widths, key=...) does both)")
        try:
            if not isinstance(got, (int, np.integer)) or got not in widths:
                hint = "return the width itself (an entry of `widths`), not its parameter count or its position"
            elif got == min(widths, key=count) != expected:
                hint = "closest in *absolute* difference |count(w) - target|, above or below the target"
            elif abs(count(got) - target_) > abs(count(expected) - target_):
                hint = ("a width closer to the target exists: try every width. The count is not monotonic in the "
                        "width (where the adapter disappears it drops), so a bisection, or stopping once the gap "
                        "grows, misses it")
        except TypeError:
            pass
        compare(got, expected, what="the matched width", case=case, kind="number", hint=hint)
    passed(student_name(student_fn), "mini_decoders.models.token_lab.match_width", len(cases))
