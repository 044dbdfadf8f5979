"""The Optuna study: where a search keeps its record, how it is opened, created and resumed.

A results folder holds the study as ``study.db`` (SQLite, WAL mode) or names an RDB URL in
``storage.url``. Resuming refuses a space whose recorded values would change meaning (objectives,
constraints, training, data, the architecture space) and a change of evaluation (training versus
lookup in a table, or another table: the study records the mode, the table's path and the SHA-256
of its content); it accepts, with a note, changes that cannot (the trial count, workers, sampler,
seed, early stopping, a table moved to another path with the same content).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NasconvError, brief
from .record import INTERRUPTED, counts_toward_budget
from .space import Space, SpaceSpec
from .tabular import table_digest

if TYPE_CHECKING:
    import optuna

STUDY_FILE = "study.db"
STORAGE_FILE = "storage.url"
NAME_FILE = "study.name"
SPACE_FILE = "space.yaml"

# space sections whose change leaves every recorded value's meaning intact
_NEUTRAL_SECTIONS = ("name", "search")
# training settings that change where and how fast a trial runs, not what it measures
_NEUTRAL_TRAINING = ("device", "channels_last")


def _read_line(path: Path) -> str:
    """The one line a small bookkeeping file of the results folder holds (storage.url, study.name)."""
    try:
        text = path.read_bytes()[:4096].decode("utf-8").strip()
    except UnicodeDecodeError:
        raise NasconvError(f"{path}: is not UTF-8 text") from None
    except OSError as exc:
        raise NasconvError(f"{path}: cannot be read ({exc.strerror})") from None
    if not text or "\n" in text:
        raise NasconvError(f"{path}: should hold one line, holds {brief(text)}")
    return text


def storage_url(folder: str | Path) -> str | None:
    """The study storage a results folder points at, or None if it holds no study."""
    folder = Path(folder)
    if (folder / STORAGE_FILE).is_file():
        return _read_line(folder / STORAGE_FILE)
    if (folder / STUDY_FILE).is_file():
        return f"sqlite:///{(folder / STUDY_FILE).resolve()}"
    return None


def recorded_name(folder: str | Path) -> str | None:
    """The name of the study a results folder holds (``study.name``), or None where it records none."""
    path = Path(folder) / NAME_FILE
    return _read_line(path) if path.is_file() else None


def check_sqlite_study(path: Path) -> None:
    """A file that claims to be a study must be an intact SQLite database with Optuna's tables;
    checked read-only, so a damaged file is named, never modified."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise NasconvError(f"{path}: cannot read the study ({exc.strerror})") from None
    if head != b"SQLite format 3\x00":
        raise NasconvError(f"{path}: not an SQLite database, so not a nasconv study")
    try:
        with sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=5) as con:
            tables = {row[0] for row in con.execute("select name from sqlite_master where type = 'table'")}
            if not {"studies", "trials", "version_info"} <= tables:
                raise NasconvError(f"{path}: an SQLite database, but not an Optuna study (no studies/trials tables)")
            problem = con.execute("pragma quick_check").fetchone()[0]
            if problem != "ok":
                raise NasconvError(f"{path}: damaged study database ({problem})")
            con.execute("select count(*) from trials").fetchone()
    except sqlite3.Error as exc:
        raise NasconvError(f"{path}: damaged study database ({exc})") from None


def _rdb_storage(url: str, where: str, *, create: bool) -> optuna.storages.RDBStorage:
    import optuna
    import sqlalchemy.exc

    try:
        return optuna.storages.RDBStorage(url, skip_table_creation=not create)
    except ImportError as exc:  # e.g. postgresql:// without psycopg2 installed
        raise NasconvError(
            f"{where}: cannot open the study storage: its database driver is not installed ({exc})"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, RuntimeError, ValueError) as exc:
        raise NasconvError(f"{where}: cannot open the study storage ({str(exc).splitlines()[0]})") from None


def open_study(folder: str | Path) -> optuna.Study:
    """The study stored in a results folder, opened read-only (report, export, load_results)."""
    import optuna
    import sqlalchemy.exc

    folder = Path(folder)
    url = storage_url(folder)
    if url is None:
        raise NasconvError(f"{folder}: no study here (expected {STUDY_FILE} or {STORAGE_FILE} from nasconv search)")
    where = str(folder / STUDY_FILE) if url.startswith("sqlite:///") else url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        check_sqlite_study(path)
        url = f"sqlite:///file:{path.resolve()}?mode=ro&uri=true"  # readers never write, not even a checkpoint
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _rdb_storage(url, where, create=False)
    try:
        names = optuna.get_all_study_names(storage)
        if not names:
            raise NasconvError(f"{where}: the study storage holds no study")
        name = recorded_name(folder) or names[0]
        if name not in names:
            raise NasconvError(f"{where}: holds no study named {name!r} (found {', '.join(names)})")
        return optuna.load_study(study_name=name, storage=storage)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise NasconvError(f"{where}: cannot read the study ({str(exc).splitlines()[0]})") from None


def space_meaning(spec: SpaceSpec | Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a space that give recorded values their meaning (JSON-comparable)."""
    data = spec.model_dump(mode="json") if isinstance(spec, SpaceSpec) else dict(spec)
    meaning = {k: v for k, v in data.items() if k not in _NEUTRAL_SECTIONS}
    meaning["training"] = {k: v for k, v in (meaning.get("training") or {}).items() if k not in _NEUTRAL_TRAINING}
    return meaning


def _first_difference(old: Any, new: Any, path: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(dict.fromkeys([*old, *new])):
            found = _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            found = _first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if old == new else (path, old, new)


EVALUATION_ATTR = "evaluation"
"""The study's user attribute that records how trials were evaluated: ``{"mode": "training"}`` or
``{"mode": "table", "table": PATH, "sha256": DIGEST}``."""


def evaluation_record(table: str | Path | None) -> dict[str, str]:
    """What a study records about how its trials are evaluated (see :data:`EVALUATION_ATTR`)."""
    if table is None:
        return {"mode": "training"}
    return {"mode": "table", "table": str(Path(table).resolve()), "sha256": table_digest(table)}


def evaluation_differences(recorded: Any, current: Mapping[str, str]) -> tuple[str | None, list[str]]:
    """(the change of evaluation that forbids resuming, with what to do instead, or None; notes on
    accepted changes)."""
    if not isinstance(recorded, dict) or recorded.get("mode") not in ("training", "table"):
        return None, ["the study does not record how its trials were evaluated (an older nasconv): not checked"]
    if recorded["mode"] != current["mode"]:
        if recorded["mode"] == "table":
            return (
                f"the study looked its trials up in a table ({recorded.get('table')}), this run would train them; "
                "resume with that --table"
            ), []
        return (
            f"the study trained its trials, this run would look them up in {current['table']}; resume without --table",
            [],
        )
    if current["mode"] == "training":
        return None, []
    old_digest, new_digest = str(recorded.get("sha256", "")), current["sha256"]
    if old_digest != new_digest:
        return (
            f"the table's content changed (sha256 {old_digest[:12]} -> {new_digest[:12]}; the study used "
            f"{recorded.get('table')}); resume with that table"
        ), []
    if recorded.get("table") != current["table"]:
        return None, [f"table {recorded.get('table')} -> {current['table']} (the same content)"]
    return None, []


def resume_differences(recorded: Mapping[str, Any], space: Space) -> tuple[str | None, list[str]]:
    """(the first change that forbids resuming, or None; notes on accepted changes)."""
    try:
        old = SpaceSpec.model_validate(recorded)
    except Exception:  # noqa: BLE001 - a record this version cannot read is simply a different space
        return "the recorded space cannot be read by this version of nasconv", []
    found = _first_difference(space_meaning(old), space_meaning(space.spec))
    refusal = None
    if found:
        key, before, after = found
        refusal = f"{key} changed ({brief(before)} -> {brief(after)})"
    notes = []
    old_dump, new_dump = old.model_dump(mode="json"), space.spec.model_dump(mode="json")
    for section in ("search", "training"):
        for key in dict.fromkeys([*old_dump[section], *new_dump[section]]):
            if section == "training" and key not in _NEUTRAL_TRAINING:
                continue
            a, b = old_dump[section].get(key), new_dump[section].get(key)
            if a != b:
                notes.append(f"{section}.{key} {brief(a)} -> {brief(b)}")
    return refusal, notes


@dataclass(frozen=True, kw_only=True)
class OpenedStudy:
    study: optuna.Study
    resumed: bool
    notes: tuple[str, ...] = ()
    """Accepted changes since the study began (shown to the user on resume)."""


@dataclass(frozen=True, kw_only=True)
class _Inspection:
    url: str
    study: optuna.Study | None
    """The existing study to resume (None: one will be created)."""
    storage: optuna.storages.BaseStorage | None
    notes: tuple[str, ...] = ()


def _inspect(space: Space, out: Path, *, storage: str | None, resume: bool, table: str | Path | None) -> _Inspection:
    """Every check of :func:`open_or_create_study`, writing nothing."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    existing = storage_url(out)
    url = storage or existing or f"sqlite:///{(out / STUDY_FILE).resolve()}"
    where = str(out / STUDY_FILE) if url.startswith("sqlite:///") else url
    if storage and existing and existing != storage:
        raise NasconvError(f"{out}: already holds a study stored at {existing}, not {storage}")
    holds = recorded_name(out) if existing else None
    if holds is not None and holds != space.name:  # one results folder, one study
        raise NasconvError(
            f"{out}: holds the results of study '{holds}', not '{space.name}' (the space's name:); "
            f"use --out DIR for a new search"
        )
    if existing and existing.startswith("sqlite:///"):
        check_sqlite_study(Path(existing.removeprefix("sqlite:///")))
    # a --storage sqlite file that does not exist yet holds no study: opening it here would create it
    unborn = not existing and url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists()
    rdb = _rdb_storage(url, where, create=True) if (existing or storage) and not unborn else None
    if rdb is None:
        if resume:
            raise NasconvError(f"{out}: no study '{space.name}' to resume (run without --resume to start one)")
        _check_new_folder(out)
        return _Inspection(url=url, study=None, storage=None)
    present = space.name in optuna.get_all_study_names(rdb)
    if present and not resume:
        n = len(optuna.load_study(study_name=space.name, storage=rdb).trials)
        raise NasconvError(
            f"{out}: already holds study '{space.name}' with {n} trials; "
            f"use --resume to continue it, or --out DIR for a new search"
        )
    if resume and not present:
        raise NasconvError(f"{out}: no study '{space.name}' to resume (run without --resume to start one)")
    if not present:
        _check_new_folder(out)
        return _Inspection(url=url, study=None, storage=rdb)
    study = optuna.load_study(study_name=space.name, storage=rdb)
    recorded = study.user_attrs.get("space")
    if not isinstance(recorded, dict):
        raise NasconvError(f"{where}: the study records no space, so nasconv cannot check a resume against it")
    refusal, notes = resume_differences(recorded, space)
    if refusal:
        raise NasconvError(
            f"{out}: cannot resume: {refusal}, which changes the meaning of recorded trials; "
            f"use the original space, or --out DIR for a new search"
        )
    refusal, more = evaluation_differences(study.user_attrs.get(EVALUATION_ATTR), evaluation_record(table))
    if refusal:
        raise NasconvError(f"{out}: cannot resume: {refusal}, or --out DIR for a new search")
    return _Inspection(url=url, study=study, storage=rdb, notes=tuple(notes + more))


# what a search and its report write into a results folder (results/ and the kept weights live above
# this layer, so their names are spelled here): a folder holding any of them but no study is refused
_RESULT_FILES = (
    SPACE_FILE,
    NAME_FILE,
    "weights",
    "trials.csv",
    "pareto.csv",
    "pareto.png",
    "pareto.html",
    "report.html",
)


def _check_new_folder(out: Path) -> None:
    """A new search writes space.yaml, trials.csv, ... into ``out``: never over files already there."""
    if out.exists() and not out.is_dir():
        raise NasconvError(f"{out}: is a file, not a results folder; use --out DIR")
    taken = [name for name in _RESULT_FILES if (out / name).exists()]
    if taken:
        raise NasconvError(
            f"{out}: holds {taken[0]} but no study; a new search would overwrite it: use --out DIR for a new folder"
        )


def check_study(space: Space, out: Path, *, storage: str | None, resume: bool, table: str | Path | None = None) -> int:
    """Check that a search may start (or resume) in ``out`` without writing anything; returns how
    many trials of its budget are already done (0 for a new study). ``table``: tabular mode's table."""
    found = _inspect(space, out, storage=storage, resume=resume, table=table)
    if found.study is None:
        return 0
    return sum(counts_toward_budget(t) for t in found.study.get_trials(deepcopy=False))


def open_or_create_study(
    space: Space,
    out: Path,
    *,
    storage: str | None,
    resume: bool,
    sampler: Callable[[int], optuna.samplers.BaseSampler],
    table: str | Path | None = None,
) -> OpenedStudy:
    """The study to search in. Refuses to overwrite an existing study, to resume a missing one, and
    to resume with a space whose recorded values would change meaning; checks everything before it
    changes anything. ``sampler(n)`` makes the sampler given the n trials already recorded (a resumed
    sampler must not replay the random stream of the first run). ``table``: tabular mode's table,
    recorded in the study (a resume must use the same one)."""
    import optuna

    found = _inspect(space, out, storage=storage, resume=resume, table=table)
    if found.study is not None:
        assert found.storage is not None
        fail_stale_trials(found.study, found.storage)
        found.study.sampler = sampler(len(found.study.trials))
        return OpenedStudy(study=found.study, resumed=True, notes=found.notes)
    url = found.url
    out.mkdir(parents=True, exist_ok=True)
    if not storage:  # write-ahead log: cheaper commits, and readers (dashboard, report) never block us
        engine = optuna.storages.RDBStorage(url).engine
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        engine.dispose()
    try:
        study = optuna.create_study(study_name=space.name, storage=url, directions=space.directions, sampler=sampler(0))
    except optuna.exceptions.DuplicatedStudyError:  # another search created it since the check
        raise NasconvError(
            f"{out}: another search created study '{space.name}' here meanwhile; use --out DIR for a new search"
        ) from None
    study.set_user_attr("objectives", space.objectives)
    study.set_user_attr("genes", json.dumps(space.genes(), default=list))
    study.set_user_attr("space", space.spec.model_dump(mode="json"))
    study.set_user_attr(EVALUATION_ATTR, evaluation_record(table))
    if storage:
        (out / STORAGE_FILE).write_text(storage + "\n")
    (out / NAME_FILE).write_text(space.name + "\n")
    source = Path(space.source)
    (out / SPACE_FILE).write_text(source.read_text() if source.is_file() else space.to_yaml())
    return OpenedStudy(study=study, resumed=False)


def fail_stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> int:
    """Trials a killed driver left RUNNING or WAITING become FAIL with reason ``INTERRUPTED``."""
    import optuna

    study_id = storage.get_study_id_from_name(study.study_name)
    stale = [optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING]
    count = 0
    for t in study.get_trials(deepcopy=False, states=stale):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, "reason", INTERRUPTED)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        count += 1
    return count
