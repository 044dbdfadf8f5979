"""``nasconv export``: carry one trial's architecture into deployment, verified.

Writes arch.yaml, model.pt (state_dict), model.onnx, model.ts (TorchScript) and model.py (a
standalone module file that needs torch only), then checks each format's output against the
PyTorch model on random input. A failed check is an error. ``metrics.json`` beside them says where
the weights come from (retrained, kept from the search, or untrained) and their validation and
test accuracy.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import inspect
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..errors import NasconvError
from ..model import arch as arch_module
from ..model.arch import Arch, build_model, input_shape, load_arch
from ..ops import base as ops_base
from ..ops import op_class
from .folder import trial_row
from .front import knee

FORMATS = ("arch", "pt", "onnx", "ts", "py")
TOLERANCE = 1e-4
METRICS_FILE = "metrics.json"


class VerificationError(NasconvError):
    """An exported format disagrees with the PyTorch model."""


@dataclass(frozen=True, kw_only=True)
class Rule:
    max_macs: float | None = None
    max_params: float | None = None
    max_latency_ms: float | None = None
    min_accuracy: float | None = None

    def checks(self) -> list[tuple[str, str, float]]:
        out = []
        for name, column, sense in (
            ("max_macs", "macs", "max"),
            ("max_params", "params", "max"),
            ("max_latency_ms", "latency_ms", "max"),
            ("min_accuracy", "accuracy", "min"),
        ):
            value = getattr(self, name)
            if value is not None:
                out.append((column, sense, float(value)))
        return out

    def __bool__(self) -> bool:
        return bool(self.checks())


def pick_trial(
    df: pd.DataFrame, *, trial: int | None = None, use_knee: bool = False, rule: Rule | None = None
) -> pd.Series:
    """One trial by number, the knee, or the most accurate trained trial that meets ``rule``."""
    objectives = df.attrs.get("objectives") or []
    if trial is not None:
        return trial_row(df, trial)
    if use_knee:
        return knee(df, objectives)
    rule = rule or Rule()
    trained = df[df["state"] == "COMPLETE"].copy()
    if trained.empty:
        raise NasconvError("no completed feasible trial to export yet")
    ok = pd.Series(True, index=trained.index)
    for column, sense, limit in rule.checks():
        if column not in trained or trained[column].isna().all():
            raise NasconvError(f"the study has no {column} figures to apply that rule to")
        ok &= trained[column] <= limit if sense == "max" else trained[column] >= limit
    if ok.any():
        return trained[ok].sort_values("accuracy" if "accuracy" in trained else "number", ascending=False).iloc[0]
    miss = pd.Series(0.0, index=trained.index)
    for column, sense, limit in rule.checks():
        over = (trained[column] - limit) / abs(limit) if sense == "max" else (limit - trained[column]) / abs(limit)
        miss += over.clip(lower=0)
    nearest = trained.assign(_miss=miss).sort_values("_miss").head(3)
    cols = [c for c in ("accuracy", "macs", "params", "latency_ms") if c in nearest and nearest[c].notna().any()]
    listing = "; ".join(
        f"trial {int(r['number'])}: " + ", ".join(f"{c} {r[c]:.4g}" for c in cols) for _, r in nearest.iterrows()
    )
    raise NasconvError(f"no trained trial meets the rule; nearest: {listing}")


# ---------------------------------------------------------------- standalone model.py

_HEADER = '''"""Standalone network exported by nasconv: needs torch only.

    from model import build_model
    net = build_model()
    net.load_state_dict(torch.load("model.pt", weights_only=True))

Architecture: {short}
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
{imports}
_REGISTRY: dict = {{}}


def register(kind):
    def decorate(cls):
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return decorate


def build_conv(kind, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, bias=False, **params):
    return _REGISTRY[kind](in_channels, out_channels, kernel_size, stride, dilation, bias, **params)

'''


def _source(obj: Any) -> str:
    return inspect.getsource(obj).rstrip() + "\n\n"


# what a network does not run: the test oracle, the closed forms and what the space schema and the
# encoding read (option_rules names nasconv's own rule objects)
_NOT_STANDALONE = frozenset(
    {
        "reference_forward",
        "has_reference",
        "closed_form_params",
        "closed_form_macs",
        "params_formula",
        "macs_formula",
        "inert_options",
        "option_rules",
        "__init_subclass__",
    }
)


def _member_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return {node.name}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    return set()


def _class_source(cls: type) -> str:
    """A class's source without the members a network does not run (``_NOT_STANDALONE``)."""
    source = inspect.getsource(cls)
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    for node in reversed(tree.body[0].body):  # type: ignore[attr-defined]
        if _member_names(node) & _NOT_STANDALONE:
            decorators = getattr(node, "decorator_list", [])
            start = min([node.lineno, *(d.lineno for d in decorators)]) - 1
            end = node.end_lineno
            # the comment lines (#: ...) that document the member go with it
            while start > 0 and lines[start - 1].strip().startswith("#"):
                start -= 1
            del lines[start:end]
    return "".join(lines).rstrip() + "\n\n"


def standalone_source(arch: Arch) -> str:
    """Python source of a torch-only module file that defines exactly ``build_model(arch)``: the
    base operator, each kind the architecture uses with the helpers its class declares in
    ``standalone`` and the imports it declares in ``standalone_imports``, the block builder, and the
    architecture itself."""
    kinds = ["standard", *sorted({s.kind for s in arch.stages} - {"standard"})]
    header = _HEADER.format(short=arch.short(), imports="")
    present = set(header.splitlines())
    extra = [line for kind in kinds for line in op_class(kind).standalone_imports if line.strip() not in present]
    imports = "".join(f"{line.strip()}\n" for line in dict.fromkeys(extra))
    parts = [
        _HEADER.format(short=arch.short(), imports=imports),
        _source(ops_base.positive_int),
        _source(ops_base.kaiming_),
        _class_source(ops_base.ConvOp),
    ]
    copied: set[int] = set()
    for kind in kinds:
        cls = op_class(kind)
        for helper in cls.standalone:
            if id(helper) not in copied:
                copied.add(id(helper))
                parts.append(_class_source(helper) if inspect.isclass(helper) else _source(helper))
        parts.append(_class_source(cls))
    acts = ", ".join(f'"{k}": nn.{v.__name__}' for k, v in arch_module.ACTIVATIONS.items())
    parts.append(f"ACTIVATIONS = {{{acts}}}\n\n")
    parts += [
        _source(obj)
        for obj in (
            arch_module.SqueezeExcite,
            arch_module.Block,
            arch_module.make_stem,
            arch_module.make_head,
            arch_module.Net,
        )
    ]
    data = arch.to_dict()
    stages = "".join(f"    SimpleNamespace(**{s!r}),\n" for s in data.pop("stages"))
    parts.append(f"ARCH = SimpleNamespace(**{data!r}, stages=[\n{stages}])\n\n")
    parts.append(
        "def build_model() -> nn.Module:\n    return Net(ARCH)\n\n\n"
        'if __name__ == "__main__":\n'
        "    from pathlib import Path\n\n"
        "    net = build_model().eval()\n"
        '    weights = Path(__file__).with_name("model.pt")\n'
        "    if weights.exists():\n"
        "        net.load_state_dict(torch.load(weights, weights_only=True))\n"
        f"    x = torch.randn(1, {arch.input_channels}, {arch.input_size}, {arch.input_size})\n"
        "    print(net(x).softmax(-1))\n"
    )
    return "".join(parts)


def _load_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"nasconv_export_{abs(hash(path))}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- export + verification


def _max_diff(a: torch.Tensor, b: Any) -> float:
    return float((a - torch.as_tensor(b)).abs().max())


def export_onnx(model: nn.Module, x: torch.Tensor, path: Path) -> None:
    import contextlib
    import io
    import logging
    import warnings

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (x,),
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
            dynamo=True,
            verbose=False,
        )
        if program is None:
            raise VerificationError(f"{path.name}: torch.onnx.export returned no program")
        program.save(str(path))


def export(
    arch: Arch, model: nn.Module, to: str | Path, formats: Sequence[str] = FORMATS, *, batch: int = 2, seed: int = 0
) -> dict[str, Any]:
    """Write the formats to ``to`` and verify each against ``model``; returns {format: (path, max |diff|)}.

    All or nothing: the formats are written and verified in a staging folder beside ``to`` and moved
    into it only once every check passed; a failure leaves ``to`` as it was (and creates no folder)."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise NasconvError(f"unknown export format {unknown[0]!r}; known: {', '.join(FORMATS)}")
    to = Path(to)
    if to.exists() and not to.is_dir():
        raise NasconvError(f"{to}: exists and is not a folder")
    created = [folder for folder in (to, *to.parents) if not folder.exists()]
    staging: Path | None = None
    try:
        to.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{to.name}.", suffix=".partial", dir=to.parent))
        report = _export_into(arch, model, staging, to, formats, batch=batch, seed=seed)
        to.mkdir(exist_ok=True)
        for fmt, (path, diff) in report.items():
            os.replace(path, to / path.name)
            report[fmt] = (to / path.name, diff)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # deepest first: only the folders this call made, and only if empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return report


def _export_into(
    arch: Arch, model: nn.Module, to: Path, final: Path, formats: Sequence[str], *, batch: int, seed: int
) -> dict[str, Any]:
    """Write and verify the formats in the folder ``to`` (errors name them in ``final``, where they go)."""
    model = model.eval()
    x = torch.randn(input_shape(arch, batch), generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        reference = model(x)
    report: dict[str, Any] = {}
    if "arch" in formats:
        path = arch.save(to / "arch.yaml")
        if load_arch(path) != arch:
            raise VerificationError(f"{final / path.name}: does not round-trip")
        report["arch"] = (path, 0.0)
    if "pt" in formats:
        path = to / "model.pt"
        torch.save(model.state_dict(), path)
        again = build_model(arch).eval()
        again.load_state_dict(torch.load(path, weights_only=True))
        with torch.inference_mode():
            report["pt"] = (path, _max_diff(reference, again(x)))
    if "ts" in formats:
        path = to / "model.ts"
        try:
            scripted = torch.jit.script(model)
        except Exception as exc:  # noqa: BLE001 - report which op TorchScript refused
            raise VerificationError(f"TorchScript could not compile the model: {str(exc).splitlines()[0]}") from None
        scripted.save(str(path))
        loaded = torch.jit.load(str(path))
        with torch.inference_mode():
            report["ts"] = (path, _max_diff(reference, loaded(x)))
    if "onnx" in formats:
        path = to / "model.onnx"
        import onnxruntime as ort

        export_onnx(model, x, path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        report["onnx"] = (path, _max_diff(reference, session.run(None, {"input": x.numpy()})[0]))
    if "py" in formats:
        path = to / "model.py"
        path.write_text(standalone_source(arch))
        try:
            standalone = _load_module(path).build_model().eval()
        except Exception as exc:  # noqa: BLE001 - a module that does not load is a failed check, named
            problem = str(exc).splitlines()[0] if str(exc) else ""
            raise VerificationError(f"{final / path.name}: does not load ({type(exc).__name__}: {problem})") from None
        standalone.load_state_dict(model.state_dict())
        with torch.inference_mode():
            report["py"] = (path, _max_diff(reference, standalone(x)))
    for path, diff in report.values():
        if not math.isfinite(diff) or diff > TOLERANCE:
            raise VerificationError(
                f"{final / path.name}: output differs from the PyTorch model by {diff:.3g} (> {TOLERANCE})"
            )
    return report


# ---------------------------------------------------------------- metrics.json


def weights_note(*, retrained_epochs: int | None = None, kept_trial: int | None = None, kept_epochs: int = 0) -> str:
    """The ``weights`` entry of metrics.json: "retrained N epochs", "kept from search trial N (E epochs)"
    or "untrained"."""
    if retrained_epochs:
        return f"retrained {retrained_epochs} epochs"
    if kept_trial is not None:
        return f"kept from search trial {kept_trial} ({kept_epochs} epochs)"
    return "untrained"


def write_metrics(
    to: str | Path,
    *,
    trial: int,
    val_accuracy: float | None,
    test_accuracy: float | None,
    epochs: int,
    weights: str,
    dataset: str | None = None,
) -> Path:
    """Write ``metrics.json`` in an export folder: ``val_accuracy`` and ``test_accuracy`` (null when not
    measured, or the dataset has no test split), ``epochs`` trained, and where the ``weights`` come from."""

    def number(value: float | None) -> float | None:
        return None if value is None or not math.isfinite(float(value)) else float(value)

    metrics = {
        "trial": int(trial),
        "val_accuracy": number(val_accuracy),
        "test_accuracy": number(test_accuracy),
        "epochs": int(epochs),
        "weights": weights,
        "dataset": dataset,
    }
    path = Path(to) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    return path


def read_metrics(to: str | Path) -> dict[str, Any] | None:
    """An export folder's metrics.json, None if it has none or it is unreadable."""
    path = Path(to) / METRICS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def exported_metrics(folder: str | Path) -> dict[int, dict[str, Any]]:
    """metrics.json of every trial exported to the default place (``<results>/export/trial-N``), by trial
    number: what a report shows beside the exported trials."""
    out: dict[int, dict[str, Any]] = {}
    base = Path(folder) / "export"
    if not base.is_dir():
        return out
    for sub in sorted(base.glob("trial-*")):
        metrics = read_metrics(sub)
        if metrics is not None and sub.name.removeprefix("trial-").isdigit():
            out[int(sub.name.removeprefix("trial-"))] = metrics
    return out
