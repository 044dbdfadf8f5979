"""The ``nasconv`` command. Heavy modules are imported inside the sub-commands so that
``nasconv --help`` stays fast."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from .errors import NasconvError, one_line

if TYPE_CHECKING:
    from .search.data import Data
    from .search.space import SpaceSpec
    from .search.training import TrainResult


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_at_least(minimum: int, words: str) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum`` (``words`` says so in the error)."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"{value!r} must be {words}")
        return number

    return parse


_positive = _int_at_least(1, "at least 1")
_non_negative_int = _int_at_least(0, "zero or more")


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be positive")
    return number


MAX_SEED = 2**31 - 1  # what NumPy, torch and Optuna's samplers all accept


def _seed(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if not 0 <= number <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value!r} must be between 0 and {MAX_SEED}")
    return number


def _device(value: str) -> str:
    import re

    from .search.space import DEVICE_PATTERN  # imported only when the flag is given

    if not re.fullmatch(DEVICE_PATTERN, value):
        raise argparse.ArgumentTypeError(f"{value!r} is not one of auto, cpu, cuda, cuda:N")
    return value


def _option_value(text: str) -> tuple[str, object]:
    """``--opt NAME=VALUE``: VALUE read as YAML (4, true, [1, 3, 5])."""
    import yaml

    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    try:
        return name, yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{text!r}: VALUE is not a number, true/false or a list") from None


def _fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be between 0 and 1")
    return number


def _non_negative_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 <= number < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} must be zero or more")
    return number


def _cmd_ops(args: argparse.Namespace) -> int:
    from functools import partial

    from rich.console import Console
    from rich.table import Table

    from .errors import brief
    from .model import arch as limits
    from .model.cost import profile_built
    from .ops import CONV_KINDS, MAX_KERNEL, build_conv, kind_params, op_class
    from .ops.base import check_option_values, int_check, out_size

    for flag, value, check in (  # the limits a space has: a shape no network may take is refused
        ("--in", args.in_channels, int_check(1, limits.MAX_CHANNELS)),
        ("--out", args.out_channels, int_check(1, limits.MAX_CHANNELS)),
        ("--size", args.size, int_check(1, limits.MAX_INPUT_SIZE)),
        ("--kernel", args.kernel, int_check(1, MAX_KERNEL)),  # odd: the factory's own check below
        ("--stride", args.stride, int_check(1, limits.MAX_STRIDE)),
        ("--dilation", args.dilation, int_check(1, limits.MAX_DILATION)),
    ):
        try:
            check(value)
        except ValueError as exc:
            raise NasconvError(f"{flag}: {exc}") from None
    side = out_size(args.size, args.stride)
    if args.out_channels * side * side > limits.MAX_ACTIVATION:
        raise NasconvError(
            f"--out/--size: {args.out_channels:,} channels at {side}x{side} px make a feature map of "
            f"{args.out_channels * side * side:,} values (at most {limits.MAX_ACTIVATION:,})"
        )
    overrides = dict(args.opt or [])
    unused = sorted(set(overrides) - {name for kind in CONV_KINDS for name in kind_params(kind)})
    if unused:
        raise NasconvError(f"--opt: no conv kind has an option {unused[0]!r}")
    kinds = [args.kind] if args.kind else list(CONV_KINDS)
    if args.kind and args.kind not in CONV_KINDS:
        raise NasconvError(f"--kind: unknown conv kind {args.kind!r}; known: {', '.join(CONV_KINDS)}")
    rows: list[tuple[str, dict]] = []
    for kind in kinds:
        mine = {k: v for k, v in overrides.items() if k in kind_params(kind)}
        for name, value in mine.items():  # the kind's option schema, as in a space file
            try:
                mine[name] = check_option_values(kind, {name: value})[name]
            except ValueError as exc:
                raise NasconvError(f"--opt {name}: {str(exc).removeprefix(f'{name}: ')} ({kind})") from None
        for example in op_class(kind).examples:
            options = {**example, **mine}
            if (kind, options) not in rows:
                rows.append((kind, options))
    shape = (args.in_channels, args.size, args.size)
    try:  # the shared geometry first: a bad kernel is the user's error, not a kind to skip
        build_conv("standard", args.in_channels, args.out_channels, args.kernel, args.stride, args.dilation)
    except ValueError as exc:
        raise NasconvError(f"ops: {exc}") from None
    for kind, options in rows:  # the per-layer limits of a space, from the closed forms (nothing built yet)
        try:
            params, macs = limits.conv_figures(
                kind, args.in_channels, args.out_channels, args.kernel, args.stride, options, args.size
            )
        except ValueError:
            continue  # it cannot build: listed as skipped below
        shown = ", ".join(f"{k}={brief(v)}" for k, v in options.items() if k in overrides)
        flags = f"--opt {shown}" if shown else "--in/--out/--kernel"
        layer = f"a {args.in_channels}->{args.out_channels} {kind} layer"
        if params > limits.MAX_LAYER_PARAMS:
            raise NasconvError(f"{flags}: {layer} has {params:,} parameters (at most {limits.MAX_LAYER_PARAMS:,})")
        if macs > limits.MAX_MACS:
            raise NasconvError(
                f"{flags}: {layer} needs {macs:.3g} MACs at {args.size}x{args.size} px (at most {limits.MAX_MACS:.0e})"
            )
    table = Table(
        title=f"{args.in_channels}->{args.out_channels} channels, {args.size}x{args.size} input, "
        f"kernel {args.kernel}, stride {args.stride}, dilation {args.dilation} (batch 1)"
    )
    for col in ("kind", "options", "params", "MACs", "MACs vs standard"):
        table.add_column(col, justify="left" if col in ("kind", "options") else "right")
    geometry = (args.in_channels, args.out_channels, args.kernel, args.stride, args.dilation)
    base = profile_built(partial(build_conv, "standard", *geometry), shape).macs
    skipped = []
    for kind, options in rows:
        try:  # large layers are counted on the meta device: no memory, no arithmetic, the same figures
            prof = profile_built(partial(build_conv, kind, *geometry, **options), shape)
        except (ValueError, TypeError) as exc:
            skipped.append(f"{kind}({', '.join(f'{k}={v}' for k, v in options.items())}): {exc}")
            continue
        shown = ", ".join(f"{k}={v}" for k, v in options.items()) or "-"
        table.add_row(kind, shown, f"{prof.params:,}", f"{prof.macs:,}", f"{prof.macs / base:.3f}")
    console = Console()
    console.print(table)
    kernel_free = [kind for kind in dict.fromkeys(kind for kind, _ in rows) if not op_class(kind).uses_stage_kernel]
    if kernel_free:
        console.print(f"--kernel does not apply to {', '.join(kernel_free)} (kernel sizes are its options)")
    for line in skipped:
        console.print(f"skipped {line}")
    return 0


def _prepare_dataset(spec: SpaceSpec) -> Data:
    """The space's dataset, its cache built first with a progress bar (a one-time decode) and described."""
    from .search.data import prepare_data, space_data

    entry = prepare_data(spec, progress=True)
    if entry is not None and entry.built_seconds is not None:
        print(
            f"{spec.dataset.name}: cached once, as the space's input, in {entry.folder} ({entry.built_seconds:.1f} s)"
        )
    return space_data(spec)


def _test_figure(result: TrainResult, data: Data) -> str:
    if data.test is None:
        return f"no test split in {data.name}"
    return f"test accuracy {result.test_accuracy:.4f} on {len(data.test):,}"


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .model.arch import build_model, load_arch
    from .model.cost import profile
    from .search.space import load_space
    from .search.training import EpochResult, describe_device, effective_precision, resolve_device, train

    space = load_space(args.space)
    arch = load_arch(args.arch)
    spec = space.spec
    if (arch.input_channels, arch.input_size, arch.classes) != (spec.input.channels, spec.input.size, spec.classes):
        raise NasconvError(
            f"{args.arch}: architecture takes {arch.input_channels}x{arch.input_size}px with {arch.classes} classes,"
            f" but {args.space} has {spec.input.channels}x{spec.input.size}px with {spec.classes} classes"
        )
    torch.set_num_threads(args.threads)
    changes = {"seed": args.seed} if args.seed is not None else {}
    training = spec.training.model_copy(update={**changes, **({"device": args.device} if args.device else {})})
    device = resolve_device(training.device, label="--device" if args.device else "training.device")
    data = _prepare_dataset(spec)  # the space's own split: --seed changes the training run, not the validation set
    prof = profile(build_model(arch), (spec.input.channels, spec.input.size, spec.input.size))
    print(f"{arch.short()}: {prof.params:,} params, {prof.macs:,} MACs")
    print(f"data: {data.describe()}")
    precision = effective_precision(training.precision, device)
    if precision != training.precision:
        precision += f" ({training.precision} is a GPU setting)"
    print(
        f"training {args.epochs} epochs on {describe_device(device)}, {precision}"
        f"{', channels_last' if training.channels_last else ''}, augment {training.augment}"
    )

    def show(epoch: EpochResult) -> None:
        print(
            f"  epoch {epoch.epoch:>3}: val accuracy {epoch.accuracy:.4f}  val loss {epoch.loss:.4f}"
            f"  train loss {epoch.train_loss:.4f}"
        )

    result, _ = train(arch, data, training, epochs=args.epochs, on_epoch=show, device=device, test=True)
    if result.failed:
        raise NasconvError(f"training failed: {result.reason}")
    print(
        f"validation accuracy {result.accuracy:.4f}, {_test_figure(result, data)}, "
        f"after {result.epochs} epochs ({result.train_seconds:.1f} s)"
    )
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from .experiment import resolve_options, run_search, summarise
    from .search.space import load_space

    space = load_space(args.space)
    opts = resolve_options(
        space,
        out=args.out,
        trials=args.trials,
        workers=args.workers,
        seed=args.seed,
        sampler=args.sampler,
        resume=args.resume,
        address=args.address,
        storage=args.storage,
        early_stopping=args.early_stopping,
        time_budget_s=args.time_budget,
        table=args.table,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
    )
    df = run_search(space, opts, progress=not args.quiet)
    print(f"{space.name}: {summarise(df)}")
    for name in ("trials.csv", "pareto.csv", "pareto.png", "pareto.html"):
        if (opts.out / name).exists():
            print(f"  {opts.out / name}")
    return 0


def _results_folder(path: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise NasconvError(f"{folder}: no such results folder")
    return folder


def _cmd_report(args: argparse.Namespace) -> int:
    from .results.report import build_report, compare_report, print_comparison, print_report, print_trial

    folders = [_results_folder(d) for d in args.dirs]
    if len(folders) > 1:
        if args.trial is not None:
            raise NasconvError("--trial: shows one trial of one results folder; give a single DIR")
        print_comparison(compare_report(folders, args.out))
        return 0
    if args.out is not None:
        raise NasconvError("--out: names the folder of a comparison (two or more DIRs); a report is written into DIR")
    if args.trial is not None:
        print_trial(folders[0], args.trial)
        return 0
    print_report(build_report(folders[0]))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import torch

    from .model.arch import Arch, build_model
    from .results.export import FORMATS, Rule, export, pick_trial, weights_note, write_metrics
    from .results.folder import load_results
    from .results.weights import load_weights, weights_path
    from .search.space import load_space
    from .search.training import evaluate, resolve_device

    folder = _results_folder(args.dir)
    formats = [f.strip() for f in args.format.split(",")] if args.format else list(FORMATS)
    bad = sorted(set(formats) - set(FORMATS))
    if bad:
        raise NasconvError(f"--format: unknown format {bad[0]!r}; choose from {','.join(FORMATS)}")
    df = load_results(folder)
    rule = Rule(
        max_macs=args.max_macs,
        max_params=args.max_params,
        max_latency_ms=args.max_latency_ms,
        min_accuracy=args.min_accuracy,
    )
    choices = sum([args.trial is not None, args.knee, bool(rule)])
    if choices != 1:
        raise NasconvError(
            "pick one trial: --trial N, --knee, or a rule (--max-macs/--max-params/--max-latency-ms/--min-accuracy)"
        )
    try:
        row = pick_trial(df, trial=args.trial, use_knee=args.knee, rule=rule)
    except NasconvError as exc:
        raise NasconvError(f"{folder}: {exc}") from None
    arch = Arch.from_json(row["arch"], where=f"{folder}: trial {int(row['number'])}")
    number = int(row["number"])
    if row["state"] != "COMPLETE":  # a stopped trial's accuracy was measured after fewer epochs
        print(f"note: trial {number} is {str(row['state']).lower()}, not a full-budget trial: its accuracy is partial")

    def known(column: str) -> float | None:
        value = row.get(column)
        return None if value is None or value != value else float(value)

    shown = ", ".join(
        f"{c} {known(c):.4g}" for c in ("accuracy", "macs", "params", "latency_ms") if known(c) is not None
    )
    print(f"trial {number}: {arch.short()} ({shown})")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_model(arch)
    spec = None
    val_accuracy = test_accuracy = None
    dataset = None
    if args.epochs:
        from .search.training import train

        spec = load_space(folder / "space.yaml").spec
        training = spec.training.model_copy(
            update={"seed": args.seed, **({"device": args.device} if args.device else {})}
        )
        device = resolve_device(training.device)
        data = _prepare_dataset(spec)
        dataset = data.name
        result, model = train(arch, data, training, epochs=args.epochs, device=device, test=True)
        if result.failed:
            raise NasconvError(f"retraining trial {number} failed: {result.reason}")
        val_accuracy, test_accuracy, epochs = result.accuracy, result.test_accuracy, args.epochs
        weights = weights_note(retrained_epochs=args.epochs)
        print(
            f"retrained {args.epochs} epochs from scratch: validation accuracy {result.accuracy:.4f}, "
            f"{_test_figure(result, data)}"
        )
        model = model.to("cpu")
    elif (state := load_weights(folder, number)) is not None:
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
            problem = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}" if unexpected else ""
        except RuntimeError as exc:  # a tensor of another shape
            problem = str(exc).split("\n\t")[-1]
        if problem:
            raise NasconvError(
                f"{weights_path(folder, number)}: does not fit trial {number}'s architecture ({problem})"
            )
        spec = load_space(folder / "space.yaml").spec
        epochs = int(known("epochs") or spec.training.epochs)
        val_accuracy = known("accuracy")
        weights = weights_note(kept_trial=number, kept_epochs=epochs)
        test = "not measured"
        try:
            device = resolve_device(args.device or spec.training.device)
            data = _prepare_dataset(spec)
            dataset = data.name
            if data.test is None:
                test = f"no test split in {data.name}"
            else:
                test_accuracy, _ = evaluate(model.to(device), data, "test", precision=spec.training.precision)
                test = f"test accuracy {test_accuracy:.4f} on {len(data.test):,}"
            model = model.to("cpu")
        except NasconvError as exc:
            test = f"test accuracy not measured ({exc})"
        shown_val = f"validation accuracy {val_accuracy:.4f}" if val_accuracy is not None else "no validation accuracy"
        print(f"weights: {weights} ({shown_val}, {test}); --epochs N retrains from scratch instead")
    else:
        epochs = 0
        weights = weights_note()
        print("weights: untrained (none kept from the search for this trial); use --epochs N to train before export")
    to = Path(args.to) if args.to else folder / "export" / f"trial-{number}"
    report = export(arch, model.eval(), to, formats)
    metrics = write_metrics(
        to,
        trial=number,
        val_accuracy=val_accuracy,
        test_accuracy=test_accuracy,
        epochs=epochs,
        weights=weights,
        dataset=dataset,
    )
    labels = {
        "arch": "architecture",
        "pt": "state_dict",
        "onnx": "ONNX (onnxruntime)",
        "ts": "TorchScript",
        "py": "standalone model.py",
    }
    for fmt, (path, diff) in report.items():
        check = "round-trips" if fmt == "arch" else f"max |diff| {diff:.2e} vs PyTorch"
        print(f"  {path}  {labels[fmt]}: {check}  ok")
    print(f"  {metrics}  weights {weights}")
    return 0


def _cmd_profile_device(args: argparse.Namespace) -> int:
    from .model.latency import BACKENDS, measure_latency_table
    from .search.space import load_space
    from .search.training import resolve_device

    if args.backend not in BACKENDS:
        raise NasconvError(f"--backend: unknown {args.backend!r}; known: {', '.join(BACKENDS)}")
    device = resolve_device(args.device, label="--device")
    if device.type == "cuda" and args.backend != "torch":
        raise NasconvError("--device cuda measures with the torch backend only (--backend torch)")

    space = load_space(args.space)
    table = measure_latency_table(
        space,
        args.out,
        threads=args.threads,
        batch=args.batch,
        backend=args.backend,
        warmup=args.warmup,
        repeats=args.repeats,
        rounds=args.rounds,
        calibrate=args.calibrate,
        progress=not args.quiet,
        device=str(device),
    )
    cal = table.calibration or {}
    print(
        f"{args.out}: {len(table.entries)} blocks ({table.settings['backend']}, {args.threads} thread(s), "
        f"batch {args.batch}) on {device} of {table.machine['processor']}"
    )
    if cal:
        print(
            f"calibration on {cal['models']} models: per-type scales "
            + ", ".join(f"{t} {v:.2f}" for t, v in sorted((table.scales or {}).items()))
            + f", offset {table.offset_ms:+.3f} ms; median error {cal['median_ape']:.1%} "
            f"(plain sum {cal['raw_median_ape']:.1%})"
        )
    print(f"use it with  latency: {{table: {args.out}}}  in the space file")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .search.promotion import EARLY_STOPPING
    from .search.samplers import SAMPLER_NAMES

    parser = _Parser(prog="nasconv", description="Neural architecture search over convolution types.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ops = sub.add_parser("ops", help="params and MACs of every conv kind at one shape")
    ops.add_argument("--in", dest="in_channels", type=_positive, default=64, help="input channels (64)")
    ops.add_argument("--out", dest="out_channels", type=_positive, default=64, help="output channels (64)")
    ops.add_argument("--size", type=_positive, default=32, help="input height = width (32)")
    ops.add_argument("--kernel", type=_positive, default=3, help="kernel size, odd (3)")
    ops.add_argument("--stride", type=_positive, default=1)
    ops.add_argument("--dilation", type=_positive, default=1)
    ops.add_argument("--kind", help="only this conv kind")
    ops.add_argument(
        "--opt",
        action="append",
        type=_option_value,
        metavar="NAME=VALUE",
        help="set a kind option wherever a kind takes it, e.g. --opt groups=2 --opt p=3 (repeatable)",
    )
    ops.set_defaults(func=_cmd_ops)

    se = sub.add_parser("search", help="multi-objective architecture search (Ray Tune + Optuna)")
    se.add_argument("space", help="search space YAML (e.g. search_spaces/digits.yaml)")
    se.add_argument("--trials", type=_positive, help="distinct architectures to train (overrides search.trials)")
    se.add_argument("--workers", type=_positive, help="concurrent trials (default: one per CPU)")
    se.add_argument("--out", help="results folder (default results/<space name>)")
    se.add_argument("--seed", type=_seed, help="overrides search.seed")
    se.add_argument("--sampler", choices=SAMPLER_NAMES, help="overrides search.sampler")
    se.add_argument("--resume", action="store_true", help="continue the study already in --out")
    se.add_argument("--address", help="existing Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    se.add_argument("--storage", help="Optuna RDB storage URL (default: sqlite study.db in --out)")
    se.add_argument("--early-stopping", choices=EARLY_STOPPING, help="overrides search.early_stopping")
    se.add_argument("--time-budget", type=_positive_float, help="stop after this many seconds (running trials end)")
    se.add_argument("--cpus-per-trial", type=_positive, help="CPUs (and torch threads) per trial (default 1)")
    se.add_argument(
        "--gpus-per-trial", type=_non_negative_float, help="GPUs per trial, fractional: 0.25 = four trials per GPU"
    )
    se.add_argument(
        "--table", help="tabular mode: evaluate by lookup in this CSV (arch, accuracy, ...) instead of training"
    )
    se.add_argument("--quiet", action="store_true", help="no progress output")
    se.set_defaults(func=_cmd_search)

    rp = sub.add_parser(
        "report",
        help="Pareto table, plots and report.html from a results folder; with several, a comparison",
        description="One DIR: rewrite its plots and report.html and print the front. Several DIRs (same "
        "objectives): one page overlaying their fronts and hypervolumes, written to --out. "
        "--trial N: print trial N's architecture block by block.",
    )
    rp.add_argument(
        "dirs", nargs="+", metavar="DIR", help="results folder of a search (finished, running or interrupted)"
    )
    rp.add_argument("--trial", type=int, metavar="N", help="print trial N's blocks with their params and MACs")
    rp.add_argument("--out", metavar="FOLDER", help="comparison folder (default: compare-<names> beside the first DIR)")
    rp.set_defaults(func=_cmd_report)

    ex = sub.add_parser("export", help="export one trial: arch.yaml, model.pt/.onnx/.ts/.py, verified")
    ex.add_argument("dir", help="results folder of a search")
    pick = ex.add_argument_group("which trial (one of)")
    pick.add_argument("--trial", type=int)
    pick.add_argument("--knee", action="store_true", help="the knee of the Pareto front")
    pick.add_argument("--max-macs", type=_positive_float, help="the most accurate trial with at most these MACs")
    pick.add_argument("--max-params", type=_positive_float)
    pick.add_argument("--max-latency-ms", type=_positive_float)
    pick.add_argument("--min-accuracy", type=_fraction, help="accuracy as a fraction, 0 to 1")
    ex.add_argument("--epochs", type=_positive, help="retrain from scratch for N epochs before export")
    ex.add_argument("--to", help="output folder (default DIR/export/trial-N)")
    ex.add_argument("--format", help="comma-separated subset of arch,pt,onnx,ts,py (default all)")
    ex.add_argument("--seed", type=_seed, default=0, help="seed of --epochs retraining (0)")
    ex.add_argument("--threads", type=_positive, default=os.cpu_count() or 1)
    ex.add_argument(
        "--device", type=_device, help="train/evaluate here: auto, cpu, cuda, cuda:N (overrides training.device)"
    )
    ex.set_defaults(func=_cmd_export)

    pd_ = sub.add_parser("profile-device", help="measure a latency lookup table for a space on this machine")
    pd_.add_argument("space")
    pd_.add_argument("--out", required=True, help="table file (JSON); an existing one is completed, not redone")
    pd_.add_argument("--threads", type=_positive, default=1)
    pd_.add_argument("--batch", type=_positive, default=1)
    pd_.add_argument("--backend", default="torch", help="torch (default) or onnxruntime")
    pd_.add_argument("--warmup", type=_positive, default=10)
    pd_.add_argument("--repeats", type=_positive, default=30, help="timed runs per measurement")
    pd_.add_argument("--rounds", type=_positive, default=5, help="passes over all blocks; each keeps its fastest")
    pd_.add_argument(
        "--calibrate", type=_non_negative_int, default=20, help="random models timed end to end to calibrate (0: none)"
    )
    pd_.add_argument(
        "--device", type=_device, default="cpu", help="cpu (default), cuda, cuda:N or auto; CUDA timing synchronises"
    )
    pd_.add_argument("--quiet", action="store_true")
    pd_.set_defaults(func=_cmd_profile_device)

    tr = sub.add_parser("train", help="train one architecture on its space's dataset")
    tr.add_argument("arch", help="architecture file (arch.yaml from export, or JSON)")
    tr.add_argument("--space", required=True, help="the space file whose dataset and training settings to use")
    tr.add_argument("--epochs", type=_positive, default=30)
    tr.add_argument("--threads", type=_positive, default=os.cpu_count() or 1)
    tr.add_argument("--seed", type=_seed, default=None, help="overrides training.seed")
    tr.add_argument("--device", type=_device, help="auto, cpu, cuda or cuda:N (overrides training.device)")
    tr.set_defaults(func=_cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NasconvError as exc:
        print(f"nasconv: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path that cannot be read or written: a folder that is a file, no permission, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"nasconv: error: {one_line(where + (exc.strerror or str(exc)))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nasconv: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
