"""What happened during training: the logged records a notebook plots, and the window behind each log line."""

from __future__ import annotations

import time

import numpy as np


class History:
    """What happened during training: one dict per logged step.

    ``records`` is a list like ``[{"step": 10, "loss": 0.8, "lr": 1e-3, "samples_per_second": 950.0,
    "samples_seen": 320}, {"step": 20, ..., "val_loss": 0.7}]``; training and validation values of
    the same step share one record. Everything is a plain float/int, so ``to_dict()`` is JSON-able.
    """

    def __init__(self, records: list[dict] | None = None):
        self.records: list[dict] = [dict(record) for record in records or []]

    def log(self, step: int, values: dict[str, float]) -> None:
        """Add ``values`` to the record of ``step`` (appended when it is a new step)."""
        if not self.records or self.records[-1]["step"] != step:
            self.records.append({"step": int(step)})
        self.records[-1].update({key: float(value) for key, value in values.items()})

    def values(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of every record that holds ``key``."""
        pairs = [(record["step"], record[key]) for record in self.records if key in record]
        steps, values = zip(*pairs) if pairs else ((), ())
        return np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)

    def to_dict(self) -> dict:
        return {"records": [dict(record) for record in self.records]}

    @classmethod
    def from_dict(cls, data: dict) -> "History":
        return cls(data.get("records", []))

    def plot(self, ax=None, keys: tuple[str, ...] = ("loss",)):
        """Plot ``keys`` against step on ``ax`` (a new figure when None); returns the axes."""
        import matplotlib.pyplot as plt  # only notebooks plot; training should not import pyplot

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        for key in keys:
            steps, values = self.values(key)
            ax.plot(steps, values, label=key, marker="o" if len(steps) < 30 else None)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(", ".join(keys))
        ax.legend()
        return ax

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"History({len(self.records)} records, last={self.records[-1] if self.records else None})"


class LogWindow:
    """Running sums of the losses and extra logs since the last log line, and the time they took."""

    def __init__(self):
        self.n_steps, self.loss_sum, self.extra_sums = 0, 0.0, {}
        self.restart_clock()

    def restart_clock(self) -> None:
        # Validation and checkpoint time would otherwise count as training time.
        self.start, self.steps_before_clock = time.perf_counter(), getattr(self, "n_steps", 0)

    def add(self, loss_value: float, extras: dict[str, float]) -> None:
        self.n_steps += 1
        self.loss_sum += loss_value
        for key, value in extras.items():
            self.extra_sums[key] = self.extra_sums.get(key, 0.0) + float(value)

    def summary(self, batch_size: int) -> dict[str, float]:
        timed_steps = self.n_steps - self.steps_before_clock
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return {"loss": self.loss_sum / max(1, self.n_steps),
                **{key: total / max(1, self.n_steps) for key, total in self.extra_sums.items()},
                "samples_per_second": timed_steps * batch_size / elapsed}
