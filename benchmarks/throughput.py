"""Training throughput of DCGAN through gansuite (Lightning) against a plain PyTorch loop doing the same math.

    python benchmarks/throughput.py                      # CPU: 28 px x 1 and 32 px x 3, batch 64, 3 repeats
    python benchmarks/throughput.py --device cuda --precision bf16-mixed --channels-last --compile --steps 200

What is timed: ``--steps`` full training steps after ``--warmup`` steps, each one D update and one G update
(n_critic = 1) on one batch of ``--batch-size`` real images; img/s = batch size x steps / seconds.

- **gansuite**: ``gansuite.training.run.train(cfg)`` itself, on the composed config ``model=dcgan loss=nonsaturating``
  with the default ``trainer`` (``cpu``, or ``gpu`` for ``--device cuda``) and ``callbacks=default``: the
  same Trainer, GANProgressBar, sample-grid / scatter / translation callbacks, StepCheckpoint and RunInfo a
  default ``gansuite-train`` run has, so every per-batch hook a default run pays is inside the timed window.
  Two things differ from a default run, on purpose: ``logger=csv`` instead of W&B (offline W&B runs a service
  process that competes for the same cores; its cost is W&B's, not gansuite's, and ``--logger wandb`` measures
  it) and ``eval=none`` (evaluation runs every 1,000 steps and trains a domain classifier at start-up: periodic
  work, not per-step overhead). The periodic sample grid and checkpoint (every 500 / 2,000 steps) do not fall
  in a window shorter than that; their cost, about a second per 500 steps, is amortised, not per step.
- **plain**: the same networks built from the same config nodes and seed, the loss functions the config
  names (called directly: a gansuite module calls them through Hydra's per-call policy wrapper, which is
  counted as gansuite's overhead), the same Adam partials, the same ramped EMA of G
  (``min(0.999, (1 + step) / (10 + step))``, parameters lerped, buffers copied), only the updated network's
  parameters requiring gradients (as Lightning's ``toggle_optimizer`` does), the same batch iterator, the same
  autocast around the whole step for ``bf16-mixed``. No logging, no NaN check, no callbacks.

``--channels-last`` and ``--compile`` reach gansuite as ``trainer.channels_last=true`` and ``trainer.compile=true``
(``gansuite.training.run._speed_options``: G and D, not the EMA copy; ``dynamic=False``); the plain loop does the same to
its G and D. With ``--compile`` each measurement line says how many frames Dynamo compiled during the warm-up
and inside the timed window, and how long those took: a compile inside the window is timed as training.

Data: a synthetic data set (``--dataset-size`` images, uniform in [-1, 1]) held on the device; both variants
draw batches with the same seeded ``torch.randint`` on the device (no DataLoader). Both variants start from
the same seed, so on the CPU in float32 their final generator weights should agree; the run prints the largest
difference as a check that the two really do the same math.

Each measurement runs in its own process, forked from this one after the imports (so it starts in
milliseconds and with a fresh heap), and the two variants alternate (plain first on even repeats, gansuite
first on odd ones) so that load from other jobs on a shared machine hits both alike. Medians of the repeats
are reported. Peak memory: on the CPU the peak resident set size (``VmHWM``) of the measuring process,
reset when it starts (``/proc/self/clear_refs``), and its rise over the resident size at start (imports
and the data set excluded), because ``tracemalloc`` does not see torch's allocator and the process's own
high-water mark does; on CUDA ``torch.cuda.max_memory_allocated`` and its rise over ``memory_allocated``
before the networks are built. Each gansuite run's progress bar is drawn on a pseudo-terminal, as in an
interactive run (Rich draws nothing to a pipe; ``--no-tty`` measures that case).

Threads: torch's default (one per core), as ``gansuite-train`` uses. On a machine other jobs are using, more
torch threads than free cores make every step wait on descheduled OpenMP workers and times vary several-fold
from run to run; ``--threads 1`` then gives numbers that can be compared. Each measurement line shows the CPU
time per step of each thread (``main``, ``native`` = OpenMP workers, ``_RefreshThread`` = Rich's progress bar).
``benchmarks/overhead.py`` takes the per-step overhead apart.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import fcntl
import json
import os
import pstats
import pty
import shutil
import statistics
import struct
import sys
import tempfile
import termios
import threading
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import get_method, instantiate  # noqa: E402
from omegaconf import OmegaConf, open_dict  # noqa: E402

import gansuite.training.run  # noqa: E402,F401  (imported before forking, so measuring processes start at once)

CONF_DIR = REPO / "conf"
SHAPES = {28: (1, 28, 28), 32: (3, 32, 32), 64: (3, 64, 64)}  # MNIST-like, CIFAR-like, CelebA-like
VARIANTS = ("plain", "gansuite")
_DATA: dict[tuple, torch.Tensor] = {}  # the data set of the measuring process, made before its baseline


# ----------------------------------------------------------------------------------------------- shared parts
class _Batches:
    """An endless stream of ``(x, y)`` batches drawn with a seeded ``randint`` on the data's device."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, channels_last: bool):
        self.x, self.y, self.batch_size, self.seed, self.channels_last = x, y, batch_size, seed, channels_last

    def __iter__(self):
        gen = torch.Generator(device=self.x.device).manual_seed(self.seed)
        while True:
            idx = torch.randint(len(self.x), (self.batch_size,), device=self.x.device, generator=gen)
            x = self.x[idx]
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.y[idx]


def _dataset(shape: tuple[int, ...], size: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    key = (tuple(shape), size, seed, device)
    if key not in _DATA:
        gen = torch.Generator().manual_seed(seed + 1)
        _DATA[key] = (torch.rand(size, *shape, generator=gen) * 2 - 1).to(device)
    x = _DATA[key]
    return x, torch.zeros(len(x), dtype=torch.long, device=x.device)


class DeviceData(L.LightningDataModule):
    """gansuite's data-module interface over a tensor data set already on the device (no DataLoader)."""

    def __init__(self, *, shape: list[int], size: int, batch_size: int, seed: int, device: str,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.shape, self.num_classes, self.batch_size = tuple(shape), None, batch_size
        self.name = f"bench-{'x'.join(map(str, shape))}"
        self.x, self.y = _dataset(self.shape, size, seed, device)
        self.seed, self.channels_last = seed, channels_last

    def train_dataloader(self) -> _Batches:
        return _Batches(self.x, self.y, self.batch_size, self.seed, self.channels_last)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[str, float]:
    """CPU seconds used so far by each thread of this process, grouped: ``main``, each Python thread by its
    class name (Rich's ``_RefreshThread``, ...), and ``native`` (torch's OpenMP workers and other threads
    Python does not know about). Read from /proc, so it counts threads that do not hold the GIL too."""
    names = {t.native_id: type(t).__name__ for t in threading.enumerate()}
    names[os.getpid()] = "main"  # the main thread's id is the process id (also in a forked child)
    cpu: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(tid), "native")
        cpu[name] = cpu.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return cpu


def _cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted(set(before) | set(after))}


def compile_stats() -> dict[str, float]:
    """What torch.compile did so far in this process: ``frames`` Dynamo compiled (each network's first compile
    and every recompile), ``graph_breaks``, and ``seconds`` spent compiling (Dynamo + the lazily compiled
    backward graphs)."""
    from torch._dynamo.utils import compilation_time_metrics, counters

    timed = ("_compile.compile_inner", "compile_fx.<locals>.bw_compiler")
    return {"frames": counters["frames"]["total"], "graph_breaks": sum(counters["graph_break"].values()),
            "seconds": sum(sum(compilation_time_metrics.get(key, ())) for key in timed)}


class BenchHooks(L.Callback):
    """Times batches ``warmup .. warmup + steps``, and counts the compiles inside that window.

    ``--channels-last`` and ``--compile`` reach the gansuite run as ``trainer.channels_last`` and
    ``trainer.compile``, the options a user sets (``gansuite.training.run._speed_options``).
    """

    def __init__(self, *, warmup: int, steps: int, device: str, profile: str | None = None) -> None:
        self.warmup, self.steps, self.device, self.profile = warmup, steps, device, profile
        self.t0: float | None = None
        self.seconds: float | None = None
        self.cpu_seconds: float | None = None
        self.threads: dict[str, float] = {}
        self.compiles: dict[str, dict[str, float]] = {}
        self._profiler: cProfile.Profile | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup - 1:
            _sync(self.device)
            self.compiles["warmup"] = compile_stats()
            if self.profile:
                self._profiler = cProfile.Profile()
                self._profiler.enable()
            self.t0, self.c0, self.threads0 = time.perf_counter(), time.process_time(), thread_cpu()
        elif batch_idx == self.warmup + self.steps - 1:
            _sync(self.device)
            self.seconds = time.perf_counter() - self.t0
            self.cpu_seconds = time.process_time() - self.c0
            self.threads = _cpu_delta(self.threads0, thread_cpu())
            self.compiles["end"] = compile_stats()
            if self._profiler is not None:
                self._profiler.disable()
                self._profiler.dump_stats(self.profile)


def compose_config(args: argparse.Namespace, resolution: int) -> Any:
    """The composed gansuite config of one measurement (the real conf/ tree, a few overrides)."""
    cuda = args.device == "cuda"
    overrides = [
        "model=dcgan", "loss=nonsaturating", "callbacks=default", "eval=none",
        f"trainer={'gpu' if cuda else 'cpu'}",
        f"trainer.max_steps={args.warmup + args.steps}",
        f"trainer.precision={args.precision}",
        f"data.batch_size={args.batch_size}",
        f"logger={args.logger}",
        f"seed={args.seed}",
        f"trainer.channels_last={str(args.channels_last).lower()}",
        f"trainer.compile={str(args.compile).lower()}",
    ]
    if args.width is not None:
        overrides += [f"model.generator.width={args.width}", f"model.discriminator.width={args.width}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    plain_losses = all(set(cfg.loss.objective[k]) == {"_target_", "_partial_"} for k in ("d_loss", "g_loss"))
    if (cfg.loss.n_critic != 1 or cfg.loss.regularizer.fn is not None or cfg.model.module.grad_clip is not None
            or cfg.loss.objective.weight_clip is not None or not plain_losses):
        raise SystemExit("throughput.py times n_critic=1 without regularizer or gradient clipping; "
                         "the config asks for more.")
    with open_dict(cfg):
        cfg.data = OmegaConf.create({
            "_target_": f"{__name__}.DeviceData", "shape": list(SHAPES[resolution]), "size": args.dataset_size,
            "batch_size": args.batch_size, "seed": args.seed, "device": args.device,
            "channels_last": args.channels_last,
        })
        cfg.callbacks.bench = {
            "_target_": f"{__name__}.BenchHooks", "warmup": args.warmup, "steps": args.steps,
            "device": args.device, "profile": None,
        }
    return cfg


# ------------------------------------------------------------------------------------------------ variants
def run_gansuite(cfg: Any, out: Path, profile: str | None) -> dict[str, Any]:
    from gansuite.training.run import train

    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.callbacks.bench.profile = profile
    result = train(cfg)
    hooks = next(cb for cb in result["trainer"].callbacks if isinstance(cb, BenchHooks))
    return {"seconds": hooks.seconds, "cpu_seconds": hooks.cpu_seconds, "threads": hooks.threads,
            "compiles": hooks.compiles, "generator": result["module"].generator}


def run_plain(cfg: Any, args: argparse.Namespace, profile: str | None) -> dict[str, Any]:
    """The same training as gansuite's, written as a plain loop."""
    device, steps, warmup = args.device, args.steps, args.warmup
    torch.manual_seed(cfg.seed)  # gansuite seeds with L.seed_everything(seed), then builds G, then D
    shape = tuple(cfg.data.shape)
    G = instantiate(cfg.model.generator, shape=shape)
    D = instantiate(cfg.model.discriminator, shape=shape)
    decay_max = cfg.model.module.ema_decay
    G_ema = copy.deepcopy(G).requires_grad_(False).eval() if decay_max is not None else None
    for net in (G, D, G_ema):
        if net is not None:
            net.to(device)
    # As gansuite.training.run._speed_options: channels_last and compile apply to the trained networks, not the EMA.
    for net in (G, D):
        if args.channels_last:
            net.to(memory_format=torch.channels_last)
        if args.compile:
            net.compile(dynamic=False)
    opt_g = instantiate(cfg.model.g_optimizer)(G.parameters())
    opt_d = instantiate(cfg.model.d_optimizer)(D.parameters())
    # The loss functions the config names, called directly (gansuite calls them through Hydra's wrapper).
    d_loss_fn = get_method(cfg.loss.objective.d_loss._target_)
    g_loss_fn = get_method(cfg.loss.objective.g_loss._target_)
    latent_dim = cfg.model.latent_dim
    if G_ema is not None:
        ema_params, params = list(G_ema.parameters()), list(G.parameters())
        ema_buffers, buffers = list(G_ema.buffers()), list(G.buffers())
    # As Lightning's MixedPrecision: no cast cache, since the region spans optimizer steps (a cached bf16 copy
    # of D's weights would outlive D's update and be used again in G's step).
    autocast = (torch.autocast(device, dtype=torch.bfloat16, cache_enabled=False) if args.precision == "bf16-mixed"
                else nullcontext())
    x, y = _dataset(shape, cfg.data.size, cfg.data.seed, device)
    batches = iter(_Batches(x, y, args.batch_size, cfg.data.seed, args.channels_last))
    G.train()
    D.train()

    profiler, t0 = None, None
    for i in range(warmup + steps):
        real, _ = next(batches)
        with autocast:  # Lightning's precision plugin wraps the whole training_step the same way
            fake = G(torch.randn(real.shape[0], latent_dim, device=real.device, dtype=real.dtype))
            # D update (fake is detached, so G gets no gradient)
            d_loss = d_loss_fn(D(real), D(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            # G update through a frozen D
            D.requires_grad_(False)
            g_loss = g_loss_fn(D(fake))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            D.requires_grad_(True)
            if G_ema is not None:
                with torch.no_grad():
                    step = i + 1  # generator updates so far
                    decay = min(decay_max, (1 + step) / (10 + step))
                    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
                    torch._foreach_copy_(ema_buffers, buffers)
        if i == warmup - 1:
            _sync(device)
            if profile:
                profiler = cProfile.Profile()
                profiler.enable()
            t0, c0, threads0 = time.perf_counter(), time.process_time(), thread_cpu()
            compiles = {"warmup": compile_stats()}
    _sync(device)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    threads = _cpu_delta(threads0, thread_cpu())
    compiles["end"] = compile_stats()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "threads": threads, "compiles": compiles, "generator": G}


# ---------------------------------------------------------------------------------------- one measurement
def _status(field: str) -> int:
    """A ``VmRSS`` / ``VmHWM`` line of /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(variant: str, resolution: int, cfg: Any, args: argparse.Namespace, workdir: Path,
            tag: str) -> dict[str, Any]:
    """Runs in the forked process: one variant, one resolution; returns img/s, memory and a weights file."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    x, _ = _dataset(tuple(cfg.data.shape), cfg.data.size, cfg.data.seed, args.device)
    del x
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        try:  # reset the high-water mark to the current resident size (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        base = _status("VmRSS")
    profile = str(workdir / f"{tag}.prof") if args.profile else None
    if variant == "plain":
        done = run_plain(cfg, args, profile)
    else:
        out = workdir / f"{tag}-run"
        done = run_gansuite(cfg, out, profile)
        shutil.rmtree(out, ignore_errors=True)
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _status("VmHWM")
    weights = workdir / f"{tag}.pt"
    flat = torch.cat([p.detach().float().flatten().cpu() for p in done["generator"].parameters()])
    torch.save(flat, weights)
    return {"variant": variant, "resolution": resolution, "seconds": done["seconds"],
            "img_per_s": args.batch_size * args.steps / done["seconds"],
            "img_per_cpu_s": args.batch_size * args.steps / done["cpu_seconds"],
            "cpu_ms_per_step": 1000 * done["cpu_seconds"] / args.steps,
            "thread_cpu_ms_per_step": {k: 1000 * v / args.steps for k, v in done["threads"].items()},
            "peak_mib": peak / 2**20, "rise_mib": (peak - base) / 2**20, "weights": str(weights),
            "profile": profile, "compiles": _compile_summary(done["compiles"])}


def _compile_summary(compiles: dict[str, dict[str, float]]) -> dict[str, float]:
    """Frames compiled before the timed window (warm-up) and inside it, with the seconds spent compiling there:
    a compile inside the window is timed as training and makes a compiled run look slow."""
    before, end = compiles["warmup"], compiles["end"]
    return {"warmup_frames": before["frames"], "window_frames": end["frames"] - before["frames"],
            "window_compile_s": end["seconds"] - before["seconds"], "graph_breaks": end["graph_breaks"]}


def _drain(fd: int, tail: list[bytes]) -> None:
    """Read a terminal or pipe until its other side closes, keeping the last few kB (a terminal's job)."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        tail.append(chunk)
        while sum(map(len, tail)) > 8192 and len(tail) > 1:
            tail.pop(0)
    os.close(fd)


def run_forked(fn, *fn_args: Any, no_tty: bool = False, label: str = "") -> dict[str, Any]:
    """Run ``fn(*fn_args)`` in a forked process (its output on a fresh pseudo-terminal unless ``no_tty``) and
    return the dict it returned."""
    read_end, write_end = os.pipe()
    # The child's stdout and stderr: a terminal 140 columns wide, or a pipe; this process reads and drops it.
    if no_tty:
        master, slave = os.pipe()
    else:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the measuring process
        code = 0
        try:
            os.close(read_end)
            os.close(master)
            os.dup2(slave, 1)
            os.dup2(slave, 2)
            os.close(slave)
            if not no_tty and os.environ.get("TERM", "dumb") in ("dumb", "unknown", ""):
                os.environ["TERM"] = "xterm-256color"
            try:
                result = fn(*fn_args)
            except BaseException:
                result = {"error": traceback.format_exc()}
                code = 1
            with os.fdopen(write_end, "w") as f:
                json.dump(result, f)
        finally:
            os._exit(code)
    os.close(write_end)
    tail: list[bytes] = []
    os.close(slave)
    drainer = threading.Thread(target=_drain, args=(master, tail), daemon=True)
    drainer.start()
    with os.fdopen(read_end) as f:
        text = f.read()
    os.waitpid(pid, 0)
    drainer.join(timeout=10)
    result = json.loads(text) if text else {"error": "the measuring process died without a result"}
    if "error" in result:
        screen = b"".join(tail).decode(errors="replace")[-3000:]
        raise SystemExit(f"{label} failed:\n{result['error']}\n--- its last output ---\n{screen}")
    return result


# ------------------------------------------------------------------------------------------------- report
def _fmt_runs(values: list[float]) -> str:
    return " ".join(f"{v:.1f}" for v in values)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[int, float]:
    mem = "peak MiB (+rise)" if args.device == "cpu" else "peak alloc MiB (+rise)"
    rows = [("res", "batch", "variant", "img/s median", "runs img/s", "ratio", "paired ratios", "CPU ms/step", mem)]
    ratios: dict[int, float] = {}
    for resolution in args.resolution:
        by = {v: [r for r in results if r["resolution"] == resolution and r["variant"] == v] for v in VARIANTS}
        med = {v: statistics.median(r["img_per_s"] for r in by[v]) for v in VARIANTS}
        ratios[resolution] = med["gansuite"] / med["plain"]
        paired = [g["img_per_s"] / p["img_per_s"] for p, g in zip(by["plain"], by["gansuite"], strict=True)]
        for v in VARIANTS:
            peak = statistics.median(r["peak_mib"] for r in by[v])
            rise = statistics.median(r["rise_mib"] for r in by[v])
            rows.append((
                f"{resolution}x{resolution}x{SHAPES[resolution][0]}", str(args.batch_size), v, f"{med[v]:.1f}",
                _fmt_runs([r["img_per_s"] for r in by[v]]),
                f"{ratios[resolution]:.3f}" if v == "gansuite" else "",
                " ".join(f"{p:.3f}" for p in paired) if v == "gansuite" else "",
                f"{statistics.median(r['cpu_ms_per_step'] for r in by[v]):.1f}",
                f"{peak:.0f} (+{rise:.0f})",
            ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    return ratios


def check_same_math(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Largest difference between the two variants' final generator weights, per resolution (first repeat)."""
    for resolution in args.resolution:
        first = {}
        for r in results:
            if r["resolution"] == resolution and r["variant"] not in first:
                first[r["variant"]] = torch.load(r["weights"])
        diff = (first["plain"] - first["gansuite"]).abs().max().item()
        scale = first["plain"].abs().max().item()
        print(f"same math, {resolution}px: max |W_G(gansuite) - W_G(plain)| after {args.warmup + args.steps} "
              f"steps = {diff:.3g} (weights up to {scale:.3g})")


def print_profiles(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    for resolution in args.resolution:
        for variant in VARIANTS:
            r = next(r for r in results if r["resolution"] == resolution and r["variant"] == variant)
            print(f"\n=== cProfile of the timed window: {variant}, {resolution}px, {args.steps} steps "
                  f"({r['seconds']:.2f} s; times below are per run, divide by {args.steps} for per step) ===")
            stats = pstats.Stats(r["profile"])
            stats.sort_stats(args.profile_sort).print_stats(args.profile_top)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    p.add_argument("--channels-last", action="store_true", help="channels_last networks and batches")
    p.add_argument("--compile", action="store_true", help="torch.compile G and D (nn.Module.compile)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before them (>= 1)")
    p.add_argument("--repeats", type=int, default=3, help="measurements per variant and resolution")
    p.add_argument("--resolution", type=int, nargs="+", choices=sorted(SHAPES), default=[28, 32])
    p.add_argument("--width", type=int, default=None,
                   help="G and D width (default: conf/model/dcgan.yaml's, 64)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--dataset-size", type=int, default=4096)
    p.add_argument("--logger", choices=["csv", "none", "wandb"], default="csv", help="gansuite's logger")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-tty", action="store_true", help="progress bar to a pipe instead of a pseudo-terminal")
    p.add_argument("--profile", action="store_true",
                   help="cProfile the timed window of the first repeat of each variant and print it")
    p.add_argument("--profile-sort", default="tottime")
    p.add_argument("--profile-top", type=int, default=30)
    p.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        p.error("--warmup, --steps and --repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # No torch compute and no CUDA in this process before the last fork: it only composes and collects.
    configs = {res: compose_config(args, res) for res in args.resolution}
    cfg = configs[args.resolution[0]]
    opt = cfg.model.g_optimizer
    threads = args.threads or torch.get_num_threads()
    print(f"DCGAN (width {cfg.model.generator.width}, latent {cfg.model.latent_dim}, EMA decay "
          f"{cfg.model.module.ema_decay}), {cfg.loss.name} loss, {opt._target_.rsplit('.', 1)[-1]} lr {opt.lr} "
          f"betas {tuple(opt.betas)}; device {args.device}, precision {args.precision}, channels_last "
          f"{args.channels_last}, compile {args.compile}; torch {torch.__version__} ({threads} threads), lightning "
          f"{L.__version__}; gansuite logger {args.logger}, progress bar on {'a pipe' if args.no_tty else 'a terminal'}")
    print(f"{args.repeats} repeats x {args.steps} timed steps after {args.warmup} warm-up steps, batch "
          f"{args.batch_size}; a step is one D + one G update; img/s = real images per second")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    print(f"load average {load:.1f} on {cores} cores before starting", end="")
    if args.device == "cpu" and load > 0.5 and threads + load > cores + 0.5:
        print(f": other jobs are running, and {threads} torch threads plus them oversubscribe the cores, so "
              f"times are at the mercy of the scheduler; --threads 1 gives steadier numbers", end="")
    print("\n", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="gansuite-throughput-"))
    results = []
    started = time.perf_counter()
    try:
        for res in args.resolution:
            for rep in range(args.repeats):
                order = VARIANTS if rep % 2 == 0 else VARIANTS[::-1]
                for variant in order:
                    profile = args.profile and rep == 0
                    run_args = argparse.Namespace(**{**vars(args), "profile": profile})
                    r = run_forked(measure, variant, res, configs[res], run_args, workdir, f"{variant}-{res}-{rep}",
                                   no_tty=args.no_tty, label=f"{variant} {res}px")
                    c = r["compiles"]
                    compiled = (f"; compiled frames: {c['warmup_frames']} in warm-up, {c['window_frames']} in the "
                                f"timed window ({c['window_compile_s']:.1f} s), {c['graph_breaks']} graph breaks"
                                if args.compile else "")
                    print(f"  {res}px repeat {rep + 1}/{args.repeats} {variant:8s} {r['img_per_s']:8.1f} img/s "
                          f"({r['seconds']:.2f} s for {args.steps} steps; CPU ms/step by thread: "
                          + ", ".join(f"{k} {v:.1f}" for k, v in r["thread_cpu_ms_per_step"].items()) + compiled + ")",
                          flush=True)
                    results.append(r)
        print()
        ratios = report(results, args)
        print()
        check_same_math(results, args)
        if args.profile:
            print_profiles(results, args)
        if args.json:
            args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                             "results": results, "ratios": ratios}, indent=2))
        print(f"\n(total {time.perf_counter() - started:.0f} s)")
        print("ratio gansuite/plain img/s: " + ", ".join(f"{res}px {ratios[res]:.3f}" for res in args.resolution))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
