"""The Optuna study behind ``adamwkit tune``: storage, claiming work, resumption, heartbeats.

One trial is one candidate (a weight decay, and an lr in joint searches); its k folds are
reported as intermediate values at steps 0..k-1, so a pruner (Optuna's ``WilcoxonPruner``)
can stop a hopeless candidate after a few folds, and a trial cut short keeps the folds it
finished.

- Storage: a journal file in the run folder by default (no server); any URL Optuna's
  ``RDBStorage`` takes (``postgresql://...``) to share the work between machines. The same
  command runs on every machine; only the storage URL says where the study lives.
- The study is created once: the worker whose ``create_study`` succeeds enqueues the grid
  and marks the study ready; the others load it and wait for that mark.
- A worker claims a candidate by ``study.ask()``, which pops one enqueued trial atomically.
- A worker that dies leaves a RUNNING trial behind. With a database, workers send
  heartbeats and a trial whose heartbeat stops is failed and re-enqueued with its finished
  folds (``RetryHeartbeatStaleTrialCallback``); with a journal file, each worker holds a
  lock file in the run folder for its lifetime, and the next worker fails and re-enqueues
  the trials of a worker whose lock is free. A trial whose worker died before recording
  itself is retried after a minute. Either way the retry runs only the missing folds.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from .._checks import ArgumentError
from .._io import WriteFailed
from . import _optuna, workers
from .config import StudySpec
from .cv import Candidate
from .journal import (
    JournalDamaged,
    JournalRepaired,
    StaleLockRemoved,
    clear_stale_lock,
    journal_lock,
    repair_journal,
)
from .storage import STORAGE_RETRY_S, RetryingStorage, _JournalFile

__all__ = [
    "STORAGE_ENV",
    "Claim",
    "check_storage",
    "open_storage",
    "open_study",
    "redact",
    "scrub",
    "trial_candidates",
    "work",
]

JOURNAL_NAME = "study.journal"
STORAGE_ENV = "ADAMWKIT_STORAGE"

CONNECT_TIMEOUT_S = 5
CREATOR_STALL_S = 5.0
POLL_S = 1.0
_HOST = socket.gethostname()
# A trial with no owner recorded (its worker died between claiming it and saying so) is
# stale once it is this old.
ORPHAN_GRACE_S = 60.0


# ---------------------------------------------------------------------------- the schema
# What adamwkit stores in a study, by name: these keys are the study's on-disk format.

# The study's attributes.
SETTINGS = "adamwkit_settings"  # StudySpec.attrs(): the study's identity
READY = "adamwkit_ready"  # the creator has enqueued every candidate
STACKING = "adamwkit_vectorize_{device}"  # the measured stacking decision, per device type
METRIC_NAME = "adamwkit_metric_name"  # the key the objective returned its metric under
AUDIT = "adamwkit_audit"  # the audit of the first run's optimizer (:mod:`.first_audit`)
# A trial's attributes (one trial is one candidate; its runs are steps 0..k-1).
WORKER = "worker"  # the claiming worker's id (its lock file, with a journal)
HOST = "host"  # the claiming worker's machine
FAIL_REASON = "fail_reason"
PRUNE_REASON = "prune_reason"
ERROR = "error"  # the objective raised: a rerun retries the candidate
SPURIOUS = "spurious"  # an ask() that found nothing enqueued: not a candidate
RETRY_OF = "retry_of"  # the trial number this one retries
METRIC = "metric_{run}"  # the run's metric, next to its loss (the intermediate value)
CURVE = "curve_{run}"  # the run's learning curve, thinned to CURVE_POINTS
BASELINE = "baseline_{run}"  # the untrained loss on the run's validation examples
EXAMPLES = "examples_{run}"  # the run's loss per validation example, when reported
MONITOR = "monitor"  # a refit's Monitor log file, in the run folder
VERDICTS = "verdicts"  # a refit's Monitor verdicts
_METRIC_PREFIX, _CURVE_PREFIX = METRIC.split("{")[0], CURVE.split("{")[0]
_BASELINE_PREFIX = BASELINE.split("{")[0]
_EXAMPLES_PREFIX = EXAMPLES.split("{")[0]


# host[:port] as it follows the user part: a bracketed IPv6 address or a name, then an
# optional port, then the end of the authority.
_AUTHORITY_TAIL = re.compile(r"(?:\[[^\]/?#@]*\]|[^\[\]/?#@:]*)(?::[^/?#@]*)?(?=[/?#]|$)")


def _split(url: str) -> SplitResult:
    """``urlsplit(url)``, with a password typed as is (holding '/', '?', '#' or '@')
    percent-encoded first.

    ``urlsplit`` ends the authority at the first '/', '?' or '#', so a password holding one
    of them was cut there ("its port is not a number"). The user part is taken to end at the
    last '@' that is followed by a host (and port) and preceded by a user name free of those
    characters, so only the password may hold them; '%' is left alone, so a password
    already percent-encoded is read as before.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        return urlsplit(url)
    for at in [i for i, ch in enumerate(rest) if ch == "@"][::-1]:
        user, colon, password = rest[:at].partition(":")
        if not colon or any(c in user for c in "/?#@") or not _AUTHORITY_TAIL.match(rest, at + 1):
            continue
        encoded = "".join(f"%{ord(c):02X}" if c in "/?#@" else c for c in password)
        return urlsplit(f"{head}://{user}:{encoded}{rest[at:]}")
    return urlsplit(url)


def redact(url: str) -> str:
    """The URL with its password (in the user part or a ``password=`` query) as ``***``."""
    try:
        parts = _split(url)
        password = parts.password
        port = parts.port
    except ValueError:  # a malformed port: hide everything between '://' and the last '@'
        head, sep, tail = url.partition("://")
        return f"{head}{sep}***@{tail.rpartition('@')[2]}" if "@" in tail else url
    netloc = parts.netloc
    if password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}" + (f":{port}" if port else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if k.lower() in _SECRET_KEYS else v) for k, v in pairs], safe="*"
        )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


_SECRET_KEYS = {"password", "sslpassword", "passwd", "pwd"}


def _secrets(url: str) -> list[str]:
    """The password(s) a URL holds, as written and decoded (to scrub from messages)."""
    found: list[str] = []
    try:
        parts = _split(url)
        if parts.password:
            found += [parts.password, unquote(parts.password)]
        found += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_KEYS and v]
    except ValueError:
        tail = url.partition("://")[2]
        user = tail.rpartition("@")[0]
        if ":" in user:
            found.append(user.split(":", 1)[1])
    return sorted({f for f in found if f}, key=len, reverse=True)


def scrub(text: str, url: str | None) -> str:
    """``text`` with every password of ``url`` replaced by ``***``."""
    if url:
        for secret in _secrets(url):
            text = text.replace(secret, "***")
    return text


def check_storage(url: str | None) -> str | None:
    """The storage URL to use: ``url``, else ``$ADAMWKIT_STORAGE``, else ``None`` (a journal
    file). A URL is checked for its form (scheme, host, port) before anything connects.

    Keep passwords off the command line (``ps`` shows it): put the URL in
    ``ADAMWKIT_STORAGE``, or leave the password out of the URL and let PostgreSQL's client
    library read ``PGPASSWORD`` or ``~/.pgpass``.
    """
    if url is None:
        url = os.environ.get(STORAGE_ENV) or None
        if url is None:
            return None
    if not isinstance(url, str) or not url.strip():
        raise ArgumentError(f"storage={url!r} is invalid: expected a database URL", "storage")
    parts = _split(url)
    scheme = parts.scheme.split("+")[0]
    if scheme not in ("postgresql", "mysql", "sqlite"):
        raise ArgumentError(
            f"storage={redact(url)!r} is invalid: expected a database URL such as "
            "'postgresql://user@host:5432/dbname' (or no storage for a journal file)",
            "storage",
        )
    try:
        port = parts.port
    except ValueError:
        raise ArgumentError(
            f"storage={redact(url)!r} is invalid: its port is not a number in 1..65535",
            "storage",
        ) from None
    if port == 0:
        raise ArgumentError(
            f"storage={redact(url)!r} is invalid: its port is not a number in 1..65535",
            "storage",
        )
    return url


def _engine_url(url: str) -> str:
    """SQLAlchemy's URL for ``url``, built from its parts so that a password holding '@',
    ':' or '/' (as typed) or a ``password=`` query arrives intact; PostgreSQL through
    psycopg 3 (the postgres extra), whatever SQLAlchemy's default driver is."""
    from sqlalchemy.engine import URL

    parts = _split(url)
    scheme = parts.scheme
    if scheme == "postgresql":
        scheme = "postgresql+psycopg"
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    password = parts.password
    if password is None and "password" in query:
        password = query.pop("password")
    if scheme.startswith("sqlite"):
        return url
    engine = URL.create(
        scheme,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(password) if password is not None else None,
        host=parts.hostname,
        port=parts.port,
        database=unquote(parts.path[1:]) if len(parts.path) > 1 else None,
        query=query,
    )
    # Optuna takes a string: SQLAlchemy writes the password percent-encoded.
    return engine.render_as_string(hide_password=False)


def open_storage(
    url: str | None, run_dir: Path, heartbeat_interval: int, retry_s: float = STORAGE_RETRY_S
) -> Any:
    """The study's storage: a journal file in ``run_dir``, or a database at ``url``.

    A torn last record of the journal (a crash or a full disk during an append), or a
    foreign one, is backed up and dropped, with a warning; so is a lock file left behind
    by a stopped process. A database that cannot be reached fails within seconds
    with its host and the cause; once open, its calls are retried through an outage for
    up to ``retry_s`` seconds (:class:`RetryingStorage`).
    """
    if url is None:
        from optuna.storages import JournalStorage

        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / JOURNAL_NAME
        try:
            stale = clear_stale_lock(path)
            if stale is not None:
                warnings.warn(stale, StaleLockRemoved, stacklevel=2)
            repaired = repair_journal(path)
        except JournalDamaged:
            raise
        except OSError as err:  # the backup could not be written, the lock not removed
            raise WriteFailed(err.errno, os.strerror(err.errno or 0), str(path)) from err
        if repaired is not None:
            warnings.warn(repaired.message, JournalRepaired, stacklevel=2)
        return JournalStorage(_JournalFile(str(path), lock_obj=journal_lock(path)))
    url = check_storage(url)
    assert url is not None
    parts = _split(url)
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parts.scheme.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    last: Exception | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(4):
            try:
                return RetryingStorage(
                    _engine_url(url),
                    shown=redact(url),
                    retry_s=retry_s,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=3 * heartbeat_interval,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                        max_retry=3, inherit_intermediate_values=True
                    ),
                )
            except Exception as err:  # sqlalchemy's errors, import errors, bad URLs
                last = err
                if not _is_schema_race(err):
                    break
                time.sleep(0.2 * (attempt + 1))  # two workers created the tables at once
    host = parts.hostname or "localhost"
    where = f"{host}:{parts.port}" if parts.port else host
    cause = scrub(first_line(getattr(last, "orig", None) or last), url)
    raise ArgumentError(
        f"storage={redact(url)!r} is unreachable at {where}: {cause}", "storage"
    ) from None


def first_line(err: object) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def typed_first_line(err: BaseException) -> str:
    """``"ValueError: the first line"`` (the type's name alone when the message is empty)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _is_schema_race(err: Exception) -> bool:
    text = str(err).lower()
    return "already exists" in text or "duplicate key" in text or "uniqueviolation" in text


def _distributions(spec: StudySpec) -> dict[str, BaseDistribution]:
    if spec.sampler == "grid":
        dists: dict[str, BaseDistribution] = {
            "weight_decay": CategoricalDistribution(tuple(spec.grid))
        }
        if spec.lr_grid:
            dists["lr"] = CategoricalDistribution(tuple(spec.lr_grid))
        return dists
    assert spec.range is not None
    lo, hi = spec.range
    dists = {"weight_decay": FloatDistribution(lo, hi, log=True)}
    if spec.lr_range:
        a, b = spec.lr_range
        dists["lr"] = FloatDistribution(a, b, log=True)
    return dists


def _sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    # Each process gets its own seed: with one shared seed, workers started together (or a
    # rerun) would propose the same candidates again.
    seed = (spec.seed * 1_000_003 + os.getpid() * 7919 + time.time_ns()) % 2**32
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if spec.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(
    storage: Any,
    name: str,
    spec: StudySpec,
    enqueue: tuple[dict[str, float], ...],
    prune: bool,
) -> optuna.Study:
    """Create the study (and enqueue its candidates) once, or load it and check its spec."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        pruner: optuna.pruners.BasePruner = (
            optuna.pruners.WilcoxonPruner(p_threshold=0.1) if prune else optuna.pruners.NopPruner()
        )
        sampler = _sampler(spec)
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction="minimize", sampler=sampler, pruner=pruner
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)
        _wait_ready(study, spec, enqueue)
        return study
    study.set_user_attr(SETTINGS, spec.attrs())
    for params in enqueue:
        study.enqueue_trial(params, skip_if_exists=True)
    study.set_user_attr(READY, True)
    return study


def _wait_ready(
    study: optuna.Study, spec: StudySpec, enqueue: tuple[dict[str, float], ...]
) -> None:
    """Wait for the study's creator to enqueue the candidates. A creator that stopped
    midway (Ctrl-C, a full disk) leaves the count of trials still: after
    :data:`CREATOR_STALL_S` without a new trial, this worker finishes the job."""
    seen, still_since = -1, time.monotonic()
    while not study.user_attrs.get(READY):
        n = len(study.get_trials(deepcopy=False))
        if n != seen:
            seen, still_since = n, time.monotonic()
        elif time.monotonic() - still_since > CREATOR_STALL_S:
            if SETTINGS not in study.user_attrs:
                study.set_user_attr(SETTINGS, spec.attrs())
            break
        time.sleep(0.2)
    why = spec.mismatch(study.user_attrs.get(SETTINGS, {}))
    if why:
        raise ArgumentError(
            f"study={study.study_name!r} {why}: rerun with the same settings to resume it, or "
            "pass a new study name",
            "study",
        )
    if not study.user_attrs.get(READY):
        for params in enqueue:
            study.enqueue_trial(params, skip_if_exists=True)
        study.set_user_attr(READY, True)


# ---------------------------------------------------------------------------- claiming


class WorkerLock:
    """This process's liveness, as an exclusive lock on ``workers/<id>.lock`` in the run folder.

    The kernel drops the lock when the process dies, however it dies, so another worker
    that can take the lock knows the owner is gone. Process ids and host names are not
    used: in containers they repeat.
    """

    def __init__(self, run_dir: Path) -> None:
        self.id = uuid.uuid4().hex
        self.dir = run_dir / workers.FOLDER
        with workers.usable(self.dir):
            self.dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.dir / f"{self.id}.lock", "w")  # held for life
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def owner_alive(self, worker: str) -> bool:
        """Whether the worker ``worker`` still holds its lock."""
        if worker == self.id:
            return True
        path = self.dir / f"{worker}.lock"
        try:
            with open(path) as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(f, fcntl.LOCK_UN)
        except FileNotFoundError:
            return False
        path.unlink(missing_ok=True)
        return False

    def others_alive(self) -> bool:
        """Whether any other worker of this run folder holds its lock."""
        for path in self.dir.glob("*.lock"):
            name = path.stem
            if len(name) == 32 and name != self.id and self.owner_alive(name):
                return True
        return False

    def close(self) -> None:
        self._file.close()
        (self.dir / f"{self.id}.lock").unlink(missing_ok=True)


def _params(t: FrozenTrial) -> dict[str, Any]:
    """A trial's candidate: its params, or, for a trial whose worker stopped before setting
    them, the params it was enqueued with."""
    return dict(t.params) if "weight_decay" in t.params else dict(_optuna.fixed_params(t) or {})


def _retry(study: optuna.Study, t: FrozenTrial, reason: str) -> None:
    """Fail a stale RUNNING trial and enqueue its candidate again (once, across workers)."""
    params = _params(t)
    if _optuna.fail_running_trial(study, t, {FAIL_REASON: reason}) and "weight_decay" in params:
        study.enqueue_trial(params, user_attrs={RETRY_OF: t.number})


def _fail_stale(study: optuna.Study, lock: WorkerLock | None) -> None:
    """Fail the RUNNING trials whose worker is gone, and re-enqueue their candidates."""
    beating = _optuna.heartbeat_enabled(study)
    if beating:
        _optuna.fail_stale_trials(study)  # databases: the trial's heartbeat stopped
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get(WORKER)
        if worker is None:
            started = t.datetime_start.timestamp() if t.datetime_start else now
            # With a journal file every worker holds a lock in the run folder: when none
            # but this one is alive, the trial's worker is gone.
            alone = not beating and lock is not None and not lock.others_alive()
            if alone or now - started > ORPHAN_GRACE_S:
                _retry(study, t, "its worker stopped before recording itself")
        elif not beating and lock is not None and not lock.owner_alive(worker):
            _retry(study, t, f"its worker ({t.user_attrs.get(HOST, '?')}) stopped")


def _is_spurious(t: FrozenTrial) -> bool:
    return bool(t.user_attrs.get(SPURIOUS))


def trial_candidates(study: optuna.Study, spec: StudySpec) -> list[Candidate]:
    """Every candidate with the folds any of its trials finished, and its state."""
    by_key: dict[tuple[float, float], Candidate] = {}
    order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2}
    default_lr = spec.lr
    for t in study.get_trials(deepcopy=False):
        if _is_spurious(t) or "weight_decay" not in t.params:
            fixed = _optuna.fixed_params(t)
            live = (TrialState.WAITING, TrialState.RUNNING)
            if not _is_spurious(t) and t.state in live and fixed is not None:
                # Waiting, or claimed by a worker that has not set its params yet.
                key = (float(fixed["weight_decay"]), float(fixed.get("lr", default_lr)))
                state = "waiting" if t.state == TrialState.WAITING else "running"
                c = by_key.setdefault(key, Candidate(*key, state=state))
                if state == "running" and c.state == "waiting":
                    c.state = "running"
            continue
        key = (float(t.params["weight_decay"]), float(t.params.get("lr", default_lr)))
        c = by_key.setdefault(key, Candidate(*key, state="failed"))
        for step, value in t.intermediate_values.items():
            if math.isfinite(value):
                c.fold_losses.setdefault(int(step), float(value))
        for name, value in t.user_attrs.items():
            if name.startswith(_METRIC_PREFIX):
                c.fold_metrics.setdefault(int(name[len(_METRIC_PREFIX) :]), float(value))
            elif name.startswith(_EXAMPLES_PREFIX):
                run = int(name[len(_EXAMPLES_PREFIX) :])
                c.example_losses.setdefault(run, [float(v) for v in value])
            elif name.startswith(_BASELINE_PREFIX):
                c.fold_baselines.setdefault(int(name[len(_BASELINE_PREFIX) :]), float(value))
            elif name.startswith(_CURVE_PREFIX):
                run = int(name[len(_CURVE_PREFIX) :])
                c.fold_curves.setdefault(run, [(int(a), float(b)) for a, b in value])
        states = {"complete": 0, "pruned": 1, "running": 2, "waiting": 3, "failed": 4}
        state = {0: "complete", 1: "pruned", 2: "running"}.get(order.get(t.state, 9), "failed")
        if t.state == TrialState.WAITING:
            state = "waiting"
        if states[state] < states[c.state]:
            c.state = state
            c.reason = ""
        if state == "failed" and c.state == "failed" and t.user_attrs.get(FAIL_REASON):
            c.reason = t.user_attrs[FAIL_REASON]
        if state == "pruned" and c.state == "pruned" and t.user_attrs.get(PRUNE_REASON):
            c.reason = t.user_attrs[PRUNE_REASON]
    return sorted(by_key.values(), key=lambda c: (c.lr, c.weight_decay))


CURVE_POINTS = 200


def _thin(curve: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """At most :data:`CURVE_POINTS` evenly spaced points of a learning curve (the last kept)."""
    if len(curve) <= CURVE_POINTS:
        return curve
    stride = len(curve) / CURVE_POINTS
    picked = [curve[int(i * stride)] for i in range(CURVE_POINTS - 1)]
    return [*picked, curve[-1]]


def _earlier_folds(study: optuna.Study, params: dict[str, Any], number: int) -> dict[int, float]:
    """Folds already finished for these params by other trials (failed, stopped, or a
    finished one whose candidate was enqueued twice)."""
    done: dict[int, float] = {}
    states = (TrialState.FAIL, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    for t in study.get_trials(deepcopy=False, states=states):
        if t.number == number or t.params != params:
            continue
        for step, value in t.intermediate_values.items():
            if math.isfinite(value):
                done.setdefault(int(step), float(value))
    return done


class Claim:
    """A claimed candidate: its params and the folds still to run."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, folds: int) -> None:
        self.study, self.trial, self.folds = study, trial, folds
        frozen = _optuna.frozen_trial(study, trial)
        self.params = dict(trial.params)
        done = dict(frozen.intermediate_values)
        for step, value in _earlier_folds(study, self.params, trial.number).items():
            if step not in done:
                trial.report(value, step)
                done[step] = value
        self.done: dict[int, float] = {int(k): float(v) for k, v in done.items()}
        self.ended = False  # told finished, pruned or failed

    @property
    def todo(self) -> list[int]:
        return [f for f in range(self.folds) if f not in self.done]

    @property
    def weight_decay(self) -> float:
        return float(self.params["weight_decay"])

    def lr(self, default: float) -> float:
        return float(self.params.get("lr", default))

    def report(
        self,
        fold: int,
        loss: float,
        metric: float | None = None,
        curve: list[tuple[int, float]] | None = None,
        baseline: float | None = None,
        examples: list[float] | None = None,
        metric_name: str | None = None,
    ) -> bool:
        """Record a fold (its learning curve and untrained baseline first, and the study's
        metric name when it is new); True when the pruner says to stop."""
        if metric_name and self.study.user_attrs.get(METRIC_NAME) != metric_name:
            self.study.set_user_attr(METRIC_NAME, metric_name)
        if baseline is not None:
            self.trial.set_user_attr(BASELINE.format(run=fold), baseline)
        if examples is not None:
            self.trial.set_user_attr(EXAMPLES.format(run=fold), examples)
        if curve:
            self.trial.set_user_attr(CURVE.format(run=fold), [list(p) for p in _thin(curve)])
        if metric is not None:
            self.trial.set_user_attr(METRIC.format(run=fold), metric)
        self.trial.report(loss, fold)
        self.done[fold] = loss
        return len(self.done) < self.folds and self.trial.should_prune()

    def note(self, key: str, value: Any) -> None:
        """Store one more attribute of the candidate (a refit's Monitor log and verdicts)."""
        self.trial.set_user_attr(key, value)

    @contextlib.contextmanager
    def unless_stale(self) -> Iterator[None]:
        """Record inside this block; a claim declared stale meanwhile (a late heartbeat:
        another worker retries the candidate with its recorded runs) ends quietly."""
        try:
            yield
        except optuna.exceptions.UpdateFinishedTrialError:
            self.ended = True

    def finish(self) -> None:
        values = [self.done[f] for f in range(self.folds)]
        self.study.tell(self.trial, sum(values) / len(values))
        self.ended = True

    def prune(self, reason: str = "") -> None:
        if reason:
            self.trial.set_user_attr(PRUNE_REASON, reason)
        self.study.tell(self.trial, state=TrialState.PRUNED)
        self.ended = True

    def fail(self, reason: str, error: bool = False) -> None:
        """Mark the trial failed with ``reason`` (once: later calls change nothing).
        ``error``: the objective raised (a rerun retries the candidate), rather than its
        loss becoming non-finite (a rerun would diverge again)."""
        if self.ended:
            return
        self.trial.set_user_attr(FAIL_REASON, reason)
        if error:
            self.trial.set_user_attr(ERROR, True)
        self.study.tell(self.trial, state=TrialState.FAIL)
        self.ended = True


def retry_errors(study: optuna.Study, spec: StudySpec) -> int:
    """Enqueue again the candidates whose last run raised an error (the user may have fixed
    the bug): their finished folds are kept. Returns how many were enqueued."""
    trials = study.get_trials(deepcopy=False)
    default_lr = spec.lr

    def key(params: dict[str, Any]) -> tuple[float, float]:
        return float(params["weight_decay"]), float(params.get("lr", default_lr))

    alive: set[tuple[float, float]] = set()
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
            if "weight_decay" in t.params:
                alive.add(key(t.params))
        elif t.state == TrialState.WAITING:
            fixed = _optuna.fixed_params(t)
            if fixed is not None:
                alive.add(key(fixed))
    retried = 0
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get(ERROR) and "weight_decay" in t.params:
            k = key(t.params)
            if k not in alive:
                study.enqueue_trial(dict(t.params), user_attrs={RETRY_OF: t.number})
                alive.add(k)
                retried += 1
    return retried


def _next_trial(study: optuna.Study, spec: StudySpec, worker: str) -> optuna.Trial | None:
    """Claim the next candidate, or None when nothing is left to start."""
    trials = study.get_trials(deepcopy=False)
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    if spec.sampler == "grid" and not waiting:
        return None
    if spec.sampler != "grid" and not waiting:
        started = [
            t
            for t in trials
            if not _is_spurious(t)
            and RETRY_OF not in t.user_attrs
            and not _optuna.is_retry_of_failed(t)
        ]
        if len(started) >= (spec.trials or 0):
            return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's note that heartbeats suit optimize()
        trial = study.ask(_distributions(spec))
    frozen = _optuna.frozen_trial(study, trial)
    try:
        if spec.sampler == "grid" and _optuna.fixed_params(frozen) is None:
            # Another worker took the last enqueued candidate between our look and our ask.
            trial.set_user_attr(SPURIOUS, True)
            study.tell(trial, state=TrialState.FAIL)
            return _next_trial(study, spec, worker)
        _optuna.record_heartbeat(study, trial)  # before the owner: a death between is an orphan
        trial.set_user_attr(WORKER, worker)
        trial.set_user_attr(HOST, _HOST)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Paused (SIGSTOP, a swapped-out machine) between the ask and these writes for
        # longer than the orphan grace: another worker has failed this claim and retries
        # the candidate. Drop it, as a claim found stale while training is dropped.
        return _next_trial(study, spec, worker)
    return trial


@contextlib.contextmanager
def claimed(study: optuna.Study, trial: optuna.Trial, folds: int) -> Iterator[Claim]:
    claim = Claim(study, trial, folds)
    beat = _optuna.Heartbeat(study, trial)
    try:
        yield claim
    finally:
        beat.stop()


def work(
    study: optuna.Study,
    spec: StudySpec,
    run_claims: Callable[[list[Claim]], None],
    on_idle: Callable[[], None],
    run_dir: Path,
    batch: int | Callable[[], int] = 1,
) -> None:
    """Claim and run candidates until none is left and no other worker is running one.

    Up to ``batch`` candidates (or ``batch()``, asked before each claim) are claimed at a
    time; ``run_claims(claims)`` trains their
    missing folds (one by one, or all together) and ends each trial (finish, prune or
    fail). ``on_idle()`` is called while waiting for other workers.
    """
    lock = WorkerLock(run_dir)
    try:
        while True:
            _fail_stale(study, lock)
            trials: list[optuna.Trial] = []
            limit = batch() if callable(batch) else batch
            while len(trials) < limit:
                trial = _next_trial(study, spec, lock.id)
                if trial is None:
                    break
                trials.append(trial)
            if trials:
                try:
                    with contextlib.ExitStack() as stack:
                        claims = [stack.enter_context(claimed(study, t, spec.runs)) for t in trials]
                        run_claims(claims)
                except optuna.exceptions.UpdateFinishedTrialError:
                    pass  # declared stale while paused; another worker has retried it
                continue
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running:
                return
            on_idle()
            time.sleep(POLL_S)
    finally:
        lock.close()


# ---------------------------------------------------------------------------- the store


class StudyStore:
    """One study in its storage: every Optuna call of ``tune`` goes through here (or the
    functions above), and every key it stores is one of the schema's names.

    Why ``tune`` claims trials itself (``ask``/``tell``) rather than through
    ``study.optimize``: a worker claims several candidates at once and trains their runs
    as one stacked model, and a candidate is k runs reported as steps; ``optimize`` hands
    out one trial per objective call. Its heartbeat thread and stale-trial retry are used
    as they are (databases); a journal file has no heartbeat, so per-worker lock files
    stand in for it (:class:`WorkerLock`).
    """

    def __init__(self, storage: Any, study: optuna.Study, spec: StudySpec, prune: bool) -> None:
        self.storage, self.study, self.spec, self.prune = storage, study, spec, prune

    @classmethod
    def open(
        cls,
        storage_url: str | None,
        run_dir: Path,
        name: str,
        spec: StudySpec,
        enqueue: tuple[dict[str, float], ...],
        *,
        prune: bool = False,
        heartbeat_interval: int = 10,
        storage_retry: float = STORAGE_RETRY_S,
    ) -> StudyStore:
        """Open the storage and the study (created once, with its candidates enqueued)."""
        storage = open_storage(storage_url, run_dir, heartbeat_interval, storage_retry)
        return cls(storage, open_study(storage, name, spec, enqueue, prune), spec, prune)

    def sibling(
        self, suffix: str, spec: StudySpec, enqueue: tuple[dict[str, float], ...]
    ) -> StudyStore:
        """Another study in the same storage, named ``<study>.<suffix>`` (an extension
        round, the refits): created once, so every worker opens the same one."""
        name = f"{self.name}.{suffix}"
        return StudyStore(
            self.storage, open_study(self.storage, name, spec, enqueue, self.prune), spec,
            self.prune,
        )  # fmt: skip

    @property
    def name(self) -> str:
        return self.study.study_name

    def candidates(self) -> list[Candidate]:
        """Every candidate with the runs it finished, and its state."""
        return trial_candidates(self.study, self.spec)

    def runs_done(self) -> int:
        """Runs recorded, a failed or pruned candidate counting all of its runs."""
        k = self.spec.runs
        return sum(
            k if c.state in ("failed", "pruned") else len(c.fold_losses) for c in self.candidates()
        )

    def ended(self) -> int:
        """Candidates that completed or were pruned."""
        return sum(c.state in ("complete", "pruned") for c in self.candidates())

    def retry_errors(self) -> int:
        """Enqueue again the candidates whose runs raised (see :func:`retry_errors`)."""
        return retry_errors(self.study, self.spec)

    def work(
        self,
        run_claims: Callable[[list[Claim]], None],
        on_idle: Callable[[], None],
        run_dir: Path,
        batch: int | Callable[[], int] = 1,
    ) -> None:
        """Claim and run candidates until none is left (see :func:`work`)."""
        work(self.study, self.spec, run_claims, on_idle, run_dir, batch)

    def stacking(self, device_type: str) -> dict[str, Any] | None:
        """The stacking decision measured on this kind of device, if one was stored."""
        stored = self.study.user_attrs.get(STACKING.format(device=device_type))
        return dict(stored) if stored else None

    def metric_name(self) -> str | None:
        """The key the objective returned its metric under (``None``: none yet)."""
        name = self.study.user_attrs.get(METRIC_NAME)
        return str(name) if name else None

    def record_stacking(self, device_type: str, decision: dict[str, Any]) -> None:
        self.study.set_user_attr(STACKING.format(device=device_type), decision)

    def audit_record(self) -> dict[str, Any] | None:
        """The audit of the study's first run, as stored (:mod:`.first_audit`), or ``None``."""
        stored = self.study.user_attrs.get(AUDIT)
        return dict(stored) if stored else None

    def record_audit(self, record: dict[str, Any]) -> None:
        self.study.set_user_attr(AUDIT, record)

    def notes(self) -> dict[tuple[float, float], dict[str, Any]]:
        """Per candidate (weight decay, lr), the attributes stored with :meth:`Claim.note`."""
        out: dict[tuple[float, float], dict[str, Any]] = {}
        for t in self.study.get_trials(deepcopy=False):
            if "weight_decay" not in t.params:
                continue
            key = (float(t.params["weight_decay"]), float(t.params.get("lr", self.spec.lr)))
            for name in (MONITOR, VERDICTS):
                if name in t.user_attrs:
                    out.setdefault(key, {})[name] = t.user_attrs[name]
        return out
