"""Architecture diagrams: boxes and arrows, drawn with matplotlib (no graph library needed).

Each chapter draws its model as a block diagram from a short spec::

    block_diagram([("spikes", "spike tokens\\n(unit emb + type)", 0, 1),
                   ("latents", "latents\\n(K per 125 ms)", 3, 1)],
                  [("spikes", "latents", "cross-attn")])

A block is ``(name, text, x, y)`` (centre, in canvas units) plus optional ``width``, ``height`` and
``color`` keys in a trailing dict; an arrow is ``(from, to)`` or ``(from, to, label)``. Arrows
are clipped at the box edges, so a spec says only what connects to what.
"""

from __future__ import annotations

from typing import Sequence

BlockSpec = tuple  # (name, text, x, y[, {"width": w, "height": h, "color": c}])
ArrowSpec = tuple  # (from, to[, label[, {"style": "dashed"}]])
PALETTE = {"data": "#dbe9f6", "token": "#fde9d9", "model": "#e2efda", "head": "#fff2cc", "loss": "#eadcf4"}


def block_diagram(blocks: Sequence[BlockSpec], arrows: Sequence[ArrowSpec], ax=None, title: str | None = None,
                  figsize: tuple[float, float] = (10.0, 3.0), fontsize: float = 8.5):
    """Draw boxes with centred text and arrows between them; returns the axes.

    Args:
        blocks: ``(name, text, x, y)`` or ``(name, text, x, y, options)``; options may set
            ``width`` (default 1.6), ``height`` (default 0.8) and ``color`` (a colour or a key of
            ``PALETTE``: data, token, model, head, loss).
        arrows: ``(from, to)``, ``(from, to, label)`` or ``(from, to, label, {"style": "dashed"})``.

    Raises:
        ValueError: an arrow names a block that is not in ``blocks``.
    """
    import matplotlib.pyplot as plt  # only drawing needs it; importing the package must not need a display
    from matplotlib.patches import FancyBboxPatch

    if ax is None:
        ax = plt.subplots(figsize=figsize)[1]
    patches = {}
    xs, ys = [], []
    for spec in blocks:
        name, text, x, y = spec[:4]
        options = spec[4] if len(spec) > 4 else {}
        width, height = float(options.get("width", 1.6)), float(options.get("height", 0.8))
        color = PALETTE.get(options.get("color", "model"), options.get("color", "model"))
        patch = FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.02,rounding_size=0.08",
                               facecolor=color, edgecolor="0.3", linewidth=1.0)
        ax.add_patch(patch)
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
        patches[name] = patch
        xs += [x - width / 2, x + width / 2]
        ys += [y - height / 2, y + height / 2]
    for spec in arrows:
        source, target = spec[0], spec[1]
        label = spec[2] if len(spec) > 2 else ""
        options = spec[3] if len(spec) > 3 else {}
        missing = [n for n in (source, target) if n not in patches]
        if missing:
            raise ValueError(f"block_diagram: arrow {source!r} -> {target!r} names unknown block(s) {missing}")
        a, b = patches[source], patches[target]
        start = (a.get_x() + a.get_width() / 2, a.get_y() + a.get_height() / 2)
        end = (b.get_x() + b.get_width() / 2, b.get_y() + b.get_height() / 2)
        ax.annotate("", xy=end, xytext=start,
                    arrowprops=dict(arrowstyle="-|>", color="0.25", lw=1.1, patchA=a, patchB=b, shrinkA=2, shrinkB=2,
                                    linestyle=options.get("style", "solid"), connectionstyle=options.get("connection", "arc3")))
        if label:
            ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.12, label, ha="center", va="bottom",
                    fontsize=fontsize - 1, color="0.2", style="italic")
    if xs:
        ax.set_xlim(min(xs) - 0.3, max(xs) + 0.3)
        ax.set_ylim(min(ys) - 0.3, max(ys) + 0.3)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=fontsize + 1)
    return ax
