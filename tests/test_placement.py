"""``devices=`` (``--gpus``): which GPU each worker (or torchrun rank) trains on, how many
stacked members one GPU takes, and the log line that says where each trial runs.

The logic is tested on the CPU with a fake device list: ``adamwkit._device.cuda_count``
and ``free_bytes`` are replaced, so no CUDA call is made; nothing trains on a GPU here
(tests/test_gpu.py does, on a machine with one).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from adamwkit import _device, cli
from adamwkit._device import check_devices, device_for, members_on
from adamwkit.tuning import plan
from adamwkit.tuning.executor import Job, Runner, Sequential, Stacked
from adamwkit.tuning.objective import TaskObjective, outcome_of

GIB = 2**30


@pytest.fixture
def gpus(monkeypatch):
    """A machine with four GPUs (as far as adamwkit asks), 10 GiB free on each."""
    monkeypatch.setattr(_device, "cuda_count", lambda: 4)
    monkeypatch.setattr(_device, "free_bytes", lambda device: 10 * GIB)
    return 4


@pytest.mark.parametrize(("given", "expected"), [
    ("0,1,2,3", (0, 1, 2, 3)), (" 2 , 0", (2, 0)), ([3], (3,)), ((1, 2), (1, 2)),
    ([1.0, 3], (1, 3)), (None, None),
])  # fmt: skip
def test_devices_are_gpu_indices_in_order(gpus, given, expected):
    assert check_devices(given) == expected


@pytest.mark.parametrize(("given", "message"), [
    ("0,4", r"devices='0,4' is invalid: expected indices in \[0, 3\] \(4 CUDA devices\), got 4"),
    ("-1", r"expected indices in \[0, 3\]"),
    ("0,0", "expected each GPU once"),
    ("", "expected GPU indices, comma-separated"),
    ("x", "expected GPU indices, comma-separated"),
    ([0.5], "expected GPU indices"), ([True], "expected GPU indices"), (3, "expected GPU"),
])  # fmt: skip
def test_bad_devices_are_one_line_naming_the_value_and_the_range(gpus, given, message):
    with pytest.raises(ValueError, match=message) as caught:
        check_devices(given)
    assert "\n" not in str(caught.value)


def test_devices_without_cuda_or_with_another_device_are_refused(monkeypatch):
    monkeypatch.setattr(_device, "cuda_count", lambda: 0)
    with pytest.raises(ValueError, match="this machine has no CUDA device"):
        check_devices("0")
    monkeypatch.setattr(_device, "cuda_count", lambda: 2)
    with pytest.raises(ValueError, match="invalid with device='cpu'"):
        check_devices("0,1", "cpu")
    assert check_devices("0,1", "cuda") == (0, 1)


def test_a_worker_per_gpu_round_robin_and_torchrun_ranks():
    """Worker (or local rank) i on devices[i mod n]; without devices, as before."""
    assert [device_for("auto", i, (2, 3)) for i in range(4)] == [
        torch.device("cuda", k) for k in (2, 3, 2, 3)
    ]
    assert device_for("cuda", None, (1,)) == torch.device("cuda", 1)
    assert device_for("cpu", 5) == torch.device("cpu")


def test_members_are_packed_by_each_gpus_measured_memory(gpus, monkeypatch):
    cuda1 = torch.device("cuda", 1)
    # 80% of 10 GiB free: 8 members of 1 GiB, 6 beside a 2 GiB frozen base
    assert members_on(cuda1, GIB, None, 128) == (8, "80% of 10.0 GiB free on cuda:1")
    assert members_on(cuda1, GIB, None, 128, shared=2 * GIB)[0] == 6
    assert members_on(cuda1, GIB, 4.0, 128) == (4, "max_memory 4 GiB")  # per GPU
    assert members_on(cuda1, GIB, None, 5)[0] == 5  # at most the cap
    assert members_on(cuda1, 20 * GIB, None, 128)[0] == 1  # one always trains
    assert members_on(torch.device("cpu"), GIB, None, 128) == (128, "not a GPU")
    assert members_on(cuda1, 0, None, 128) == (128, "no size measured")
    # each GPU its own: a busy GPU takes fewer
    monkeypatch.setattr(_device, "free_bytes", lambda d: (2 if d.index == 2 else 10) * GIB)
    assert [members_on(torch.device("cuda", k), GIB, None, 128)[0] for k in (1, 2)] == [8, 1]


def test_plan_starts_a_worker_per_gpu(gpus, tmp_path):
    p = plan("digits", devices="1,3", out=tmp_path, progress=False)
    assert p.config.devices == (1, 3) and p.config.workers == 2
    p = plan("digits", devices=[0, 1], workers=4, out=tmp_path, progress=False)
    assert p.config.devices == (0, 1) and p.config.workers == 4  # two on each
    assert plan("digits", out=tmp_path, progress=False).config.devices is None


def test_the_api_and_the_cli_refuse_the_same_devices(gpus, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"devices='0,7' is invalid: expected indices in \[0, 3\]"):
        plan("digits", devices="0,7", out=tmp_path)
    code = cli.main(["tune", "--gpus", "0,7", "--quiet", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--gpus='0,7' is invalid: expected indices in [0, 3]" in err
    assert len(err.strip().splitlines()) == 1


def test_fewer_workers_than_gpus_are_refused_by_the_api_and_the_cli(gpus, tmp_path, capsys):
    """--workers 2 --gpus 0,1,2,3 would leave GPUs 2 and 3 idle."""
    with pytest.raises(ValueError, match=r"workers=2 is invalid with devices='0,1,2,3': "
                       r"expected at least 4 workers"):  # fmt: skip
        plan("digits", devices="0,1,2,3", workers=2, out=tmp_path)
    code = cli.main(["tune", "--gpus", "0,1,2,3", "--workers", "2", "--quiet", "--out",
                     str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--workers=2 is invalid with" in err and len(err.strip().splitlines()) == 1
    assert plan("digits", devices="0,1", workers=4, out=tmp_path).config.workers == 4  # 2 a GPU


def test_transfer_refuses_gpus(gpus, tmp_path, capsys):
    code = cli.main(["tune", "--transfer", "--gpus", "0,1", "--quiet", "--out", str(tmp_path)])
    assert code == 2 and "--gpus" in capsys.readouterr().err


def test_workers_take_their_gpus_and_say_so(gpus, tmp_path, capsys):
    """Two workers of one run folder hold slots 0 and 1: GPUs 2 and 3 of devices=(2, 3),
    each with the members that fit its measured free memory."""
    from adamwkit.tuning.protocol import _this_machine
    from adamwkit.tuning.worker import Worker, quiet

    p = plan("digits", devices="2,3", out=tmp_path, progress=False)
    config = _this_machine(p)
    workers = [Worker(p.prepared, config, p.splits, quiet()) for _ in range(2)]
    try:
        assert [w.device for w in workers] == [torch.device("cuda", 2), torch.device("cuda", 3)]
        assert all(w.runner.placed for w in workers)
        fit = workers[0].stacking.max_members
        assert 1 <= fit <= config.max_members
        err = capsys.readouterr().err
        assert f"worker 0 runs on cuda:2, at most {fit} stacked members (80% of 10.0 GiB" in err
        assert "worker 1 runs on cuda:3" in err
    finally:
        for w in workers:
            w.close()
    capped = dataclasses.replace(config, max_memory=1e-3)  # 1 MiB a GPU: fewer members
    w = Worker(p.prepared, capped, p.splits, quiet())
    try:
        assert w.stacking.max_members < fit and "max_memory 0.001 GiB" in w.stacking.packing
    finally:
        w.close()


def _claimed(number: int, runs: int) -> list[Job]:
    key = SimpleNamespace(trial=SimpleNamespace(number=number))
    return [Job(0.1, 1e-3, f, torch.arange(8), torch.arange(4), f, key=key,
                label=f"wd 0.1 fold {f + 1}/{runs}", run=f) for f in range(runs)]  # fmt: skip


def test_the_log_says_which_trial_runs_where(capsys):
    """One at a time: a line per trial (its first run here), not per fold; stacked: one
    line per population naming its trials."""
    runner = Runner(lambda trial: 1.0, decay_scale="lr", device=torch.device("cuda", 1),
                    placed=True)  # fmt: skip
    Sequential(runner).run(_claimed(7, 3) + _claimed(8, 3), lambda job, out: False)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["trial 7 runs on cuda:1 (wd 0.1 fold 1/3)",
                     "trial 8 runs on cuda:1 (wd 0.1 fold 1/3)"]  # fmt: skip

    class Population(TaskObjective):
        def __init__(self) -> None:  # a stand-in: no task
            self.epochs, self.batch_size = 1, 4

        def population(self, trials, progress=None, prune_chance=False):
            return [outcome_of(1.0) for _ in trials]

    runner.objective = Population()
    runner.audit = SimpleNamespace(population=lambda objective, trials: None)  # type: ignore[assignment]
    Stacked(runner, 8).run(_claimed(3, 2) + _claimed(4, 2), lambda job, out: False)
    assert capsys.readouterr().err.strip() == "trials 3, 4 (4 runs together) run on cuda:1"
    quiet = Runner(lambda trial: 1.0, decay_scale="lr", device=torch.device("cuda", 1))
    Sequential(quiet).run(_claimed(9, 1), lambda job, out: False)
    assert capsys.readouterr().err == ""  # without devices=, nothing is said


def test_workers_sharing_a_gpu_split_its_budget():
    """Two workers on one GPU each take half of --max-memory, not all of it (the oracle:
    the budget's arithmetic, (budget / workers - shared) // per member)."""
    from adamwkit._device import members_on

    gib = 2**30
    alone, _ = members_on(torch.device("cuda", 0), gib // 4, 4.0, 100, shared=gib // 2)
    shared, how = members_on(torch.device("cuda", 0), gib // 4, 4.0, 100, gib // 2, workers=2)
    assert alone == (4 * gib - gib // 2) // (gib // 4) == 14
    assert shared == (2 * gib - gib // 2) // (gib // 4) == 6 and "2 workers" in how


def test_under_torchrun_gpus_do_not_start_a_worker_each(gpus, tmp_path, monkeypatch):
    """torchrun's ranks are the one-per-GPU processes: --gpus adds no workers there (the
    distributed check refuses workers > 1)."""
    from adamwkit.tuning import distributed

    monkeypatch.setattr(distributed, "launched", lambda: True)
    p = plan("digits", devices="0,1", out=tmp_path, progress=False)
    assert p.config.devices == (0, 1) and p.config.workers == 1


def test_under_torchrun_each_local_rank_gets_a_gpu_of_its_own(gpus, tmp_path, monkeypatch):
    """torchrun with 4 processes per node: local rank r on gpus[r], so --gpus must list 4;
    without --gpus, the machine must have 4. Two ranks on one GPU (nccl: "Duplicate GPU
    detected") are one line naming the argument before the group starts."""
    from adamwkit.tuning import distributed

    for name, value in {"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "RANK": "0",
                        "LOCAL_RANK": "0"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)

    def with_(**config):
        p = plan("digits", out=tmp_path, progress=False)
        return dataclasses.replace(p, config=dataclasses.replace(p.config, **config))

    for given in ((0, 1, 2, 3), (3, 1, 2, 0), (0, 1, 2, 3, 4)):
        distributed.check(with_(devices=given))
        ranks = [distributed._device(with_(devices=given).config, r) for r in range(4)]
        assert ranks == [torch.device("cuda", k) for k in given[:4]]  # one GPU each
    with pytest.raises(ValueError, match=r"devices='2,3' is invalid under torchrun with 4 "
                       r"processes per node: expected at least 4 GPUs") as err:  # fmt: skip
        distributed.check(with_(devices=(2, 3)))
    assert "\n" not in str(err.value) and err.value.names == ("devices",)
    distributed.check(with_(device="auto"))  # 4 GPUs, 4 processes
    distributed.check(with_(device="cpu"))  # gloo: any number of processes
    one = r"device='cuda:1' is invalid under torchrun with 4 processes per node: every process"
    with pytest.raises(ValueError, match=one + " would train on that one GPU"):
        distributed.check(with_(device="cuda:1"))
    monkeypatch.setattr(_device, "cuda_count", lambda: 2)
    with pytest.raises(ValueError, match=r"device='auto' is invalid under torchrun with 4 "
                       r"processes per node on this machine's 2 CUDA devices: expected at "
                       r"least 4 GPUs") as err:  # fmt: skip
        distributed.check(with_(device="auto"))
    assert "\n" not in str(err.value) and err.value.names == ("device",)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # a process per machine: nothing shared
    distributed.check(with_(device="auto"))
    distributed.check(with_(devices=(1,)))
