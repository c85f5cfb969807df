"""Run directories that no two runs share, and SLURM jobs that resume where they were stopped.

**Run directories.** Hydra names a run's directory by the second it started
(``outputs/<date>/<H-M-S>``) and creates it with ``exist_ok``, so two runs started in the same
second wrote into one directory: the config of one beside the checkpoints of the other.
:class:`RunDirectory`, a Hydra callback registered in ``conf/train.yaml``, claims the directory
before Hydra writes anything into it (``on_run_start`` and ``on_multirun_start`` run before
``run_job`` creates the directory and saves ``.hydra/``). A directory that comes from the config
is created with ``os.mkdir``, which is atomic: a run that finds it taken takes ``<dir>-2``,
``<dir>-3``, ... instead. A directory given on the command line (``hydra.run.dir=...``) is the
user's choice, so it is never renamed: a run refuses it while another live gansuite run holds it,
and otherwise takes it over as Hydra always did. Either way the run holds ``.gansuite.lock``
(host, pid, SLURM job) in it until it exits.

**Requeue.** With ``hydra/launcher=slurm`` submitit asks SLURM for ``SIGUSR2`` ``signal_delay_s``
seconds before the time limit (``#SBATCH --signal``; clusters with
``PreemptParameters=send_user_signal`` send it on preemption too), and its own handler requeues the
job at once, which would lose everything since the last periodic checkpoint.
:class:`SaveBeforeRequeue`, another Hydra callback, turns that signal into gansuite's own stop (finish
the batch, save ``checkpoints/last.ckpt``) and lets submitit requeue the job once the run has exited.
The requeued job runs the same Hydra job in the same directory (``hydra.sweep.dir/<job num>``: the
launcher pickled the job's config, its ``${now:}`` included), and :func:`auto_resume`, called by
``gansuite.training.run.train``, continues from that directory's checkpoints.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import socket
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any

from hydra._internal.grammar.utils import escape_special_characters
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from gansuite.errors import ConfigError

LOCK = ".gansuite.lock"
REQUEUED = ".gansuite.requeued"  # the submitit job id of a job that SaveBeforeRequeue had requeued
log = logging.getLogger("gansuite")


# ----------------------------------------------------------------------------- run directories
class RunDirectory(Callback):
    """Hydra callback: each run (``hydra.run.dir``) and each multirun (``hydra.sweep.dir``) gets a directory
    of its own before Hydra writes into it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _claim_for(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _claim_for(config, "sweep")


def _claim_for(config: DictConfig, kind: str) -> None:
    key = f"hydra.{kind}.dir"
    if _secondary_rank():
        return  # rank 0 claims the directory; this rank writes into the one it was given
    wanted = str(config.hydra[kind].dir)
    explicit = any(o.lstrip("+~").split("=", 1)[0] == key for o in config.hydra.overrides.hydra)
    try:
        claimed = claim(wanted, explicit=explicit, key=key)
    except ConfigError as err:
        # Hydra 1.3 turns an exception raised in a callback into a warning and runs the job anyway
        # (hydra/_internal/callbacks.py): stop here, as gansuite-train stops on any ConfigError.
        print(f"gansuite-train: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if claimed == os.path.normpath(wanted):
        return
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra[kind].dir = claimed
        if kind == "sweep":
            # Each job of a multirun recomposes its config from these overrides (load_sweep_config), so the
            # new directory must be one of them, or the jobs would write into the taken one.
            config.hydra.overrides.hydra.append(f"{key}={escape_special_characters(claimed)}")


def _secondary_rank() -> bool:
    """Whether this process is a rank other than 0 (Lightning's DDP children, torchrun, srun tasks)."""
    return any(os.environ.get(name, "0") != "0" for name in ("LOCAL_RANK", "RANK", "NODE_RANK", "SLURM_PROCID"))


def claim(path: str, *, explicit: bool, key: str = "hydra.run.dir") -> str:
    """Create (or for an ``explicit`` path, take) the directory ``path`` for this run and lock it.

    Returns the directory claimed: ``path``, or for a path from the config that another run
    already made, the first free ``path-2``, ``path-3``, ... ``os.mkdir`` fails for all but one of
    several processes creating the same directory, so two runs never get the same one.

    Raises:
        ConfigError: ``explicit`` and another live gansuite run holds ``path`` (``key`` names the option).
    """
    path = os.path.normpath(path)
    if explicit:
        Path(path).mkdir(parents=True, exist_ok=True)
        _lock(Path(path), key)
        return path
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        candidate = path if n == 1 else f"{path}-{n}"
        try:
            os.mkdir(candidate)
        except FileExistsError:
            n += 1
            continue
        _lock(Path(candidate), key)
        if n > 1:
            log.warning(f"{path} was taken by another run started in the same second: this run writes to {candidate}")
        return candidate


def _holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": _slurm_job(),
            "slurm_restart": _count("SLURM_RESTART_COUNT")}


def _slurm_job() -> str | None:
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if array else os.environ.get("SLURM_JOB_ID")


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the run that wrote a lock may still run. Stale: a lock of this process (an earlier run in it has
    ended), and one written by an earlier start of this SLURM job (requeued since, maybe on another node).
    A lock from another host cannot be checked otherwise, so it counts as alive."""
    me = _holder()
    if holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:
        return False
    if me["slurm_job"] and holder.get("slurm_job") == me["slurm_job"] and \
            isinstance(holder.get("slurm_restart"), int) and holder["slurm_restart"] < me["slurm_restart"]:
        return False
    if holder.get("host") != me["host"]:
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError, OverflowError):
        return True  # someone else's process, or a lock gansuite did not write: leave it to the user
    return True


def _read(lock: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(lock.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _lock(folder: Path, key: str) -> None:
    """Write ``folder/.gansuite.lock`` for this process (removed at exit), taking over a stale one."""
    lock = folder / LOCK
    text = json.dumps(_holder())
    tmp = folder / f"{LOCK}.{socket.gethostname()}.{os.getpid()}.tmp"
    tmp.write_text(text)
    try:
        for _ in range(10):
            try:
                os.link(tmp, lock)  # atomic, and the lock is never seen without its contents
                break
            except FileExistsError:
                pass
            holder = _read(lock)
            if holder is None:
                continue  # released meanwhile
            if _alive(holder):
                who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
                raise ConfigError(
                    f"{key}={folder} is in use by another gansuite run ({who}, {lock}); pick another {key}, or "
                    f"leave it out for a new timestamped directory (delete {lock} if that run is gone).")
            if _read(lock) == holder:  # still the stale one, not a lock another run has just taken
                lock.unlink(missing_ok=True)
        else:
            raise ConfigError(f"{key}={folder}: could not take {lock} from the runs starting there at the same "
                              f"time; pick another {key}.")
    finally:
        tmp.unlink(missing_ok=True)
    atexit.register(_release, lock, text)


def _release(lock: Path, text: str) -> None:
    with suppress(OSError):
        if lock.read_text() == text:
            lock.unlink()


# ----------------------------------------------------------------------------- requeue and resume
class SaveBeforeRequeue(Callback):
    """Hydra callback: in a job that submitit started, its requeue signal first stops the run and saves it.

    submitit's handler of its signal (``SIGUSR2``; installed before the job starts) checkpoints the
    job and requeues it at once (``scontrol requeue``; the local executor restarts the process), in
    the middle of a batch. Here the signal goes to gansuite's stop handler instead, the one SIGUSR1
    reaches during training: the run finishes its batch, saves ``checkpoints/last.ckpt`` and exits,
    and submitit's handler runs then. Outside training (no stop handler yet, or any more) and with
    several tasks, whose stop Lightning coordinates, submitit's handler runs at once, and the requeued
    job resumes from the last periodic checkpoint.
    """

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if os.environ.get("SUBMITIT_EXECUTOR"):
            _save_before_requeue(Path(config.hydra.runtime.output_dir))


def _save_before_requeue(output_dir: Path) -> None:
    import submitit

    env = submitit.JobEnvironment()
    usr = env._usr_sig()
    requeue = signal.getsignal(usr)
    if not callable(requeue):
        return
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        stop = signal.getsignal(signal.SIGUSR1)
        if received:
            return  # already stopping
        if not callable(stop) or env.num_tasks > 1:
            requeue(signum, frame)
            return
        received.append(signum)
        log.warning(f"{signal.Signals(signum).name}: the job reaches its time limit or is preempted: stopping as on "
                    "SIGUSR1, then requeueing it")
        stop(signal.SIGUSR1, frame)
        atexit.register(_requeue_at_exit, requeue, signum, env, output_dir)

    signal.signal(usr, on_signal)


def _requeue_at_exit(requeue: Any, signum: int, env: Any, output_dir: Path) -> None:
    """submitit's handler, once the stopped run has saved and exited. It ends the process itself (after
    ``scontrol requeue``; the local executor requeues on its own exit status), which atexit would ignore."""
    if env.paths.result_pickle.exists():
        return  # the job ended with a result after all (the signal came with its last batch): nothing to redo
    marker = output_dir / REQUEUED
    marker.write_text(env.job_id)
    try:
        requeue(signum, None)
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else 1
    except Exception as err:  # noqa: BLE001 - submitit's UncompletedJobError: timed out too many times
        marker.unlink(missing_ok=True)
        log.warning(f"not requeued: {err}")
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _count(name: str) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isascii() and value.isdecimal() else 0


def requeued(output_dir: str | Path) -> bool:
    """Whether this job was requeued: SLURM counts that in ``SLURM_RESTART_COUNT``, whoever requeued it
    (submitit, an administrator, a preemption with ``PreemptMode=REQUEUE``); a job that submitit requeued
    after :class:`SaveBeforeRequeue` stopped it finds its job id in ``<output_dir>/.gansuite.requeued``
    (submitit's local executor has no restart count)."""
    if _count("SLURM_RESTART_COUNT") > 0:
        return True
    marker = Path(output_dir) / REQUEUED
    if not os.environ.get("SUBMITIT_EXECUTOR") or not marker.is_file():
        return False
    import submitit

    return marker.read_text().strip() == submitit.JobEnvironment().job_id


def auto_resume(output_dir: str | Path, resume: str | None) -> str | None:
    """What a run resumes from: ``resume`` (the ``resume=`` option), or for a requeued job whose own run
    directory holds checkpoints, that directory.

    A requeued job is the same Hydra job started again in the same directory; its checkpoints are the
    progress it made, also when it was first started with ``resume=<another run>``: resuming from that
    run again would throw away everything since, at every requeue.
    """
    folder = Path(output_dir) / "checkpoints"
    saved = (folder / "last.ckpt").is_file() or any(folder.glob("step_*.ckpt"))
    if not saved or not requeued(output_dir):
        return resume
    log.info(f"requeued job: resuming from its own run directory {output_dir}")
    return str(output_dir)
