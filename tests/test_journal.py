"""Repairing a torn study journal, on real Optuna journals."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from optuna.storages import JournalStorage  # noqa: E402
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock  # noqa: E402

from adamwkit.tuning import journal  # noqa: E402
from adamwkit.tuning.journal import JournalDamaged, Repair, repair_journal  # noqa: E402

NAME = "s"
NOW = datetime(2026, 11, 26, 18, 22, 15, tzinfo=timezone.utc)
STAMP = "20261126T182215Z"


@pytest.fixture(autouse=True)
def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage(path: Path) -> JournalStorage:
    """The storage exactly as ``adamwkit.tuning.study.open_storage`` builds it."""
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def load(path: Path) -> optuna.Study:
    return optuna.load_study(study_name=NAME, storage=storage(path))


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    for step in range(3):
        trial.report(x + step, step)
    return x


def make_journal(tmp_path: Path) -> tuple[Path, int]:
    """A journal with finished trials, then two enqueued ones; the last record creates one.

    Returns the path and the number of trials.
    """
    path = tmp_path / "study.journal"
    study = optuna.create_study(study_name=NAME, storage=storage(path))
    study.optimize(objective, n_trials=3)
    study.enqueue_trial({"x": 0.25})
    study.enqueue_trial({"x": 0.75})  # the last record: one CREATE_TRIAL line
    assert path.read_bytes().endswith(b"\n")
    return path, 5


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".damaged-*"))


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def assert_loads_and_takes_a_new_trial(path: Path, trials: int) -> None:
    study = load(path)
    assert len(study.trials) == trials
    study.enqueue_trial({"x": 0.5})
    waiting = [t for t in study.trials if t.state == optuna.trial.TrialState.WAITING]
    study.optimize(objective, n_trials=len(waiting))  # the enqueued ones, in order
    again = load(path)
    assert len(again.trials) == trials + 1
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in again.trials)
    assert again.trials[-1].params == {"x": 0.5}
    assert len(again.trials[-1].intermediate_values) == 3
    assert repair_journal(path) is None


def test_without_repair_a_torn_record_breaks_the_study_for_good(tmp_path: Path) -> None:
    """What happened before: optuna skips the torn line, glues the next append onto it
    (losing it), and fails on every read once anything follows."""
    path, trials = make_journal(tmp_path)
    path.write_bytes(path.read_bytes()[:-37])

    study = load(path)  # the torn last line is skipped silently
    assert len(study.trials) == trials - 1
    study.set_user_attr("first", 1)  # glued onto the torn line, and lost
    with pytest.raises(ValueError, match="Expecting"):
        study.set_user_attr("second", 2)
    with pytest.raises(ValueError, match="Expecting"):
        load(path)

    # A glued line with records after it is mid-file damage: refused, file untouched.
    before = path.read_bytes()
    n = len(lines(path))
    with pytest.raises(JournalDamaged, match=rf"line {n - 1} of {n} "):
        repair_journal(path)
    assert path.read_bytes() == before
    assert backups(path) == []


def test_with_repair_the_same_sequence_works(tmp_path: Path) -> None:
    path, trials = make_journal(tmp_path)
    path.write_bytes(path.read_bytes()[:-37])

    assert isinstance(repair_journal(path), Repair)
    study = load(path)
    study.set_user_attr("first", 1)
    study.set_user_attr("second", 2)
    again = load(path)
    assert again.user_attrs == {"first": 1, "second": 2}
    assert len(again.trials) == trials - 1


def test_torn_last_record(tmp_path: Path) -> None:
    path, trials = make_journal(tmp_path)
    original = lines(path)
    damaged = b"".join(original)[:-37]
    path.write_bytes(damaged)

    repair = repair_journal(path, now=NOW)

    assert repair is not None
    assert repair.path == path
    assert repair.backup == tmp_path / f"study.journal.damaged-{STAMP}"
    assert repair.backup.read_bytes() == damaged
    assert repair.kept == len(original) - 1
    assert repair.dropped_bytes == len(original[-1]) - 37
    assert path.read_bytes() == b"".join(original[:-1])
    assert repair.message == (
        f"study.journal: its last record was torn ({repair.dropped_bytes} bytes, from a "
        f"crash or a full disk); backed up to {repair.backup} and dropped it: the folds it "
        "recorded will train again"
    )
    assert not Path(str(path) + ".lock").exists()

    study = load(path)
    assert [t.params for t in study.trials] == [t.params for t in load_original(original)]
    assert_loads_and_takes_a_new_trial(path, trials - 1)


def load_original(original: list[bytes]) -> list[optuna.trial.FrozenTrial]:
    """The trials of the whole records, read by optuna from a clean copy."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        clean = Path(d) / "clean.journal"
        clean.write_bytes(b"".join(original[:-1]))
        return load(clean).trials


def test_last_record_without_its_newline(tmp_path: Path) -> None:
    """A whole JSON object that lost its newline was never read by optuna: dropped."""
    path, trials = make_journal(tmp_path)
    original = lines(path)
    path.write_bytes(b"".join(original)[:-1])

    repair = repair_journal(path, now=NOW)

    assert repair is not None
    assert repair.dropped_bytes == len(original[-1]) - 1
    assert path.read_bytes() == b"".join(original[:-1])
    assert_loads_and_takes_a_new_trial(path, trials - 1)


def test_torn_record_with_a_whole_record_glued_on(tmp_path: Path) -> None:
    """What a rerun did before: its first append went onto the end of the torn line."""
    path, trials = make_journal(tmp_path)
    original = lines(path)
    path.write_bytes(b"".join(original)[:-37])
    load(path).set_user_attr("glued", 1)  # optuna appends it onto the torn line
    damaged = path.read_bytes()
    assert len(lines(path)) == len(original) and damaged.endswith(b"}\n")

    repair = repair_journal(path, now=NOW)

    assert repair is not None
    assert repair.backup.read_bytes() == damaged
    assert repair.kept == len(original) - 1
    assert repair.dropped_bytes == len(damaged) - len(b"".join(original[:-1]))
    assert path.read_bytes() == b"".join(original[:-1])
    assert load(path).user_attrs == {}
    assert_loads_and_takes_a_new_trial(path, trials - 1)


def test_zeros_at_the_end(tmp_path: Path) -> None:
    """A crash can leave the tail of a file as zeros."""
    path, trials = make_journal(tmp_path)
    original = path.read_bytes()
    path.write_bytes(original + b"\0" * 4096)

    repair = repair_journal(path, now=NOW)

    assert repair is not None and repair.dropped_bytes == 4096
    assert path.read_bytes() == original
    assert_loads_and_takes_a_new_trial(path, trials)


@pytest.mark.parametrize(
    ("garbage", "at"),
    [
        (b"garbage\n", 5),
        (b'{"op_code":4,"worker_id":"w","stu\n', 3),  # a torn record, newline and all
        (b"\n", 7),
        (b"[1, 2]\n", 1),
        (b"\xff\xfe\x00\n", 4),
    ],
)
def test_damage_in_the_middle(tmp_path: Path, garbage: bytes, at: int) -> None:
    path, _ = make_journal(tmp_path)
    original = lines(path)
    damaged = b"".join(original[: at - 1]) + garbage + b"".join(original[at - 1 :])
    path.write_bytes(damaged)
    mtime = path.stat().st_mtime_ns

    with pytest.raises(JournalDamaged) as info:
        repair_journal(path, now=NOW)

    assert str(info.value) == (
        f"journal={path} is damaged at line {at} of {len(original) + 1} (not a whole "
        "record): restore it from a backup, or move it away to start the study again"
    )
    assert isinstance(info.value, ValueError)
    assert path.read_bytes() == damaged
    assert path.stat().st_mtime_ns == mtime
    assert backups(path) == []
    assert not Path(str(path) + ".lock").exists()


def test_damage_in_the_middle_and_at_the_end(tmp_path: Path) -> None:
    """The first damaged line decides: a torn tail does not hide earlier damage."""
    path, _ = make_journal(tmp_path)
    original = lines(path)
    damaged = b"".join(original[:2]) + b"junk\n" + b"".join(original[2:])[:-10]
    path.write_bytes(damaged)

    with pytest.raises(JournalDamaged, match=rf"at line 3 of {len(original) + 1} "):
        repair_journal(path)
    assert path.read_bytes() == damaged


def test_undamaged_journal_is_not_touched(tmp_path: Path) -> None:
    path, trials = make_journal(tmp_path)
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns

    assert repair_journal(path) is None

    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.journal"]
    assert len(load(path).trials) == trials


def test_missing_and_empty_journals(tmp_path: Path) -> None:
    path = tmp_path / "study.journal"
    assert repair_journal(path) is None
    assert not path.exists()

    path.write_bytes(b"")
    assert repair_journal(path) is None
    assert path.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.journal"]


def test_only_a_torn_record(tmp_path: Path) -> None:
    path = tmp_path / "study.journal"
    torn = b'{"op_code":0,"worker_id":"1234-5678","study_name":"s","direc'
    path.write_bytes(torn)

    repair = repair_journal(path, now=NOW)

    assert repair is not None
    assert repair.kept == 0
    assert repair.dropped_bytes == len(torn)
    assert repair.backup.read_bytes() == torn
    assert path.read_bytes() == b""
    study = optuna.create_study(study_name=NAME, storage=storage(path))
    study.optimize(objective, n_trials=1)
    assert len(load(path).trials) == 1


def test_backup_never_overwrites_an_earlier_one(tmp_path: Path) -> None:
    path, _ = make_journal(tmp_path)
    first = tmp_path / f"study.journal.damaged-{STAMP}"
    second = tmp_path / f"study.journal.damaged-{STAMP}-1"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    damaged = path.read_bytes()[:-5]
    path.write_bytes(damaged)

    repair = repair_journal(path, now=NOW)

    assert repair is not None
    assert repair.backup == tmp_path / f"study.journal.damaged-{STAMP}-2"
    assert repair.backup.read_bytes() == damaged
    assert first.read_bytes() == b"first"
    assert second.read_bytes() == b"second"


def test_backup_name_is_utc(tmp_path: Path) -> None:
    path, _ = make_journal(tmp_path)
    path.write_bytes(path.read_bytes()[:-1])
    local = datetime(2026, 11, 26, 20, 22, 15).astimezone()
    repair = repair_journal(path, now=local)
    assert repair is not None
    expected = local.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    assert repair.backup.name == f"study.journal.damaged-{expected}"


def test_one_byte_message(tmp_path: Path) -> None:
    path = tmp_path / "study.journal"
    path.write_bytes(b"{")
    repair = repair_journal(path, now=NOW)
    assert repair is not None
    assert "(1 byte, from a crash" in repair.message


class _ObservedLock:
    """The journal's real lock, setting ``contended`` when asked for while another holds it
    (its lock file, ``<journal>.lock``, exists): the acquire that follows must wait."""

    def __init__(self, lock: Any, path: Path, contended: threading.Event) -> None:
        self._lock, self._lock_file, self._contended = lock, Path(f"{path}.lock"), contended

    def acquire(self) -> bool:
        if self._lock_file.exists():
            self._contended.set()
        return bool(self._lock.acquire())

    def release(self) -> None:
        self._lock.release()


def test_repair_waits_for_the_journal_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An append in progress (holding optuna's lock) is not raced by the repair.

    No sleeps: the test goes on once the repair has asked for the lock the append holds,
    and the repair can only return after the append finished and released it.
    """
    path, _ = make_journal(tmp_path)
    original = path.read_bytes()
    contended = threading.Event()
    real_lock = journal.journal_lock
    monkeypatch.setattr(
        journal, "journal_lock", lambda p: _ObservedLock(real_lock(p), p, contended)
    )
    lock = JournalFileOpenLock(str(path))
    lock.acquire()
    path.write_bytes(original + b'{"op_code":2,"worker_id"')  # the append, half done
    results: list[Repair | None] = []
    worker = threading.Thread(target=lambda: results.append(repair_journal(path)))
    worker.start()
    try:
        # the timeout only bounds a failure (a repair that never takes the lock)
        assert contended.wait(timeout=30), "the repair did not ask for the journal's lock"
        assert worker.is_alive() and results == []  # it waits: the append holds the lock
        with open(path, "ab") as f:  # the append finishes, then releases the lock
            f.write(b':"w","study_id":0,"user_attr":{"k":1}}\n')
    finally:
        lock.release()
        worker.join(timeout=30)
    assert results == [None]  # it read the finished append: nothing to repair
    assert load(path).user_attrs == {"k": 1}


@pytest.mark.parametrize(
    "foreign",
    [
        b"{}\n",
        b'{"op_code":4,"worker_id":"w"}\n',  # CREATE_TRIAL without its study
        b'{"op_code":true,"worker_id":"w","study_id":0}\n',
        b'{"op_code":8,"worker_id":"w","trial_id":0,"user_attr":{"a":1,"b":2}}\n',
    ],
)
def test_a_foreign_last_record_is_dropped_like_a_torn_one(tmp_path: Path, foreign: bytes) -> None:
    """Whole JSON that Optuna cannot apply would stop every read (KeyError: 'op_code')."""
    path, trials = make_journal(tmp_path)
    original = path.read_bytes()
    path.write_bytes(original + foreign)

    repair = repair_journal(path, now=NOW)

    assert repair is not None and repair.foreign and repair.dropped_bytes == len(foreign)
    assert repair.message.startswith("study.journal: its last line is not an Optuna journal")
    assert path.read_bytes() == original
    assert_loads_and_takes_a_new_trial(path, trials)


def test_a_tail_of_damaged_lines_with_no_whole_record_after_is_dropped(tmp_path: Path) -> None:
    path, trials = make_journal(tmp_path)
    original = path.read_bytes()
    tail = b'{}\ngarbage\n{"op_code":2,"worker_id":"w","study_id":0,"user_at'
    path.write_bytes(original + tail)

    repair = repair_journal(path, now=NOW)

    assert repair is not None and repair.dropped_lines == 3
    assert "its last 3 lines are not whole Optuna records" in repair.message
    assert path.read_bytes() == original
    assert_loads_and_takes_a_new_trial(path, trials)
