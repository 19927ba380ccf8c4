"""``tune`` under ``torchrun``: each run of a study trains on every process of the group.

``torchrun --nproc_per_node N -m adamwkit tune ...`` (or ``adamwkit.tune(...)`` in a script
that ``torchrun`` starts) sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`launched`
reads them, and :func:`run` then runs the plan as one distributed group:

- every rank validates the same arguments (:func:`adamwkit.tuning.plan`) and joins the
  group: the default process group is initialised if the caller has not done so (``nccl``
  when the runs train on CUDA, else ``gloo``), and a ``gloo`` group of its own carries
  this module's messages (any default backend works underneath the user's DDP);
- the ranks check that they run the same study (a rank started with other arguments is
  one line naming it, on every rank);
- rank 0 runs the study as a single worker would (:func:`.protocol.run_plan`): it
  claims candidates from the storage, and for each run it sends the run's :class:`Trial`
  (weight decay, lr, fold, indices, seed, precision...) to the other ranks, calls the
  objective itself, then gathers how the run ended on every rank. Rank 0 alone records
  results and writes the summary and the report; the other ranks only train.
- every rank calls the objective with the same trial (its device is the rank's own GPU,
  ``cuda:LOCAL_RANK``, when the runs train on CUDA): the objective does its own DDP on
  the group that is already initialised.

Failures: an error in the objective on another rank fails the run (``rank 1: ValueError:
...``) and a rerun retries it, as an error on rank 0 does. A rank that dies (killed, out
of memory, ``os._exit``) is noticed by rank 0 through the broken group, or through the
SIGTERM with which ``torchrun`` stops the group: the run fails with one line naming the
rank and its process (``RankLost``), recorded as an error so that the same command run
again retries it (its finished folds kept); rank 0 then stops (:class:`GroupLost`) and
the summary says the run was interrupted. An error on one rank while the others wait
inside a collective of the objective (its DDP) holds them until the default group's
timeout, after which that group is broken: on gloo, every rank checks it after a run that
failed on some rank, and the run fails with every rank's error (:class:`GroupBroken`),
then every rank stops (:class:`GroupLost`); on nccl, torch's watchdog ends the processes
whose collective timed out. ``trial_timeout`` is refused: a rank blocked in a collective
cannot run its timer's handler, so its time limit would not hold.

Why not Optuna's ``TorchDistributedTrial``: it mirrors one ``optuna.Trial``'s
``suggest_*`` and ``report`` calls from rank 0 to the others, inside ``study.optimize``.
``tune`` claims candidates itself and hands objectives its own :class:`Trial` with every
value fixed before the call, so the same idea is simpler here: the whole trial is sent
once, before the call, and the outcomes are gathered once, after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch

from .._checks import ArgumentError
from .._device import device_for
from .executor import exit_reason
from .objective import Objective, Trial, outcome_of

if TYPE_CHECKING:
    from .config import TuneConfig
    from .planning import TunePlan
    from .protocol import TuneResult

__all__ = [
    "GroupBroken",
    "GroupLost",
    "LeaderFailed",
    "RankFailed",
    "RankLost",
    "launched",
    "rank",
    "run",
]

#: How long a rank waits on this module's group (for the next run, while rank 0 waits on
#: other workers of the storage; or for the others' end of a run). A dead rank is noticed
#: at once (its sockets close, or torchrun stops the group), not after this.
GROUP_TIMEOUT = datetime.timedelta(days=30)

#: How long rank 0 looks for the rank that ended once the group broke (its process may
#: take a moment to exit after its sockets close).
FIND_DEAD_S = 3.0

#: Set by ``python -m adamwkit``: the other ranks print nothing of the result (rank 0
#: does), while their objective's own output goes where it would.
quiet_result = False

_TRIAL_FIELDS = ("weight_decay", "lr", "decay_scale", "fold", "train_idx", "val_idx", "seed",
                 "precision", "epochs", "batch_size", "single_split")  # fmt: skip


class RankLost(RuntimeError):
    """A rank of the group ended during a run: that run fails (recorded as an error, so a
    rerun retries it)."""


class RankFailed(RuntimeError):
    """The objective failed on another rank: that run fails, naming the rank (its
    traceback is in that rank's output)."""


class GroupBroken(RuntimeError):
    """A run failed on some rank and the default process group broke with it (a rank that
    waited in a collective of the objective timed out): that run fails (recorded as an
    error, so a rerun retries it), and the command stops, since every later run would
    fail on the broken group."""


class GroupLost(BaseException):
    """The group lost a rank, or rank 0: this process stops (like ``KeyboardInterrupt``,
    it is not an error of a run, so the executor does not catch it)."""


class LeaderFailed(RuntimeError):
    """Rank 0 ended with an error; the other ranks raise this, naming it."""


class _Terminated(BaseException):
    """SIGTERM on rank 0 during a run: torchrun stops the group because a rank ended."""


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def launched() -> bool:
    """Whether this process is one of several started by ``torchrun`` (``WORLD_SIZE`` > 1
    and ``RANK`` set), or joined a process group of several ranks already."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    world, rank_ = _env_int("WORLD_SIZE"), _env_int("RANK")
    return world is not None and world > 1 and rank_ is not None


def rank() -> int:
    """This process's rank (0 outside a group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK") or 0


# ---------------------------------------------------------------------------- the group


@dataclasses.dataclass(frozen=True)
class Peer:
    """A rank's process: where it runs, to name it when it ends."""

    rank: int
    host: str
    pid: int

    def __str__(self) -> str:
        here = "" if self.host == socket.gethostname() else f" on {self.host}"
        return f"rank {self.rank} (pid {self.pid}{here})"


class Group:
    """The ranks, and this module's ``gloo`` group over them (messages from rank 0, and
    outcomes gathered from every rank)."""

    def __init__(self, config: TuneConfig) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.owned = False
        env_local = _env_int("LOCAL_RANK")
        if not dist.is_initialized():
            mine = _device(config, env_local or 0)
            cuda = torch.cuda.is_available() and mine.type == "cuda"
            if cuda:
                torch.cuda.set_device(mine)  # nccl's collectives use the current device
            dist.init_process_group("nccl" if cuda else "gloo")
            self.owned = True
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.local_rank = self.rank if env_local is None else env_local
        try:
            self.pg: Any = dist.new_group(backend="gloo", timeout=GROUP_TIMEOUT)
        except BaseException:
            self.close()
            raise
        self.peers: list[Peer] = []

    def agree(self, identity: Any) -> None:
        """Exchange who is where, and check that every rank runs the same study."""
        mine = (socket.gethostname(), os.getpid(), identity)
        every: list[Any] = [None] * self.size
        self.dist.all_gather_object(every, mine, group=self.pg)
        self.peers = [Peer(r, host, pid) for r, (host, pid, _) in enumerate(every)]
        other = [r for r, (_, _, ident) in enumerate(every) if ident != every[0][2]]
        if other:
            ranks = ", ".join(str(r) for r in other)
            raise ValueError(
                f"rank(s) {ranks} of the torchrun group run another study than rank 0 (other "
                "arguments, or other data): start every rank with the same command"
            )

    def send(self, message: Any) -> None:
        self.dist.broadcast_object_list([message], src=0, group=self.pg)

    def receive(self) -> Any:
        box: list[Any] = [None]
        self.dist.broadcast_object_list(box, src=0, group=self.pg)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        every: list[Any] = [None] * self.size
        self.dist.all_gather_object(every, value, group=self.pg)
        return every

    def dead(self, wait: float = FIND_DEAD_S) -> list[Peer]:
        """The other ranks on this machine whose process has ended (looked for up to
        ``wait`` seconds: a process closes its sockets before it exits)."""
        here = socket.gethostname()
        others = [p for p in self.peers if p.rank != self.rank and p.host == here]
        deadline = time.monotonic() + wait
        while True:
            found = [p for p in others if not _alive(p.pid)]
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)

    def close(self) -> None:
        dist = self.dist
        with contextlib.suppress(Exception):
            if getattr(self, "pg", None) is not None:
                dist.destroy_process_group(self.pg)
                self.pg = None
        if self.owned and dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()
            self.owned = False


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel (a zombie then looks alive)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _group_errors() -> tuple[type[BaseException], ...]:
    """What a collective raises when a rank is gone (gloo: ``RuntimeError``; newer torch:
    ``DistBackendError``, a ``RuntimeError`` too)."""
    return (RuntimeError, ConnectionError)


def _first_line(err: BaseException) -> str:
    from .study import typed_first_line

    return typed_first_line(err)


def _cause(err: BaseException) -> str:
    """A collective's error, short: gloo's ``[file:line] Connection closed by peer
    [addr]:port. This is typically...`` gives ``Connection closed by peer``."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    text = text.split(". ", 1)[0].rstrip(".")
    return text.split(" [", 1)[0] if text.startswith("Connection closed") else text


def _short(err: BaseException) -> str:
    """An error as one line, a collective's without gloo's source location."""
    if str(err).startswith("["):
        return f"{type(err).__name__}: {_cause(err)}"
    return _reason(err)


def _reason(err: BaseException) -> str:
    """What a run's failure on one rank is recorded as (one line)."""
    if isinstance(err, SystemExit):
        return exit_reason(err)
    return _first_line(err)


def _default_group_error() -> str:
    """After a run that failed on some rank: whether the default group still works ("" if
    so, else why not). A rank that failed while the others waited in a collective of the
    objective leaves them to the group's timeout, and gloo's group is broken after it (each
    later collective fails at once), so the ranks stop rather than fail every later run.
    Only gloo is probed: nccl's watchdog ends a process whose collective timed out (rank 0
    then stops through :class:`RankLost`), and a probe there would need each rank's GPU."""
    import torch.distributed as dist

    try:
        if dist.get_backend() != "gloo":
            return ""
        dist.barrier()
    except _group_errors() as err:
        return _cause(err) or type(err).__name__
    return ""


def _device(config: TuneConfig, local_rank: int) -> torch.device:
    """Local rank r's device: ``devices[r]`` (``--gpus``), else GPU r (:func:`check`
    refuses fewer GPUs than processes per node)."""
    return device_for(config.device, local_rank, getattr(config, "devices", None))


def _payload(trial: Trial) -> dict[str, Any]:
    return {name: getattr(trial, name) for name in _TRIAL_FIELDS}


# ---------------------------------------------------------------------------- rank 0


class Leader:
    """Rank 0's objective: sends each run to the other ranks, runs it, gathers how it
    ended on every rank. The executor calls it as it calls any objective."""

    def __init__(self, objective: Objective, group: Group) -> None:
        self.objective, self.group = objective, group
        self.seq = 0
        self.lost: str | None = None
        self.in_run = False  # SIGTERM then fails the run in progress
        self.losing = False  # the group is known broken: SIGTERM changes nothing
        self.broken: str | None = None  # the default group broke: the next call stops
        self.__name__ = getattr(objective, "__name__", type(objective).__name__)

    def __call__(self, trial: Trial) -> Any:
        if self.lost is not None or self.broken is not None:
            raise GroupLost(f"{self.lost or self.broken}: stopping; run the same command "
                            "again to retry its candidate")  # fmt: skip
        self.in_run = True
        try:
            return self._run(trial)
        except _Terminated:
            raise self._lose("torchrun stopped the group") from None
        finally:
            self.in_run = False

    def _run(self, trial: Trial) -> Any:
        self.seq += 1
        own: BaseException | None = None
        value: Any = None
        try:
            self.group.send(("run", self.seq, _payload(trial)))
        except _group_errors() as err:
            raise self._lose(_cause(err)) from None
        try:
            value = self.objective(trial)
        except (KeyboardInterrupt, _Terminated):
            raise
        except BaseException as err:  # the others' outcomes first: the group stays in step
            own = err
        status = (self.seq, own is None, "")
        try:
            every = self.group.gather(status)
            failed_somewhere = not all(ok for _, ok, _ in every)
            probes = self.group.gather(_default_group_error()) if failed_somewhere else []
        except _group_errors() as err:
            raise self._lose(_cause(err)) from None
        causes = [cause for cause in probes if cause]
        if causes:
            whys = [f"rank 0: {_short(own)}"] if own is not None else []
            whys += [f"rank {r}: {why}" for r, (_, ok, why) in enumerate(every) if r and not ok]
            self.broken = f"the default process group broke during a run ({causes[0]})"
            raise GroupBroken(f"{'; '.join(whys)}; then {self.broken}: a rerun of the "
                              "same command retries this candidate")  # fmt: skip
        if own is not None:
            raise own
        out_of_step = [r for r, (seq, _, _) in enumerate(every) if seq != self.seq]
        if out_of_step:
            raise self._lose(f"rank(s) {out_of_step} out of step with rank 0")
        failed = [f"rank {r}: {why}" for r, (_, ok, why) in enumerate(every) if not ok]
        if failed:
            raise RankFailed("; ".join(failed))
        return value

    def _lose(self, cause: str) -> RankLost:
        """The group is broken: the rank(s) that ended, named; later calls stop."""
        self.losing = True
        dead = self.group.dead()
        if dead:
            self.lost = f"{', '.join(str(p) for p in dead)} ended during this run"
        else:
            self.lost = f"a rank of the group stopped answering during this run ({cause})"
        return RankLost(f"{self.lost}; a rerun of the same command retries this candidate")


@contextlib.contextmanager
def _on_sigterm(leader: Leader) -> Iterator[None]:
    """On rank 0, torchrun's SIGTERM (another rank ended) fails the run in progress, which
    is recorded; outside a run it stops tune as Ctrl-C does (summary: interrupted)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if leader.losing:
            return  # already failing the run (or stopping): let it be recorded
        if leader.in_run:
            raise _Terminated
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: torchrun's SIGTERM ends the process
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _lead(plan: TunePlan, group: Group, run_plan: Callable[[TunePlan], TuneResult]) -> TuneResult:
    leader = Leader(plan.prepared.objective, group)
    prepared = dataclasses.replace(plan.prepared, objective=leader)
    wrapped = dataclasses.replace(plan, prepared=prepared)
    with _on_sigterm(leader):
        try:
            result = run_plan(wrapped)  # as one worker (TunePlan.run would come back here)
        except BaseException as err:
            if leader.lost is None:
                text = str(err) if isinstance(err, GroupLost) else _first_line(err)
                with contextlib.suppress(Exception):  # best effort: the others stop too
                    group.send(("end", None, type(err).__name__, text))
            raise
    if leader.lost is None:
        group.send(("end", result, None, None))
    return result


# ---------------------------------------------------------------------------- other ranks


def _follow(plan: TunePlan, group: Group) -> TuneResult:
    """Train every run rank 0 sends, until it ends; its result is returned here too."""
    prep, config = plan.prepared, plan.config
    device = _device(config, group.local_rank)
    seen: set[str] = set()
    while True:
        try:
            message = group.receive()
        except _group_errors() as err:
            raise GroupLost(f"rank 0 ended ({_first_line(err)}): stopping") from None
        if message[0] == "end":
            _, result, kind, text = message
            if kind == "KeyboardInterrupt":
                raise KeyboardInterrupt
            if kind == "GroupLost":  # the default group broke: every rank stops
                raise GroupLost(text)
            if kind is not None:
                raise LeaderFailed(f"rank 0 ended with {text}")
            if quiet_result:
                sys.stdout = open(os.devnull, "w")  # until the process ends
            return result  # type: ignore[no-any-return]
        _, seq, payload = message
        trial = Trial(**payload, device=device, data=prep.data, validation=prep.validation)
        ok, why = _train(prep.objective, trial, seen, group.rank)
        try:
            every = group.gather((seq, ok, why))
            if not all(ok_ for _, ok_, _ in every):  # as rank 0 does: is the group whole?
                group.gather(_default_group_error())
        except _group_errors() as err:
            raise GroupLost(f"rank 0 ended ({_first_line(err)}): stopping") from None


def _train(objective: Objective, trial: Trial, seen: set[str], rank_: int) -> tuple[bool, str]:
    """One run on this rank: whether it ended well, and why not (its traceback printed the
    first time it is seen). No time limit: :func:`check` refuses ``trial_timeout``."""
    try:
        outcome_of(objective(trial))
        return True, ""
    except KeyboardInterrupt:
        raise
    except BaseException as err:
        why = _reason(err)
        if why not in seen:
            seen.add(why)
            text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
            print(f"rank {rank_}: wd {trial.weight_decay:.3g}: {why}. Traceback:\n"
                  f"{text.rstrip()}", file=sys.stderr)  # fmt: skip
        return False, why
    finally:
        trial.close_monitor()


# ---------------------------------------------------------------------------- the entry point


def check(plan: TunePlan) -> None:
    """What a distributed run cannot do, refused on every rank before the group starts."""
    config = plan.config
    if config.workers > 1:
        raise ArgumentError(
            f"workers={config.workers} is invalid under torchrun: each run spans the "
            "processes torchrun started; start one torchrun command per group of GPUs, on "
            "the same storage, instead",
            "workers",
        )
    if config.vectorize == "on":
        raise ArgumentError(
            "vectorize='on' is invalid under torchrun: each run spans the processes "
            "torchrun started, one run at a time",
            "vectorize",
        )
    if config.trial_timeout is not None:
        raise ArgumentError(
            f"trial_timeout={config.trial_timeout:g} is invalid under torchrun: a rank "
            "waiting inside a collective cannot be stopped by its timer, so the others "
            "would wait for the process group's timeout; leave it unset (torchrun's own "
            "timeouts apply)",
            "trial_timeout",
        )
    per_node = _env_int("LOCAL_WORLD_SIZE") or 1
    if per_node > 1:
        _one_gpu_each(config, per_node)


def _one_gpu_each(config: TuneConfig, per_node: int) -> None:
    """Refuse two local ranks on one GPU (nccl refuses it: "Duplicate GPU detected"):
    local rank r trains on ``devices[r]``, else on GPU ``r``."""
    from .. import _device

    if config.devices:
        if len(config.devices) < per_node:
            given = ",".join(map(str, config.devices))
            raise ArgumentError(
                f"devices='{given}' is invalid under torchrun with {per_node} processes per "
                f"node: expected at least {per_node} GPUs, one per process (two processes on "
                "one GPU are refused by nccl)",
                "devices",
            )
        return
    device = str(config.device or "auto")
    count = _device.cuda_count()
    if count == 0 or device == "cpu":
        return  # on the CPU (gloo) any number of processes share the machine
    if device not in ("auto", "cuda"):  # an explicit cuda:i: every rank on that one GPU
        raise ArgumentError(
            f"device={device!r} is invalid under torchrun with {per_node} processes per node: "
            "every process would train on that one GPU; use device='cuda' (local rank r on "
            "GPU r) or devices= (--gpus) with a GPU per process",
            "device",
        )
    if count < per_node:
        raise ArgumentError(
            f"device={device!r} is invalid under torchrun with {per_node} processes per node "
            f"on this machine's {count} CUDA device{'s' if count > 1 else ''}: expected at "
            f"least {per_node} GPUs, one per process (nccl refuses two processes on one GPU); "
            "start one process per GPU, or use device='cpu'",
            "device",
        )


def _identity(plan: TunePlan) -> Any:
    spec = plan.config.spec
    return (plan.config.study, sorted((k, repr(v)) for k, v in spec.attrs().items()))


def run(plan: TunePlan, run_plan: Callable[[TunePlan], TuneResult]) -> TuneResult:
    """Run ``plan`` with this process as one rank of the group (see the module); rank 0
    runs the study through ``run_plan`` (:func:`.protocol.run_plan`, passed in so that
    this module imports nothing of the study's own)."""
    check(plan)
    group = Group(plan.config)
    try:
        group.agree(_identity(plan))
        return _lead(plan, group, run_plan) if group.rank == 0 else _follow(plan, group)
    finally:
        group.close()
