"""Checkpoints named and spaced in gansuite steps, the run's identity inside them, and safe resume."""

from __future__ import annotations

import errno
import os
import socket
from contextlib import suppress
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from gansuite.errors import ConfigError, DiskFullError

LAST = "last.ckpt"
# Options that fix what a step and a batch are: a resume that changed them would silently
# mis-count steps and skip the wrong part of the data stream.
SCHEDULE_KEYS = ("loss.n_critic", "loss.regularizer.every", "data.batch_size", "data._target_")


def _temporary_name(path: Path) -> Path:
    """``.<name>.<host>.<pid>.tmp`` beside ``path``: whose it is, so that a later run can tell a stale one."""
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the checkpoint temporaries in ``folder`` left by processes of this host that no longer run
    (a kill -9 in the middle of a save); those of live processes and of other hosts are kept."""
    removed = []
    host = socket.gethostname()
    for tmp in Path(folder).glob(".*.ckpt.*.tmp"):
        owner, _, pid = tmp.name[:-len(".tmp")].rpartition(".")
        if not owner.endswith(f".ckpt.{host}") or not (pid.isascii() and pid.isdecimal()):
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive (or not ours to signal): its save may be in progress
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def disk_full(err: BaseException) -> bool:
    """Whether an error, or one it arose from, is the disk (or the user's quota) being full. torch.save reports
    it as a RuntimeError of its zip writer raised while handling the file's OSError."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        err = err.__cause__ or err.__context__
    return False


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a hidden temporary file in its own folder, syncs it to disk, then renames it.

    The rename is atomic within one filesystem, so an interrupted save never leaves a file that
    looks complete, and never replaces a good checkpoint with a partial one; the fsync before it means
    a crash of the machine cannot leave a renamed file whose contents never reached the disk.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if "://" in str(path):  # remote storage: leave it to fsspec
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary_name(path)
        try:
            try:
                with open(tmp, "wb") as f:
                    torch.save(checkpoint, f)
                    f.flush()
                    os.fsync(f.fileno())
            except Exception as err:
                if not disk_full(err):
                    raise
                run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
                raise DiskFullError(errno.ENOSPC, f"the disk holding {path.parent} is full (no space left on device) "
                                    f"while saving {path.name}; the checkpoints already there are kept: free some "
                                    f"space, then resume with resume={run}") from None
            os.replace(tmp, path)
            with suppress(OSError):  # the rename itself; some filesystems cannot sync a folder
                folder = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
        finally:
            tmp.unlink(missing_ok=True)


class StepCheckpoint(ModelCheckpoint):
    """Saves ``step_000500.ckpt``-style files every N gansuite steps and keeps ``last.ckpt`` current.

    Args:
        every: gansuite steps (generator updates) between saves.
        optimizer_steps_per_step: Lightning optimizer steps in one gansuite step (n_critic + 1).
    """

    def __init__(self, *, dirpath: str | Path, every: int, optimizer_steps_per_step: int, **kwargs: Any) -> None:
        self.optimizer_steps_per_step = optimizer_steps_per_step
        super().__init__(
            dirpath=dirpath,
            filename="step_{step:06d}",
            auto_insert_metric_name=False,
            every_n_train_steps=every * optimizer_steps_per_step,
            save_last=True,
            save_top_k=-1,
            **kwargs,
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath and Path(self.dirpath).is_dir():
            for tmp in remove_stale_temporaries(Path(self.dirpath)):
                rank_zero_info(f"removed {tmp}, left by a save that was killed")

    def _monitor_candidates(self, trainer: L.Trainer) -> dict[str, torch.Tensor]:
        candidates = super()._monitor_candidates(trainer)
        # File names count gansuite steps, not Lightning's optimizer steps.
        candidates["step"] = torch.tensor(trainer.global_step // self.optimizer_steps_per_step)
        return candidates

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run that stops between save points still leaves its final state in last.ckpt.
        if trainer.global_step % self._every_n_train_steps != 0:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class RunInfo(Callback):
    """Stores the composed config (and what it was composed from) and the W&B run id in every checkpoint, so a
    resume continues the same run."""

    def __init__(self, config: dict[str, Any], composed_from: dict[str, Any] | None = None) -> None:
        self.config = config
        self.composed_from = composed_from

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["gansuite_config"] = self.config
        if self.composed_from is not None:
            # The primary config and command-line overrides it came from: resume= composes the run again from
            # them, so values that follow others (a schedule's length from trainer.max_steps) follow them still.
            checkpoint["gansuite_composed_from"] = self.composed_from
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                checkpoint["wandb_run_id"] = logger.version


def _newest_checkpoint(folder: Path) -> Path | None:
    """``last.ckpt``, or a ``step_*.ckpt`` of a later step: a run killed between writing the step file and
    refreshing ``last.ckpt`` left ``last.ckpt`` a save behind."""
    last = folder / LAST
    steps = {int(p.stem[5:]): p for p in folder.glob("step_*.ckpt") if p.stem[5:].isascii() and p.stem[5:].isdecimal()}
    if not last.is_file():
        return steps[max(steps)] if steps else None
    # Only step files written after last.ckpt: an older run's files in a reused folder are not this run's.
    steps = {n: p for n, p in steps.items() if p.stat().st_mtime_ns >= last.stat().st_mtime_ns}
    if not steps:
        return last
    last_step = None
    for mmap in (True, False):  # memory-mapped: reads the step without loading the weights
        try:
            last_step = torch.load(last, map_location="cpu", weights_only=True, mmap=mmap).get("gansuite_step")
            break
        except Exception:  # noqa: BLE001 - an unreadable last.ckpt is reported by read_checkpoint
            continue
    newest = max(steps)
    return steps[newest] if isinstance(last_step, int) and newest > last_step else last


def resolve_resume(path: str | Path, key: str = "resume") -> Path:
    """A checkpoint file, or a run directory whose checkpoints/last.ckpt is taken (``key`` names the option)."""
    path = Path(path).expanduser()
    if path.is_dir():
        for folder in (path / "checkpoints", path):
            newest = _newest_checkpoint(folder)
            if newest is not None:
                return newest
        raise ConfigError(f"{key}: {path} holds no checkpoints/{LAST}; pass a .ckpt file or a gansuite run directory.")
    if not path.is_file():
        raise ConfigError(f"{key}: {path} does not exist; pass a .ckpt file or a gansuite run directory.")
    return path


def read_checkpoint(path: Path, key: str = "resume") -> dict[str, Any]:
    """Load a checkpoint on the CPU, turning an unreadable file into a one-sentence error."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise ConfigError(
            f"{key}: {path} is not a readable checkpoint ({type(err).__name__}); "
            "pass a .ckpt written by gansuite-train."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "loops" not in checkpoint:
        raise ConfigError(f"{key}: {path} is not a gansuite training checkpoint; pass a .ckpt written by gansuite-train.")
    return checkpoint


def check_compatible(checkpoint: dict[str, Any], module: torch.nn.Module, config: dict[str, Any], path: Path) -> None:
    """Fail before training if the checkpoint does not fit the configured model and schedule."""
    stored = checkpoint.get("gansuite_config") or {}
    for key in SCHEDULE_KEYS:
        then, now = _select(stored, key), _select(config, key)
        if then is not None and then != now:
            raise ConfigError(
                f"resume: {path} was trained with {key}={then} but this run sets {key}={now}; "
                f"resume with {key}={then}, or start a new run."
            )
    check = getattr(module, "check_checkpoint", None)  # a family's own check (a text model's vocabulary), in its words
    if check is not None:
        check(checkpoint, path)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    if missing or unexpected or wrong:
        if wrong:
            key = wrong[0]
            detail = f"{key} is {found[key]} there but {expected[key]} here"
        else:
            detail = f"{len(missing)} weights missing and {len(unexpected)} unexpected, e.g. {(missing or unexpected)[0]}"
        raise ConfigError(
            f"resume: {path} was written for a different model ({detail}); "
            "resume with the model, data and loss options the run was started with."
        )


def _select(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
