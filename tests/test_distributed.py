"""tune under torchrun: every run spans the group's processes (adamwkit.tuning.distributed).

Two CPU processes on gloo, started by ``python -m torch.distributed.run --standalone``
(a free port each time). The objective appends (rank, weight decay, fold) to a file and
all-reduces the weight decay over the default group, as a DDP objective would; it can
end rank 1 with ``os._exit`` once, keyed by a marker file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("optuna")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from adamwkit.tuning import distributed, plan  # noqa: E402

GRID = (0.0, 0.01, 0.1)
FOLDS = 2
TIMEOUT_S = 300  # generous: two processes start torch on a shared, busy machine

OBJECTIVE = """
import json, os, time
import torch
import torch.distributed as dist

def objective(trial):
    rank = dist.get_rank()
    with open(os.environ["DIST_LOG"], "a") as f:
        f.write(json.dumps([rank, trial.weight_decay, trial.fold]) + "\\n")
    kill = os.environ.get("DIST_KILL")  # "weight decay:marker file"
    if kill:
        wd, marker = kill.split(":", 1)
        if rank == 1 and trial.weight_decay == float(wd) and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)
        if rank == 0 and os.environ.get("DIST_SLEEP") and trial.weight_decay == float(wd):
            if not os.path.exists(marker + ".slept"):  # outside any collective: torchrun's
                open(marker + ".slept", "w").close()  # SIGTERM is how rank 0 hears of it
                time.sleep(120)
    stall = os.environ.get("DIST_STALL")  # before the collective: rank 0 waits in it
    if stall and rank == 1 and trial.weight_decay == float(stall):
        raise ValueError("rank 1 fails before the all-reduce")
    t = torch.tensor([trial.weight_decay], dtype=torch.float64)
    dist.all_reduce(t)  # the group the objective's DDP would use
    assert abs(t.item() - dist.get_world_size() * trial.weight_decay) < 1e-12
    raise_on = os.environ.get("DIST_RAISE")  # after the collectives (else rank 0 waits in one)
    if raise_on and rank == 1 and trial.weight_decay == float(raise_on):
        raise ValueError("rank 1 refuses this weight decay")
    return 1.0 + (trial.weight_decay - 0.01) ** 2 + 0.01 * trial.fold
"""

SCRIPT = """
import json, os, sys
import torch.distributed as dist
import adamwkit

dist.init_process_group("gloo")  # the user's own group: tune uses it and leaves it
result = adamwkit.tune("dobj:objective", examples=20, lr=0.01, folds=2,
                       grid=[0.0, 0.01, 0.1], extend=0, test=False, progress=False,
                       out=sys.argv[1])
still = dist.is_initialized()
with open(os.path.join(sys.argv[1], f"rank{dist.get_rank()}.json"), "w") as f:
    json.dump({"best": result.best_weight_decay, "state": result.summary.state,
               "still_initialized": still}, f)
dist.destroy_process_group()
"""


STALL_SCRIPT = """
import datetime, sys
import torch.distributed as dist
import adamwkit

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=5))
adamwkit.tune("dobj:objective", examples=20, lr=0.01, folds=2, grid=[0.0, 0.01, 0.1],
              extend=0, test=False, progress=False, out=sys.argv[1])
dist.destroy_process_group()
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH")) if p)
    # CPU processes on gloo on any machine (on one GPU, two ranks would be refused)
    env.update(OMP_NUM_THREADS="1", DIST_LOG=str(tmp_path / "log.jsonl"), CUDA_VISIBLE_DEVICES="",
               **extra)  # fmt: skip
    env.pop("ADAMWKIT_STORAGE", None)
    return env


def _torchrun(tmp_path: Path, args: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "dobj.py").write_text(textwrap.dedent(OBJECTIVE))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", *args]  # fmt: skip
    return subprocess.run(cmd, env=_env(tmp_path, **extra), cwd=tmp_path, capture_output=True,
                          text=True, timeout=TIMEOUT_S)  # fmt: skip


def _cli(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    grid = ",".join(str(w) for w in GRID)
    return _torchrun(tmp_path, ["-m", "adamwkit", "tune", "dobj:objective", "--examples", "20",
                                "--lr", "0.01", "--folds", str(FOLDS), "--grid", grid,
                                "--extend", "0", "--no-test", "--quiet",
                                "--out", str(tmp_path / "out")], **extra)  # fmt: skip


def _log(tmp_path: Path) -> list[tuple[int, float, int]]:
    path = tmp_path / "log.jsonl"
    if not path.exists():
        return []
    return [tuple(json.loads(line)) for line in path.read_text().splitlines()]  # type: ignore[misc]


def _summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "dobj.objective" / "summary.json").read_text())


def _every_run_once_per_rank(entries: list[tuple[int, float, int]]) -> None:
    runs = Counter(entries)
    wanted = {(r, w, f) for r in (0, 1) for w in GRID for f in range(FOLDS)}
    assert set(runs) == wanted
    assert all(n == 1 for n in runs.values()), runs
    # the two ranks ran each (weight decay, fold) together: the same trial on both
    for w in GRID:
        for f in range(FOLDS):
            assert runs[(0, w, f)] == runs[(1, w, f)] == 1


def _show(proc: subprocess.CompletedProcess[str]) -> str:
    return f"rc {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}"


def test_cli_runs_each_fold_once_on_every_rank(tmp_path: Path) -> None:
    proc = _cli(tmp_path)
    assert proc.returncode == 0, _show(proc)
    _every_run_once_per_rank(_log(tmp_path))
    summary = _summary(tmp_path)
    assert summary["state"] == "complete"
    assert {c["weight_decay"] for c in summary["candidates"]} == set(GRID)
    assert all(c["state"] == "complete" for c in summary["candidates"])
    assert proc.stdout.count("Best weight decay") == 1, _show(proc)  # rank 0 alone prints


@pytest.mark.parametrize("call", ["tune", "plan"])
def test_api_runs_each_fold_once_and_every_rank_gets_the_result(tmp_path: Path, call: str) -> None:
    """adamwkit.tune(...) and adamwkit.tuning.plan(...).run() alike (plan().run() once ran
    a study per rank, each rank's DDP averaging another trial)."""
    script = textwrap.dedent(SCRIPT)
    if call == "plan":
        script = script.replace("adamwkit.tune(", "adamwkit.tuning.plan(").replace(
            "out=sys.argv[1])", "out=sys.argv[1]).run()"
        )
        assert "plan(" in script and ".run()" in script
    (tmp_path / "script.py").write_text(script)
    out = tmp_path / "out"
    out.mkdir()
    proc = _torchrun(tmp_path, [str(tmp_path / "script.py"), str(out)])
    assert proc.returncode == 0, _show(proc)
    _every_run_once_per_rank(_log(tmp_path))
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0] == results[1]
    assert results[0]["state"] == "complete" and results[0]["best"] in GRID
    assert results[0]["still_initialized"]  # the caller's group is left as it was


@pytest.mark.parametrize("heard", ["broken collective", "torchrun's SIGTERM"])
def test_a_dead_rank_fails_its_trial_and_a_rerun_completes_it(tmp_path: Path, heard: str) -> None:
    marker = tmp_path / "killed-once"
    sleep = {"DIST_SLEEP": "1"} if heard == "torchrun's SIGTERM" else {}
    first = _cli(tmp_path, DIST_KILL=f"0.01:{marker}", **sleep)
    assert first.returncode != 0, _show(first)
    assert marker.exists()
    lines = [ln for ln in first.stderr.splitlines() if "ended during this run" in ln]
    assert any("rank 1 (pid " in ln for ln in lines), _show(first)
    assert _summary(tmp_path)["state"] == "interrupted"
    # the study recorded that candidate as failed, naming the rank, as an error to retry
    import optuna

    from adamwkit.tuning import study as schema

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "out" / "dobj.objective" / "study.journal")))  # fmt: skip
    trials = optuna.load_study(study_name="dobj.objective", storage=storage).get_trials()
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert [t.params["weight_decay"] for t in failed] == [0.01]
    reason = failed[0].user_attrs[schema.FAIL_REASON]
    assert reason.startswith("RankLost: rank 1 (pid ") and "\n" not in reason
    assert failed[0].user_attrs[schema.ERROR]
    before = len(_log(tmp_path))

    second = _cli(tmp_path, DIST_KILL=f"0.01:{marker}")
    assert second.returncode == 0, _show(second)
    summary = _summary(tmp_path)
    assert summary["state"] == "complete"
    assert all(c["state"] == "complete" for c in summary["candidates"])
    rerun = Counter(_log(tmp_path)[before:])
    # zero decay finished before the death: not run again; the rest once on both ranks
    assert {w for _, w, _ in rerun} == {0.01, 0.1}
    assert all(n == 1 for n in rerun.values())
    assert {(r, w, f) for r, w, f in rerun} == {
        (r, w, f) for r in (0, 1) for w in (0.01, 0.1) for f in range(FOLDS)
    }


def test_an_error_on_another_rank_fails_that_candidate_naming_the_rank(tmp_path: Path) -> None:
    proc = _cli(tmp_path, DIST_RAISE="0.1")
    assert proc.returncode == 0, _show(proc)
    summary = _summary(tmp_path)
    by_wd = {c["weight_decay"]: c for c in summary["candidates"]}
    assert by_wd[0.1]["state"] == "failed"
    assert by_wd[0.1]["reason"] == (
        "RankFailed: rank 1: ValueError: rank 1 refuses this weight decay"
    )
    assert "rank 1 refuses this weight decay" in proc.stderr  # rank 1's traceback
    assert by_wd[0.0]["state"] == by_wd[0.01]["state"] == "complete"


def test_an_error_while_the_others_wait_in_a_collective_stops_and_a_rerun_retries(
    tmp_path: Path,
) -> None:
    """Rank 1 fails before the all-reduce rank 0 waits in: rank 0 waits for the group's
    timeout (5 s here), after which gloo's default group is broken. The run fails naming
    both ranks' errors, every rank stops (the runs after it would fail on the broken
    group), and a rerun retries that candidate and runs the rest."""
    (tmp_path / "script.py").write_text(textwrap.dedent(STALL_SCRIPT))
    out = tmp_path / "out"
    first = _torchrun(tmp_path, [str(tmp_path / "script.py"), str(out)], DIST_STALL="0.01")
    assert first.returncode != 0, _show(first)
    assert first.stderr.count("GroupLost: the default process group broke during a run") == 2
    assert _summary(tmp_path)["state"] == "interrupted"
    assert {w for _, w, _ in _log(tmp_path)} == {0.0, 0.01}  # 0.1 was not started
    import optuna

    from adamwkit.tuning import study as schema

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(out / "dobj.objective" / "study.journal")))  # fmt: skip
    trials = optuna.load_study(study_name="dobj.objective", storage=storage).get_trials()
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert [t.params["weight_decay"] for t in failed] == [0.01]
    reason = failed[0].user_attrs[schema.FAIL_REASON]
    assert reason.startswith("GroupBroken: rank 0: RuntimeError: ") and "\n" not in reason
    assert "; rank 1: ValueError: rank 1 fails before the all-reduce; then the default " in reason
    assert "gloo/transport" not in reason  # gloo's source location left out
    assert failed[0].user_attrs[schema.ERROR]  # an error: retried
    before = len(_log(tmp_path))

    second = _torchrun(tmp_path, [str(tmp_path / "script.py"), str(out)])
    assert second.returncode == 0, _show(second)
    summary = _summary(tmp_path)
    assert summary["state"] == "complete"
    assert all(c["state"] == "complete" for c in summary["candidates"])
    rerun = Counter(_log(tmp_path)[before:])
    assert set(rerun) == {(r, w, f) for r in (0, 1) for w in (0.01, 0.1) for f in range(FOLDS)}
    assert all(n == 1 for n in rerun.values())


def test_a_rank_started_with_other_arguments_is_refused_on_every_rank(tmp_path: Path) -> None:
    script = tmp_path / "other.py"
    script.write_text(
        "import os, sys, adamwkit\n"
        "grid = [0.0, 0.01] if os.environ['RANK'] == '0' else [0.0, 0.1]\n"
        "adamwkit.tune('dobj:objective', examples=20, lr=0.01, folds=2, grid=grid, extend=0,\n"
        "              test=False, progress=False, out=sys.argv[1])\n"
    )
    proc = _torchrun(tmp_path, [str(script), str(tmp_path / "out")])
    assert proc.returncode != 0
    assert proc.stderr.count("rank(s) 1 of the torchrun group run another study than rank 0") == 2
    assert not _log(tmp_path)  # nothing trained


# ---------------------------------------------------------------------------- in process


def test_launched_reads_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched()
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert not distributed.launched()  # torchrun --nproc_per_node 1: a plain run
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.launched()
    monkeypatch.setenv("RANK", "1")
    assert distributed.rank() == 1


@pytest.mark.parametrize(("option", "flag_name"), [
    ({"workers": 2}, "workers"), ({"vectorize": "on"}, "vectorize"),
    ({"trial_timeout": 5.0}, "trial_timeout"),
])  # fmt: skip
def test_what_a_group_cannot_do_is_one_line(tmp_path: Path, option: dict, flag_name: str) -> None:
    p = plan("digits", folds=2, grid=[0.0, 0.01], out=tmp_path, progress=False, examples=None,
             **option)  # fmt: skip
    with pytest.raises(ValueError, match=f"{flag_name}.*invalid under torchrun") as err:
        distributed.check(p)
    assert "\n" not in str(err.value) and getattr(err.value, "names", ()) == (flag_name,)


def test_two_processes_on_one_gpu_are_refused(tmp_path: Path, monkeypatch) -> None:
    """--gpus 0,1 under torchrun with 4 processes per node would put two ranks on one GPU
    (gpus[r mod n]), which nccl refuses: one line before the group starts."""
    from adamwkit import _device

    monkeypatch.setattr(_device, "cuda_count", lambda: 4)
    monkeypatch.setattr(_device, "free_bytes", lambda device: 2**33)
    for name, value in (("WORLD_SIZE", "4"), ("LOCAL_WORLD_SIZE", "4"), ("RANK", "0")):
        monkeypatch.setenv(name, value)
    p = plan("digits", folds=2, grid=[0.0, 0.01], out=tmp_path, progress=False, devices="0,1")
    with pytest.raises(ValueError, match=r"devices='0,1' is invalid under torchrun with 4 "
                       r"processes per node: expected at least 4 GPUs") as err:  # fmt: skip
        distributed.check(p)
    assert "\n" not in str(err.value)
    distributed.check(plan("digits", folds=2, grid=[0.0, 0.01], out=tmp_path, progress=False,
                           devices="0,1,2,3"))  # fmt: skip  # one GPU per process: fine


@pytest.mark.parametrize(("args", "said"), [
    (["--workers", "2"], "--workers=2 is invalid under torchrun"),
    (["--vectorize", "on"], "--vectorize='on' is invalid under torchrun"),
    (["--trial-timeout", "5"], "--trial-timeout=5 is invalid under torchrun"),
    (["--gpus", "0,1"], "--gpus='0,1' is invalid under torchrun with 4 processes per node: "
                        "expected at least 4 GPUs, one per process"),
])  # fmt: skip
def test_the_command_refuses_the_same_in_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, args: list[str], said: str
) -> None:
    """Rank 0 of a torchrun group of 4 on one machine (its environment; no process starts):
    each refusal before the group would start, as in the API."""
    from adamwkit import _device, cli

    monkeypatch.setattr(_device, "cuda_count", lambda: 4)
    monkeypatch.setattr(_device, "free_bytes", lambda device: 2**33)
    env = {"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = cli.main(["tune", *args, "--folds", "2", "--grid", "0,0.01", "--quiet", "--out",
                     str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and said in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_gloo_errors_are_shortened() -> None:
    err = RuntimeError(
        "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
        "[127.0.0.1]:57985. This is typically caused by a remote worker crashing."
    )
    assert distributed._cause(err) == "Connection closed by peer"
    assert distributed._cause(RuntimeError("Timed out waiting 5ms")) == "Timed out waiting 5ms"
