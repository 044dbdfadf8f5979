"""An architecture as people read it: where its MACs and parameters go, block by block, as a
table (terminal and HTML) and as a block diagram (SVG) for the report.

The costs come from the one cost model (:func:`nasconv.model.cost.profile`), grouped by the
module they belong to: the stem, each block of each stage (operator, BatchNorm, SE), the head.
The shares therefore add up to the trial's recorded params and MACs.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

from ..model.arch import Arch, StageArch, build_model, input_shape
from ..model.cost import profile
from ..ops import short_label
from . import display


@dataclass(frozen=True, kw_only=True)
class BlockCost:
    """One block of a network (the stem, one block of a stage, or the head) and its costs."""

    name: str
    """``stem``, ``s1.b0`` (stage 1, block 0) or ``head``."""
    stage: int | None
    kind: str
    options: str
    """Kernel, dilation and the kind's options, for people (``5×5, dilation 2``)."""
    in_channels: int
    out_channels: int
    stride: int
    out_size: int
    se: float
    activation: str
    params: int
    macs: int
    params_share: float
    macs_share: float


@dataclass(frozen=True, kw_only=True)
class Breakdown:
    """Where an architecture's costs go: every block in forward order, and the totals."""

    arch: Arch
    blocks: tuple[BlockCost, ...]
    params: int
    macs: int

    def stage_blocks(self, stage: int) -> list[BlockCost]:
        return [b for b in self.blocks if b.stage == stage]


def options_text(stage: StageArch) -> str:
    """A stage's kernel, dilation and kind options as people read them."""
    parts = [f"{stage.kernel}×{stage.kernel}"]
    if stage.dilation != 1:
        parts.append(f"dilation {stage.dilation}")
    for name, option in stage.options:
        shown = "-".join(str(v) for v in option) if isinstance(option, (list, tuple)) else option
        parts.append(f"{name} {shown}")
    return ", ".join(parts)


def breakdown(arch: Arch) -> Breakdown:
    """Profile ``arch`` once (batch 1) and group the per-layer costs by block."""
    prof = profile(build_model(arch), input_shape(arch))
    sums: dict[str, list[int]] = {}
    for layer in prof.layers:
        head, _, rest = layer.name.partition(".")
        key = f"blocks.{rest.partition('.')[0]}" if head == "blocks" else head
        total = sums.setdefault(key, [0, 0])
        total[0] += layer.params
        total[1] += layer.macs

    def share(part: int, whole: int) -> float:
        return part / whole if whole else 0.0

    def cost(key: str) -> dict[str, Any]:
        params, macs = sums.get(key, [0, 0])
        return {
            "params": params,
            "macs": macs,
            "params_share": share(params, prof.params),
            "macs_share": share(macs, prof.macs),
        }

    size = -(-arch.input_size // arch.stem_stride)
    blocks = [
        BlockCost(
            name="stem",
            stage=None,
            kind="standard",
            options=f"{arch.stem_kernel}×{arch.stem_kernel}",
            in_channels=arch.input_channels,
            out_channels=arch.stem_channels,
            stride=arch.stem_stride,
            out_size=size,
            se=0.0,
            activation="relu",
            **cost("stem"),
        )
    ]
    channels, index = arch.stem_channels, 0
    for s, stage in enumerate(arch.stages):
        for b in range(stage.depth):
            stride = stage.stride if b == 0 else 1
            size = -(-size // stride)
            blocks.append(
                BlockCost(
                    name=f"s{s}.b{b}",
                    stage=s,
                    kind=stage.kind,
                    options=options_text(stage),
                    in_channels=channels,
                    out_channels=stage.channels,
                    stride=stride,
                    out_size=size,
                    se=stage.se,
                    activation=stage.activation,
                    **cost(f"blocks.{index}"),
                )
            )
            channels, index = stage.channels, index + 1
    blocks.append(
        BlockCost(
            name="head",
            stage=None,
            kind="pool + linear",
            options=f"dropout {arch.dropout:g}" if arch.dropout else "",
            in_channels=channels,
            out_channels=arch.classes,
            stride=1,
            out_size=1,
            se=0.0,
            activation="",
            **cost("head"),
        )
    )
    return Breakdown(arch=arch, blocks=tuple(blocks), params=prof.params, macs=prof.macs)


TABLE_COLUMNS = ("block", "kind", "options", "channels", "stride", "output", "SE", "params", "share", "MACs", "share ")


def block_rows(parts: Breakdown) -> list[tuple[str, ...]]:
    """The block table, formatted: one row per block and a total row (columns: ``TABLE_COLUMNS``)."""
    rows: list[tuple[str, ...]] = []
    for b in parts.blocks:
        rows.append(
            (
                b.name,
                b.kind,
                b.options or display.MISSING,
                f"{b.in_channels}→{b.out_channels}",
                str(b.stride),
                f"{b.out_channels}×{b.out_size}×{b.out_size}" if b.name != "head" else f"{b.out_channels} classes",
                f"{b.se:g}" if b.se else display.MISSING,
                display.count(b.params),
                display.share(b.params_share),
                display.count(b.macs),
                display.share(b.macs_share),
            )
        )
    rows.append(("total", "", "", "", "", "", "", display.count(parts.params), "", display.count(parts.macs), ""))
    return rows


def describe(arch: Arch | str | dict[str, Any] | None) -> str:
    """One line for hover text, with channels and strides (two trials with the same short name
    differ there): ``stem 8 → dsc 16 ×2 → ghost(r2) 24 /2 SE → dsc 32 /2``."""
    if arch is None or (isinstance(arch, float) and arch != arch):
        return display.MISSING
    data = json.loads(arch) if isinstance(arch, str) else arch.to_dict() if isinstance(arch, Arch) else arch
    parts = [f"stem {data['stem_channels']}"]
    for s in data["stages"]:
        text = f"{short_label(s['kind'], s['kernel'], s['dilation'], dict(s.get('options') or {}))} {s['channels']}"
        if s.get("depth", 1) > 1:
            text += f" ×{s['depth']}"
        if s.get("stride", 1) > 1:
            text += f" /{s['stride']}"
        if s.get("se"):
            text += " SE"
        parts.append(text)
    return " → ".join(parts)


# --- the block diagram ------------------------------------------------------------------------

_BOX_W, _BOX_H, _GAP, _PAD, _LINE = 150, 176, 30, 10, 15
_HEADER = 26


def _text(x: float, y: float, text: str, **attrs: Any) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{html.escape(str(v))}"' for k, v in attrs.items())
    return f'<text x="{x:.0f}" y="{y:.0f}"{extra}>{html.escape(text)}</text>'


def _bar(x: float, y: float, width: float, fraction: float, color: str, caption: str) -> str:
    filled = max(0.0, min(1.0, fraction)) * width
    return (
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{width:.0f}" height="7" rx="2" fill="#eee"/>'
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{filled:.1f}" height="7" rx="2" fill="{color}"/>'
        + _text(x, y + 18, caption, font_size=10, fill="#444")
    )


@dataclass(frozen=True)
class _Box:
    title: str
    lines: list[str]
    color: str
    css: str
    params: int
    macs: int
    params_share: float
    macs_share: float


def _draw_box(x: float, box: _Box) -> str:
    out = [
        f'<g class="{box.css}">',
        f'<rect x="{x:.0f}" y="0.5" width="{_BOX_W}" height="{_BOX_H}" rx="6" fill="#fff" stroke="{box.color}" '
        'stroke-width="1.5"/>',
        f'<path d="M{x:.0f},{_HEADER} v-{_HEADER - 6} a6,6 0 0 1 6,-5.5 h{_BOX_W - 12} a6,6 0 0 1 6,5.5 '
        f'v{_HEADER - 6} z" fill="{box.color}"/>',
        _text(x + _PAD, 18, box.title, font_weight="bold", fill="#fff", font_size=12),
    ]
    for i, line in enumerate(box.lines):
        out.append(_text(x + _PAD, _HEADER + 16 + i * _LINE, line, font_size=11, fill="#222"))
    bottom, width = _BOX_H - 58, _BOX_W - 2 * _PAD
    macs = f"MACs {display.count(box.macs)} · {display.share(box.macs_share)}"
    params = f"params {display.count(box.params)} · {display.share(box.params_share)}"
    out.append(_bar(x + _PAD, bottom, width, box.macs_share, box.color, macs))
    out.append(_bar(x + _PAD, bottom + 27, width, box.params_share, box.color, params))
    out.append("</g>")
    return "".join(out)


def _boxes(parts: Breakdown) -> list[_Box]:
    arch = parts.arch
    stem, head = parts.blocks[0], parts.blocks[-1]
    boxes = [
        _Box(
            "stem",
            [
                f"standard {stem.options}",
                f"{arch.stem_channels} ch · stride {arch.stem_stride}",
                "relu",
                f"→ {stem.out_channels}×{stem.out_size}×{stem.out_size}",
            ],
            "#6b6b6b",
            "block stem",
            stem.params,
            stem.macs,
            stem.params_share,
            stem.macs_share,
        )
    ]
    for s, stage in enumerate(arch.stages):
        blocks = parts.stage_blocks(s)
        last = blocks[-1]
        boxes.append(
            _Box(
                f"stage {s} · {stage.kind}",
                [
                    options_text(stage),
                    f"{stage.channels} ch · stride {stage.stride}",
                    f"depth {stage.depth} · " + (f"SE {stage.se:g}" if stage.se else "no SE"),
                    stage.activation,
                    f"→ {last.out_channels}×{last.out_size}×{last.out_size}",
                ],
                display.kind_color(stage.kind),
                "block stage",
                sum(b.params for b in blocks),
                sum(b.macs for b in blocks),
                sum(b.params_share for b in blocks),
                sum(b.macs_share for b in blocks),
            )
        )
    boxes.append(
        _Box(
            "head",
            ["global avg pool", f"linear {head.in_channels}→{arch.classes}", *([head.options] if head.options else [])],
            "#6b6b6b",
            "block head",
            head.params,
            head.macs,
            head.params_share,
            head.macs_share,
        )
    )
    return boxes


def architecture_svg(parts: Breakdown, *, title: str = "", trial: int | None = None) -> str:
    """The network as a row of blocks, input → stem → each stage → head: a stage's kind, options,
    channels, stride, depth, SE and activation, its output shape, and its share of the MACs and
    params as bars. Self-contained SVG (no script, no external fonts, no ids)."""
    arch = parts.arch
    boxes = _boxes(parts)
    input_w = 78
    width = input_w + _GAP + len(boxes) * (_BOX_W + _GAP) - _GAP + 2
    height = _BOX_H + 2
    mid = _BOX_H / 2
    body = [
        f'<g class="input"><rect x="1" y="{mid - 24:.0f}" width="{input_w - 2}" height="48" rx="6" fill="#f4f4f4" '
        'stroke="#999"/>',
        _text(input_w / 2, mid - 4, "input", text_anchor="middle", font_size=11, font_weight="bold"),
        _text(
            input_w / 2,
            mid + 12,
            f"{arch.input_channels}×{arch.input_size}×{arch.input_size}",
            text_anchor="middle",
            font_size=11,
        ),
        "</g>",
    ]
    x = input_w + _GAP
    for box in boxes:
        body.append(  # an arrow drawn, not a <marker>: ids would repeat across the diagrams of a page
            f'<path d="M{x - _GAP + 2:.0f},{mid:.0f} h{_GAP - 9}" stroke="#888" stroke-width="1.5"/>'
            f'<path d="M{x - 2:.0f},{mid:.0f} l-7,-4 v8 z" fill="#888"/>'
        )
        body.append(_draw_box(x, box))
        x += _BOX_W + _GAP
    label = title or f"{arch.short()}: {display.count(parts.params)} params, {display.count(parts.macs)} MACs"
    trial_attr = f' data-trial="{trial}"' if trial is not None else ""
    return (
        f'<svg class="arch" xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" font-family="system-ui, sans-serif"{trial_attr}>'
        f"<title>{html.escape(label)}</title>" + "".join(body) + "</svg>"
    )


__all__ = [
    "TABLE_COLUMNS",
    "BlockCost",
    "Breakdown",
    "architecture_svg",
    "block_rows",
    "breakdown",
    "describe",
    "options_text",
]
