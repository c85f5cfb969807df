"""Where gansuite's per-step overhead goes: ablations of a gansuite run against the plain loop.

    python benchmarks/overhead.py                     # tiny DCGAN (width 8, batch 16, 28 px), 1 thread, ~5 min
    python benchmarks/overhead.py --only log bar all  # a subset

Each ablation removes one source of per-step overhead from an otherwise default gansuite run (the same run
``throughput.py`` times) by patching it inside the measuring process only; gansuite's files are not touched.
Networks are tiny so that framework overhead, not convolutions, dominates a step, and one torch thread keeps
the measurement steady on a shared machine. The number to read is CPU ms per step (process CPU time,
all threads, so the progress bar's refresh thread counts); "saves" is the default run's CPU ms per step
minus the ablated run's. Runs alternate between variants in every repeat; medians are reported.

Ablations (each applied alone; ``all`` applies every one of them):
  log        no batch is a logged batch (gansuite reads 4 values per logged batch: d_loss, d_real_score,
             d_fake_score, g_loss, with the NaN guard's sums, in one transfer, and sends them to the loggers)
  bar        progress bar disabled (``callbacks.progress_bar.refresh_rate=0``)
  bar4       progress bar redrawn 4 times a second instead of Lightning's default 100 (``refresh_rate=4``)
  pipe       progress bar drawn to a pipe instead of a terminal (Rich then renders nothing)
  hydra      ``module.objective`` a real ``Objective`` holding the loss functions themselves; in a gansuite run
             it is a DictConfig (Hydra merged the dataclass into the module's config) holding Hydra
             ``_DeferredTarget`` wrappers, which re-check Hydra's target policy on every call
  isfinite   no NaN guard: the loss is not added into its device-side sum before each update
  toggle     ``net.requires_grad_(False/True)`` instead of Lightning's ``toggle_optimizer`` / ``untoggle_optimizer``
  ema        EMA update with parameter and buffer lists made once and ``torch._foreach_copy_`` for buffers
  ckpt       no per-batch ``StepCheckpoint.on_train_batch_end`` (its saves never fall in the window anyway)
  callbacks  no sample-grid / scatter / translation callbacks (their per-batch ``pl_module.step`` check)
  logger     ``logger=none`` instead of ``logger=csv``
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lightning as L  # noqa: E402
import throughput as T  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf, open_dict  # noqa: E402

ABLATIONS = ("log", "bar", "bar4", "pipe", "hydra", "isfinite", "toggle", "ema", "ckpt", "callbacks", "logger")


class Ablate(L.Callback):
    """Applies the per-module ablations in ``setup``, before training starts."""

    def __init__(self, *, patches: list[str]) -> None:
        self.patches = set(patches)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        m = pl_module
        if "log" in self.patches:
            m._logs_this_batch = lambda: False
        if "hydra" in self.patches:
            # gansuite's module.objective is a DictConfig (Hydra merges the Objective dataclass passed to
            # instantiate into the module's config) whose losses are Hydra _DeferredTarget wrappers.
            from gansuite.losses import Objective

            def plain(f):
                return functools.partial(f.func, *f.args, **f.keywords) if isinstance(f, functools.partial) else f
            o = m.objective
            m.objective = Objective(d_loss=plain(o.d_loss), g_loss=plain(o.g_loss), weight_clip=o.weight_clip)
        if "isfinite" in self.patches:
            def _update(optimizer, loss, key):
                optimizer.zero_grad(set_to_none=True)
                m.manual_backward(loss)
                optimizer.step()
            m._update = _update
        if "toggle" in self.patches:
            def other_net(optimizer):
                # The wrapped optimizer's params belong to G or to D; freeze the other network.
                first = optimizer.param_groups[0]["params"][0]
                return m.discriminator if any(first is p for p in m.generator.parameters()) else m.generator
            m.toggle_optimizer = lambda optimizer: other_net(optimizer).requires_grad_(False)
            m.untoggle_optimizer = lambda optimizer: other_net(optimizer).requires_grad_(True)


def _patch_process(patches: set[str]) -> None:
    """Class- and module-level ablations; they live only in the measuring (forked) process."""
    if "ema" in patches:
        import gansuite.models.schedule as base

        cache: dict[int, tuple] = {}

        @torch.no_grad()
        def ema_update(ema, model, decay):
            if id(ema) not in cache:
                cache[id(ema)] = (list(ema.parameters()), list(model.parameters()),
                                  list(ema.buffers()), list(model.buffers()))
            ema_p, p, ema_b, b = cache[id(ema)]
            torch._foreach_lerp_(ema_p, p, 1.0 - decay)
            torch._foreach_copy_(ema_b, b)

        base.ema_update = ema_update
    if "ckpt" in patches:
        from gansuite.training.checkpointing import StepCheckpoint

        StepCheckpoint.on_train_batch_end = lambda self, *args, **kwargs: None


def measure_ablation(name: str, cfg: Any, args: argparse.Namespace, workdir: Path, tag: str) -> dict[str, Any]:
    """Runs in the forked process."""
    if name == "plain":
        return T.measure("plain", 28, cfg, args, workdir, tag)
    patches = set(ABLATIONS) if name == "all" else ({name} if name != "gansuite" else set())
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    with open_dict(cfg):
        if "bar" in patches:
            cfg.callbacks.progress_bar.refresh_rate = 0
        elif "bar4" in patches:
            cfg.callbacks.progress_bar.refresh_rate = 4
        if "callbacks" in patches:
            for key in ("sample_grid", "scatter_2d", "translation_grid", "translation_metrics"):
                cfg.callbacks.pop(key)
        if "logger" in patches:
            cfg.logger = None
        cfg.callbacks.ablate = {"_target_": f"{__name__}.Ablate", "patches": sorted(patches)}
    _patch_process(patches)
    return T.measure("gansuite", 28, cfg, args, workdir, tag)

# --------------------------------------------------------------------------------- instrumented gansuite run
class Instrument(L.Callback):
    """Wraps the pieces of a gansuite step in wall-clock timers (about a microsecond per call) for the run's
    timed window: ``gansuite`` inside ``training_step``, Lightning's per-batch hook dispatch and callbacks
    and its logging around it."""

    def __init__(self, *, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.acc: dict[str, list[float]] = {}
        self.window: dict[str, list[float]] = {}
        self._start: dict[str, list[float]] = {}

    def timed(self, fn, key: str):
        acc = self.acc.setdefault(key, [0.0, 0])

        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[0] += time.perf_counter() - t
                acc[1] += 1
        return wrapper

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from lightning.pytorch.trainer import call

        import gansuite.models.schedule as base

        m = pl_module
        m.training_step = self.timed(m.training_step, "training_step (total)")
        m._check_and_log = self.timed(m._check_and_log, "  NaN check + logging (logged batches)")
        m.toggle_optimizer = self.timed(m.toggle_optimizer, "  toggle_optimizer")
        m.untoggle_optimizer = self.timed(m.untoggle_optimizer, "  untoggle_optimizer")
        m.manual_backward = self.timed(m.manual_backward, "  manual_backward (incl. backward compute)")
        base.ema_update = self.timed(base.ema_update, "  ema_update")
        m.generate = self.timed(m.generate, "  generate (G forward)")
        m.discriminator_loss = self.timed(m.discriminator_loss, "  discriminator_loss (2 D forwards + loss)")
        m.generator_loss = self.timed(m.generator_loss, "  generator_loss (D forward + loss)")
        finite = self.acc.setdefault("  NaN guard (loss added to its sum)", [0.0, 0])
        step = self.acc.setdefault("  optimizer.step (incl. Adam compute)", [0.0, 0])

        def _update(optimizer, loss, key):
            t = time.perf_counter()
            total = m._loss_sums.get(key)
            if total is None:
                total = m._loss_sums[key] = torch.zeros((), device=loss.device)
            total.add_(loss.detach())
            finite[0] += time.perf_counter() - t
            finite[1] += 1
            optimizer.zero_grad(set_to_none=True)
            m.manual_backward(loss)
            t = time.perf_counter()
            optimizer.step()
            step[0] += time.perf_counter() - t
            step[1] += 1
        m._update = _update
        original = call._call_callback_hooks

        def hooks(trainer, hook_name, *args, **kwargs):
            return self.timed(original, f"callback dispatch: {hook_name} (all callbacks)")(
                trainer, hook_name, *args, **kwargs)
        call._call_callback_hooks = hooks
        for cb in trainer.callbacks:
            if cb is self:
                continue
            for hook in ("on_train_batch_start", "on_train_batch_end"):
                if getattr(type(cb), hook) is not getattr(L.Callback, hook):
                    setattr(cb, hook, self.timed(getattr(cb, hook), f"  {type(cb).__name__}.{hook}"))
        lc = trainer._logger_connector
        for name in ("on_batch_start", "on_batch_end", "update_train_step_metrics"):
            setattr(lc, name, self.timed(getattr(lc, name), f"logger connector: {name}"))
        trainer.strategy.batch_to_device = self.timed(trainer.strategy.batch_to_device, "batch_to_device")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup - 1:
            self._start = {k: list(v) for k, v in self.acc.items()}
        elif batch_idx == self.warmup + self.steps - 1:
            self.window = {k: [v[0] - self._start.get(k, [0, 0])[0], v[1] - self._start.get(k, [0, 0])[1]]
                           for k, v in self.acc.items()}


def instrument_child(cfg: Any, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Runs in the forked process: an instrumented gansuite run, then the cost of calling the losses through
    the module's objective against calling the functions themselves."""
    import timeit

    from hydra.utils import get_method

    from gansuite.training.run import train

    torch.set_num_threads(args.threads)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.callbacks.instrument = {"_target_": f"{__name__}.Instrument", "warmup": args.warmup,
                                    "steps": args.steps}
    result = train(cfg)
    cbs = result["trainer"].callbacks
    inst = next(cb for cb in cbs if isinstance(cb, Instrument))
    bench = next(cb for cb in cbs if isinstance(cb, T.BenchHooks))
    m = result["module"]
    logits = torch.randn(args.batch_size)
    d_raw = get_method(cfg.loss.objective.d_loss._target_)
    g_raw = get_method(cfg.loss.objective.g_loss._target_)
    n = 300
    wrapped = timeit.timeit(lambda: (m.objective.d_loss(logits, logits), m.objective.g_loss(logits)), number=n)
    raw = timeit.timeit(lambda: (d_raw(logits, logits), g_raw(logits)), number=n)
    return {"window": inst.window, "seconds": bench.seconds, "cpu_seconds": bench.cpu_seconds,
            "threads": bench.threads, "objective_overhead_ms": 1000 * (wrapped - raw) / n,
            "objective_type": type(m.objective).__name__, "loss_type": type(m.objective.d_loss).__name__}


def instrument(ours: argparse.Namespace, args: argparse.Namespace, cfg: Any) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="gansuite-instrument-"))
    runs, plains = [], []
    try:
        for rep in range(ours.repeats):
            plains.append(T.run_forked(measure_ablation, "plain", cfg, args, workdir, f"plain-{rep}", label="plain"))
            runs.append(T.run_forked(instrument_child, cfg, args, workdir / f"run-{rep}", label="instrumented"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    steps = args.steps
    step_ms = statistics.median(1000 * r["seconds"] / steps for r in runs)
    plain_ms = statistics.median(1000 * r["seconds"] / steps for r in plains)
    print(f"wall ms per step (median of {ours.repeats}): gansuite instrumented {step_ms:.2f}, plain {plain_ms:.2f}, "
          f"difference {step_ms - plain_ms:.2f}")
    bar = statistics.median(r["threads"].get("_RefreshThread", 0.0) * 1000 / steps for r in runs)
    print(f"Rich refresh thread: {bar:.2f} CPU ms per step (runs beside the main thread, holding the GIL "
          f"while it renders)")
    print(f"module.objective is a {runs[0]['objective_type']} holding {runs[0]['loss_type']}s: calling d_loss and "
          f"g_loss through it costs {statistics.median(r['objective_overhead_ms'] for r in runs):.3f} ms per step "
          f"more than calling the functions\n")
    keys = list(runs[0]["window"])
    print(f"{'component (wall ms per step, median)':62s} {'ms/step':>8s} {'calls/step':>10s}")
    for k in keys:
        ms = statistics.median(1000 * r["window"][k][0] / steps for r in runs)
        calls = runs[0]["window"][k][1] / steps
        print(f"{k:62s} {ms:8.3f} {calls:10.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", nargs="+", choices=(*ABLATIONS, "all"), default=None,
                   help="ablations to run (default: every one, then all)")
    p.add_argument("--instrument", action="store_true",
                   help="instead of ablations: time the pieces of an instrumented gansuite step")
    ours = p.parse_args()
    args = T.parse_args(["--resolution", "28", "--batch-size", str(ours.batch_size), "--steps", str(ours.steps),
                         "--warmup", str(ours.warmup), "--width", str(ours.width), "--threads", str(ours.threads)])
    args.profile = False
    cfg = T.compose_config(args, 28)
    if ours.instrument:
        instrument(ours, args, cfg)
        return
    variants = ["plain", "gansuite", *(ours.only or [*ABLATIONS, "all"])]
    print(f"DCGAN width {ours.width}, batch {ours.batch_size}, 28 px, {ours.threads} thread(s), {ours.steps} timed "
          f"steps after {ours.warmup}, {ours.repeats} repeats; CPU ms per step (process CPU time, all threads)\n",
          flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="gansuite-overhead-"))
    ms: dict[str, list[float]] = {v: [] for v in variants}
    bar_ms: dict[str, list[float]] = {v: [] for v in variants}
    started = time.perf_counter()
    try:
        for rep in range(ours.repeats):
            order = variants if rep % 2 == 0 else variants[::-1]
            for v in order:
                r = T.run_forked(measure_ablation, v, cfg, args, workdir, f"{v}-{rep}",
                                 no_tty=v in ("pipe", "all"), label=v)
                ms[v].append(r["cpu_ms_per_step"])
                bar_ms[v].append(r["thread_cpu_ms_per_step"].get("_RefreshThread", 0.0))
                print(f"  repeat {rep + 1}/{ours.repeats} {v:10s} {r['cpu_ms_per_step']:6.2f} CPU ms/step  "
                      f"({1000 * r['seconds'] / ours.steps:6.2f} wall ms/step)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    med = {v: statistics.median(x) for v, x in ms.items()}
    base, plain = med["gansuite"], med["plain"]
    print(f"\ngansuite {base:.2f} CPU ms/step, plain {plain:.2f}: overhead {base - plain:.2f} ms/step\n")
    print(f"{'variant':10s}  {'CPU ms/step':>11s}  {'saves ms/step':>13s}  {'share of overhead':>17s}  "
          f"{'Rich thread ms/step':>19s}  runs")
    for v in variants:
        saves = base - med[v] if v not in ("plain", "gansuite") else float("nan")
        share = f"{100 * saves / (base - plain):.0f} %" if v not in ("plain", "gansuite") else ""
        print(f"{v:10s}  {med[v]:11.2f}  {'' if v in ('plain', 'gansuite') else f'{saves:13.2f}':>13s}  "
              f"{share:>17s}  {statistics.median(bar_ms[v]):19.2f}  {' '.join(f'{x:.2f}' for x in ms[v])}")
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
