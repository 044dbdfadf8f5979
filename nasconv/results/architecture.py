"""An architecture as people read it: where its MACs and parameters go, block by block, as a
table (terminal and HTML) and as a block diagram (SVG) for the report.

The costs come from the one cost model (:func:`nasconv.model.cost.profile`), grouped by the
module they belong to: the stem, each block of each stage (operator, BatchNorm, SE), the head.
The shares therefore add up to the trial's recorded params and MACs.
"""

from __future__ import annotations

import html
import json
import math
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


def option_parts(stage: StageArch) -> list[str]:
    """A stage's kernel, dilation and kind options as people read them, one part each: a flag is
    named when on (``depthwise``, ``shuffle``) and left out when off, as in the short labels."""
    parts = [f"{stage.kernel}×{stage.kernel}"] if stage.uses_kernel else []
    if stage.dilation != 1:
        parts.append(f"dilation {stage.dilation}")
    for name, option in stage.options:
        if isinstance(option, bool):
            if option:
                parts.append(name)
        elif isinstance(option, (list, tuple)):
            parts.append(f"{name} {'-'.join(str(v) for v in option)}")
        elif option is not None:
            parts.append(f"{name} {option:g}" if isinstance(option, float) else f"{name} {option}")
    return parts


def options_text(stage: StageArch) -> str:
    """:func:`option_parts` in one line: ``3×3, experts 4``, ``3×3, depthwise, experts 4``."""
    return ", ".join(option_parts(stage))


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


TABLE_COLUMNS = (
    "block",
    "kind",
    "options",
    "channels",
    "stride",
    "output",
    "SE",
    "params",
    "params %",
    "MACs",
    "MACs %",
)
"""The block table of the report page (:func:`block_rows`)."""

TERMINAL_COLUMNS = ("block", "conv", "output", "params", "MACs")
"""The block table of ``nasconv report DIR --trial N`` (:func:`terminal_rows`): narrow enough for 80
columns, the conv column wraps."""


def _output(b: BlockCost) -> str:
    return f"{b.out_channels}×{b.out_size}×{b.out_size}" if b.name != "head" else f"{b.out_channels} classes"


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
                _output(b),
                f"{b.se:g}" if b.se else display.MISSING,
                display.count(b.params),
                display.share(b.params_share),
                display.count(b.macs),
                display.share(b.macs_share),
            )
        )
    rows.append(("total", "", "", "", "", "", "", display.count(parts.params), "", display.count(parts.macs), ""))
    return rows


def terminal_rows(parts: Breakdown) -> list[tuple[str, ...]]:
    """The block table for a terminal (columns: ``TERMINAL_COLUMNS``): the kind with its options,
    stride and SE in one wrapping ``conv`` cell, params and MACs each with their share."""

    def with_share(value: int, fraction: float | None) -> str:
        return f"{display.count(value):>5} {display.share(fraction) if fraction is not None else '':>4}"

    rows: list[tuple[str, ...]] = []
    for b in parts.blocks:
        conv = [b.options] if b.options else []
        if b.stride != 1:
            conv.append(f"stride {b.stride}")
        if b.se:
            conv.append(f"SE {b.se:g}")
        rows.append(
            (
                b.name,
                f"{b.kind} {', '.join(conv)}".strip(),
                _output(b),
                with_share(b.params, b.params_share),
                with_share(b.macs, b.macs_share),
            )
        )
    rows.append(("total", "", "", with_share(parts.params, None), with_share(parts.macs, None)))
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

# Advance widths of DejaVu Sans (regular, bold) in 1/1000 em for the printable ASCII characters and
# × → · – : the font Chromium falls back to for system-ui on Linux, and wider than the system fonts
# of macOS and Windows, so text measured with it fits in any of them.
_FONT_CHARS = "".join(chr(c) for c in range(32, 127)) + "×→·–"
_REGULAR = (
    "318 401 460 838 636 950 780 275 390 390 500 838 318 361 318 337 636 636 636 636 636 636 636 636 636 636 "
    "337 337 838 838 838 531 1000 684 686 698 770 632 575 775 752 295 295 656 557 863 748 787 603 787 695 635 "
    "611 732 684 989 685 611 685 390 337 390 838 500 500 613 635 550 635 615 352 635 634 278 278 579 278 974 "
    "634 612 635 635 411 521 392 634 592 818 592 592 525 636 337 636 838 838 838 318 500"
)
_BOLD = (
    "348 456 521 838 696 1002 872 306 457 457 523 838 380 415 380 365 696 696 696 696 696 696 696 696 696 696 "
    "400 400 838 838 838 580 1000 774 762 734 830 683 683 821 837 372 372 775 637 995 837 850 733 850 770 720 "
    "682 812 774 1103 771 724 725 457 365 457 838 500 500 675 716 593 716 678 435 716 712 343 343 665 343 1042 "
    "712 687 716 716 493 595 478 712 652 924 645 652 582 712 365 712 838 838 838 380 500"
)
_WIDTHS = {
    False: dict(zip(_FONT_CHARS, map(int, _REGULAR.split()))),
    True: dict(zip(_FONT_CHARS, map(int, _BOLD.split()))),
}


def text_width(text: str, size: float, *, bold: bool = False) -> float:
    """The width of ``text`` in pixels at font ``size`` (an unknown character counts one em)."""
    widths = _WIDTHS[bold]
    return size * sum(widths.get(ch, 1000) for ch in text) / 1000


_MIN_W, _MAX_W, _GAP, _PAD, _LINE = 150, 236, 30, 10, 15
_HEADER = 26
_TITLE_SIZE, _TEXT_SIZE, _CAPTION_SIZE = 12, 11, 10


def _text(x: float, y: float, text: str, **attrs: Any) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{html.escape(str(v))}"' for k, v in attrs.items())
    return f'<text x="{x:.0f}" y="{y:.0f}"{extra}>{html.escape(text)}</text>'


def _bar(x: float, y: float, width: float, fraction: float, color: str, caption: str) -> str:
    filled = max(0.0, min(1.0, fraction)) * width
    return (
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{width:.0f}" height="7" rx="2" fill="#eee"/>'
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{filled:.1f}" height="7" rx="2" fill="{color}"/>'
        + _text(x, y + 18, caption, font_size=_CAPTION_SIZE, fill="#444")
    )


def wrap(parts: list[str], width: float, size: float) -> list[str]:
    """``parts`` joined with ", " into lines no wider than ``width`` pixels at font ``size``, broken
    only between parts (a part wider than a line gets a line of its own)."""
    lines: list[str] = []
    for i, part in enumerate(parts):
        comma = "," if i < len(parts) - 1 else ""  # a line that goes on ends in a comma: room for it
        if lines and text_width(f"{lines[-1]}, {part}{comma}", size) <= width:
            lines[-1] = f"{lines[-1]}, {part}"
        else:
            if lines:
                lines[-1] += ","
            lines.append(part)
    return lines


@dataclass(frozen=True)
class _Box:
    title: str
    lines: list[list[str]]
    """Each line as its parts: a line too long for the box wraps between parts."""
    color: str
    css: str
    params: int
    macs: int
    params_share: float
    macs_share: float

    def captions(self) -> tuple[str, str]:
        return (
            f"MACs {display.count(self.macs)} · {display.share(self.macs_share)}",
            f"params {display.count(self.params)} · {display.share(self.params_share)}",
        )

    def width(self) -> float:
        """Wide enough for its title, captions and its widest part, at least ``_MIN_W``; lines wrap at
        ``_MAX_W``."""
        needed = max(
            text_width(self.title, _TITLE_SIZE, bold=True),
            *(text_width(c, _CAPTION_SIZE) for c in self.captions()),
            *(text_width(", ".join(line), _TEXT_SIZE) for line in self.lines),
        )
        widest_part = max((text_width(p + ",", _TEXT_SIZE) for line in self.lines for p in line), default=0.0)
        return float(math.ceil(max(_MIN_W, min(_MAX_W, needed + 2 * _PAD + 2), widest_part + 2 * _PAD + 2)))

    def wrapped(self) -> list[str]:
        inner = self.width() - 2 * _PAD - 2
        return [text for line in self.lines for text in wrap(line, inner, _TEXT_SIZE)]


def _box_height(lines: int) -> float:
    return _HEADER + 16 + (lines - 1) * _LINE + 14 + 54


def _draw_box(x: float, box: _Box, height: float) -> str:
    width = box.width()
    out = [
        f'<g class="{box.css}">',
        f'<rect x="{x:.0f}" y="0.5" width="{width:.0f}" height="{height:.0f}" rx="6" fill="#fff" '
        f'stroke="{box.color}" stroke-width="1.5"/>',
        f'<path d="M{x:.0f},{_HEADER} v-{_HEADER - 6} a6,6 0 0 1 6,-5.5 h{width - 12:.0f} a6,6 0 0 1 6,5.5 '
        f'v{_HEADER - 6} z" fill="{box.color}"/>',
        _text(
            x + _PAD, 18, box.title, font_weight="bold", fill=display.contrast_text(box.color), font_size=_TITLE_SIZE
        ),
    ]
    for i, line in enumerate(box.wrapped()):
        out.append(_text(x + _PAD, _HEADER + 16 + i * _LINE, line, font_size=_TEXT_SIZE, fill="#222"))
    bottom, bar_width = height - 54, width - 2 * _PAD
    macs, params = box.captions()
    out.append(_bar(x + _PAD, bottom, bar_width, box.macs_share, box.color, macs))
    out.append(_bar(x + _PAD, bottom + 27, bar_width, box.params_share, box.color, params))
    out.append("</g>")
    return "".join(out)


def _boxes(parts: Breakdown) -> list[_Box]:
    arch = parts.arch
    stem, head = parts.blocks[0], parts.blocks[-1]
    boxes = [
        _Box(
            "stem",
            [
                [f"standard {stem.options}"],
                [f"{arch.stem_channels} ch · stride {arch.stem_stride}"],
                ["relu"],
                [f"→ {stem.out_channels}×{stem.out_size}×{stem.out_size}"],
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
                    option_parts(stage),
                    [f"{stage.channels} ch · stride {stage.stride}"],
                    [f"depth {stage.depth} · " + (f"SE {stage.se:g}" if stage.se else "no SE")],
                    [stage.activation],
                    [f"→ {last.out_channels}×{last.out_size}×{last.out_size}"],
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
            [
                ["global avg pool"],
                [f"linear {head.in_channels}→{arch.classes}"],
                *([[head.options]] if head.options else []),
            ],
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
    params as bars. Each box is as wide as its text (long option lists wrap), the header text dark
    or white by the kind colour's luminance. Self-contained SVG (no script, no external fonts, no ids)."""
    arch = parts.arch
    boxes = _boxes(parts)
    box_height = _box_height(max(len(b.wrapped()) for b in boxes))
    input_w = 78
    width = input_w + _GAP + sum(b.width() + _GAP for b in boxes) - _GAP + 2
    height = box_height + 2
    mid = box_height / 2
    body = [
        f'<g class="input"><rect x="1" y="{mid - 24:.0f}" width="{input_w - 2}" height="48" rx="6" fill="#f4f4f4" '
        'stroke="#999"/>',
        _text(input_w / 2, mid - 4, "input", text_anchor="middle", font_size=_TEXT_SIZE, font_weight="bold"),
        _text(
            input_w / 2,
            mid + 12,
            f"{arch.input_channels}×{arch.input_size}×{arch.input_size}",
            text_anchor="middle",
            font_size=_TEXT_SIZE,
        ),
        "</g>",
    ]
    x: float = input_w + _GAP
    for box in boxes:
        body.append(  # an arrow drawn, not a <marker>: ids would repeat across the diagrams of a page
            f'<path d="M{x - _GAP + 2:.0f},{mid:.0f} h{_GAP - 9}" stroke="#888" stroke-width="1.5"/>'
            f'<path d="M{x - 2:.0f},{mid:.0f} l-7,-4 v8 z" fill="#888"/>'
        )
        body.append(_draw_box(x, box, box_height))
        x += box.width() + _GAP
    label = title or f"{arch.short()}: {display.count(parts.params)} params, {display.count(parts.macs)} MACs"
    trial_attr = f' data-trial="{trial}"' if trial is not None else ""
    return (
        f'<svg class="arch" xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" font-family="system-ui, sans-serif"{trial_attr}>'
        f"<title>{html.escape(label)}</title>" + "".join(body) + "</svg>"
    )


__all__ = [
    "TABLE_COLUMNS",
    "TERMINAL_COLUMNS",
    "BlockCost",
    "Breakdown",
    "architecture_svg",
    "block_rows",
    "breakdown",
    "describe",
    "option_parts",
    "options_text",
    "terminal_rows",
    "text_width",
    "wrap",
]
