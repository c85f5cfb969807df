"""Data-parallel training for GANs: one gradient all-reduce per optimizer step, of that optimizer's parameters.

PyTorch's ``DistributedDataParallel`` reduces the gradients of every parameter in the wrapped module
during each backward pass. A GAN step has several backward passes that each touch a different
network: D's loss (and its gradient penalty, a double backward), then G's loss through D. Under
DDP the parameters a pass does not reach make the reducer wait for them ("parameters that were not
used in producing the loss"), and the usual fix, ``find_unused_parameters=True``, walks the graph
after every forward and still all-reduces D's gradients during G's step.

:class:`GANDDPStrategy` keeps Lightning's DDP process handling (launch, process group, ranks,
barriers, rank-zero checkpoints) but does not wrap the module in DDP. Instead, when an optimizer
steps, the gradients of exactly its parameters are averaged over the ranks in one flat all-reduce.
So D's step reduces D's gradients once, G's step reduces G's once, n_critic > 1 and double backward
need nothing special, and the result equals one process with the whole batch (up to float
rounding; tests/test_distributed.py checks it). The cost against DDP: the all-reduce starts after
the backward pass instead of overlapping with it.

Batch norm computes its statistics per process unless ``sync_batchnorm=True``: then every batch norm
layer becomes a :class:`SyncBatchNorm` (torch's own on CUDA; on the CPU, where torch's does not run,
one built on differentiable all-reduces) and sees the statistics of the whole batch.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import _sync_module_states
from lightning.pytorch.plugins.layer_sync import LayerSync, TorchSyncBatchNorm
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


class _TrialLauncher(_SubprocessScriptLauncher):
    """Lightning's launcher of one process per extra device, started on this Hydra job's own trial.

    Lightning starts the other ranks with this process's command line. Under a Hydra multirun
    (``-m loss=hinge,wgan_gp``) that line is the whole sweep, so every rank would run a sweep of
    its own. Here the other ranks get this job's overrides and run directory instead, without
    ``-m``, so all ranks train the same trial.
    """

    def _call_children_scripts(self) -> None:
        module = sys.modules[_SubprocessScriptLauncher.__module__]
        original = module._hydra_subprocess_cmd
        module._hydra_subprocess_cmd = hydra_trial_command
        try:
            super()._call_children_scripts()
        finally:
            module._hydra_subprocess_cmd = original


def hydra_trial_command(local_rank: int) -> tuple[list[str], str]:
    """The command line (and working directory) that reruns this Hydra job's trial as rank ``local_rank``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

    import __main__

    hydra_cfg = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "command-line":  # --config-dir
            command += ["--config-dir", source.path.removeprefix("file://")]
    if hydra_cfg.job.config_name:
        command += ["--config-name", hydra_cfg.job.config_name]
    command += list(hydra_cfg.overrides.task)
    command += [f"hydra.run.dir={hydra_cfg.runtime.output_dir}", f"hydra.job.name=train_ddp_process_{local_rank}",
                "hydra.output_subdir=null"]
    return command, get_original_cwd()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_gradients(parameters, world: int | None = None) -> None:
    """Average the gradients of ``parameters`` over all ranks, one all-reduce per dtype.

    Parameters without a gradient are left alone; every rank must have gradients for the same ones
    (true for gansuite's schedules, which branch on the step count only).
    """
    world = world or world_size()
    if world == 1:
        return
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for p in parameters:
        if p.grad is not None:
            by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat.div_(world)
        for grad, reduced in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
            grad.copy_(reduced)


class GANDDPStrategy(DDPStrategy):
    """Lightning's DDP launch and process group, with gradients averaged per optimizer step.

    Args:
        sync_batchnorm: turn every batch norm layer into a :class:`SyncBatchNorm` for training.
        **kwargs: passed to :class:`lightning.pytorch.strategies.DDPStrategy` (``process_group_backend``,
            ``timeout``, ``start_method``, ...). DDP-module options (``find_unused_parameters``,
            ``static_graph``, ``gradient_as_bucket_view``, communication hooks) do not apply: no
            module is wrapped in DDP.
    """

    strategy_name = "gan_ddp"

    def __init__(self, *, sync_batchnorm: bool = False, **kwargs: Any) -> None:
        for key in ("find_unused_parameters", "static_graph", "ddp_comm_hook"):
            if key in kwargs:
                raise ValueError(f"{key} does not apply to GANDDPStrategy, which wraps no module in DDP; remove it")
        super().__init__(**kwargs)
        self.sync_batchnorm = sync_batchnorm

    def setup(self, trainer) -> None:
        # The Trainer sets _layer_sync after __init__ (from its own sync_batchnorm flag); either flag turns it on.
        if self.sync_batchnorm or self._layer_sync is not None:
            self._layer_sync = GANSyncBatchNorm(cuda=self.root_device.type == "cuda")
        super().setup(trainer)

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if type(self._launcher) is _SubprocessScriptLauncher:
            self._launcher = _TrialLauncher(self.cluster_environment, self.num_processes, self.num_nodes)

    def teardown(self) -> None:
        super().teardown()
        if isinstance(self._launcher, _TrialLauncher) and self._launcher.procs is not None:
            # This process started the other ranks: close the process group and remove the variables
            # the launcher set (LOCAL_RANK would tell the next trial of a multirun that its processes
            # are started by someone else), so that the next trial launches a fresh group of its own.
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
            for key in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE"):
                os.environ.pop(key, None)

    def configure_ddp(self) -> None:
        # Start every rank from rank 0's parameters and buffers, as the DDP constructor would.
        _sync_module_states(self.model)

    def optimizer_step(self, optimizer, closure, model=None, **kwargs: Any) -> Any:
        # Called from LightningOptimizer.step(), after the backward pass and before the precision
        # plugin unscales (16-mixed), clips (on_before_optimizer_step) and steps.
        all_reduce_gradients((p for group in optimizer.param_groups for p in group["params"]), self.world_size)
        return super().optimizer_step(optimizer, closure, model, **kwargs)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its backward is the same sum of the incoming gradients (every rank's output uses every input)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the batch over all ranks; runs on any device.

    Mean and variance come from all-reduced sums (two passes: the mean is subtracted before the
    squares are summed), in float32, through an all-reduce whose backward all-reduces the gradient:
    so the input gradient is that of one batch norm over the whole batch. Outside training, or with
    one process, it is ordinary batch norm.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        x32 = x.float()
        count = torch.full((1,), x.numel() // x.shape[1], device=x.device, dtype=torch.float32)
        total = all_reduce(torch.cat([x32.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        centred = x32 - mean.view(shape)
        var = all_reduce(centred.pow(2).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                self.running_var.lerp_((var.detach() * n / (n - 1)).to(self.running_var.dtype), momentum)
        return y.to(x.dtype)

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"SyncBatchNorm: expected at least 2D input (got {x.dim()}D)")


def _swap_norm(module: nn.modules.batchnorm._BatchNorm, cls: type) -> nn.Module:
    # The new layer shares the old one's parameters and buffers, so optimizers and checkpoints see the same tensors.
    new = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
    for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
        setattr(new, name, tensor)
    new.train(module.training)
    return new


class GANSyncBatchNorm(LayerSync):
    """Lightning layer-sync plugin: batch norm layers become synchronised ones for training and return after.

    ``cuda``: use torch's ``nn.SyncBatchNorm`` (faster, CUDA only); otherwise gansuite's
    :class:`SyncBatchNorm`. :class:`GANDDPStrategy` sets it from its device.
    """

    def __init__(self, cuda: bool = False) -> None:
        self.cuda = cuda
        self._originals: dict[int, type] = {}

    def apply(self, model: nn.Module) -> nn.Module:
        if self.cuda:
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        for parent in list(model.modules()):
            for name, child in parent.named_children():
                if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, SyncBatchNorm):
                    new = _swap_norm(child, SyncBatchNorm)
                    self._originals[id(new)] = type(child)
                    setattr(parent, name, new)
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        if self.cuda:
            return TorchSyncBatchNorm().revert(model)
        for parent in list(model.modules()):
            for name, child in parent.named_children():
                if isinstance(child, SyncBatchNorm):
                    setattr(parent, name, _swap_norm(child, self._originals.pop(id(child), nn.BatchNorm2d)))
        return model
