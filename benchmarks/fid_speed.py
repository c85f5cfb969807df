"""FID of generated images against cached reference statistics: gansuite's evaluation path against torch-fidelity.

    python benchmarks/fid_speed.py                     # CPU, 64 images, random Inception weights (~3 min on 2 cores)
    python benchmarks/fid_speed.py --device cuda --n 50000 --batch 250 --weights weights-inception-2015-12-05-6726825d.pth

Both tools see the same uint8 images (3x32x32, made from a seed: the "generated" and the "reference" set
differ in distribution) through the same Inception graph (torch-fidelity's TF-compatible port) with the same
weights: ``--weights``, or, offline, a file of random weights in the format torch-fidelity loads (the numbers
are then meaningless as FIDs but identical between the tools, which is what is checked).

Timed, each from a warm process (CUDA context made, weights file read once before):

- **gansuite**: ``Evaluator.evaluate`` (what the training callback and ``gansuite-eval`` run) on a generator-like
  module that serves the images from a tensor on the device, FID only, against reference statistics computed
  and cached before timing (``load_or_compute_reference``), as a training run has them. Its Fréchet step
  (``frechet_distance_to``: a symmetric eigensolver in float64 on the device) is shown apart, and so is, once,
  torch-fidelity's own Fréchet step (numpy's general eigenvalues of Σ1Σ2 on the CPU) on the same statistics.
- **torch-fidelity**: ``calculate_metrics(fid=True)`` on two Datasets of uint8 CHW tensors, as a user calls it:
  both sets extracted (``cache=False``; what the 26.9 s of issue 15 measured), and, for the like-for-like
  comparison, with the reference's statistics in torch-fidelity's own cache (``input2_cache_name``), filled
  before timing.

On a GPU the script also times ``eval.precision=tf32`` (TF32 convolutions, with a reference extracted the same
way) and prints its FID difference from the exact protocol. torch-fidelity on a GPU runs with torch's default
``torch.backends.cudnn.allow_tf32=True``, so its FID is expected to match gansuite's tf32 one, not the exact one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

from gansuite.metrics import fidelity
from gansuite.metrics import inception as metrics_inception
from gansuite.metrics.evaluator import Evaluator


def write_random_inception_weights(path: Path) -> None:
    """Randomly initialised weights of the architecture torch-fidelity expects (no download).

    He-initialised convolutions: with torch's default init the activations shrink layer after layer and the
    pool features come out near 1e-8, which would make every FID ~0 and hide precision differences.
    """
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    with mock.patch.object(tfi, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None):
        torch.manual_seed(0)
        net = tfi.FeatureExtractorInceptionV3(metrics_inception.INCEPTION, ["2048"])
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)


def make_images(n: int, resolution: int, seed: int, *, smooth: int) -> torch.Tensor:
    """n uint8 RGB images: uniform noise at ``smooth`` px, upsampled (so the two sets differ in their features)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, smooth, smooth, generator=g)
    x = F.interpolate(low, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x.mul(255).round().clamp(0, 255).to(torch.uint8)


class Images(Dataset):
    """What torch-fidelity takes: a Dataset of uint8 CHW tensors."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


class ImageBank:
    """A generator-like module for the Evaluator: batch after batch of stored images, in order, on the device.

    ``sample`` returns floats in [-1, 1] that quantize back to exactly the stored bytes, so gansuite's
    extractor sees the images torch-fidelity sees.
    """

    def __init__(self, images: torch.Tensor, device: str) -> None:
        self.images = images.to(device)
        self.cursor = 0

    def make_inputs(self, n: int, generator: torch.Generator) -> torch.Tensor:
        index = torch.arange(self.cursor, self.cursor + n, device=self.images.device) % len(self.images)
        self.cursor = (self.cursor + n) % len(self.images)
        return index

    def sample(self, index: torch.Tensor, ema: bool = True) -> torch.Tensor:
        return self.images[index].float().div(127.5).sub(1)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def gansuite_evaluator(weights: Path, real: torch.Tensor, args, cache: Path, precision: str) -> Evaluator:
    """The Evaluator a run builds: extractor on the device, reference statistics from the cache."""
    ext = metrics_inception.InceptionExtractor(weights, precision=precision).to(args.device)
    key = {"dataset": f"fid_speed-{hashlib.sha256(real.numpy().tobytes()).hexdigest()[:16]}", "split": "train",
           "num_samples": len(real), "extractor": ext.name, "extractor_sha256": ext.weights_sha256,
           "resize": ext.resize, "precision": precision}

    def compute():
        floats = real.float().div(127.5).sub(1)
        return metrics_inception.extract(ext, floats.split(args.batch), device=args.device), None

    fidelity.load_or_compute_reference(key, compute, cache, log=lambda m: None)  # computed once, untimed
    reference = fidelity.load_or_compute_reference(key, compute, cache, log=print)  # read back, as a run does
    return Evaluator(extractor=ext, reference=reference, metrics=["fid"], num_samples=args.n,
                     batch_size=args.batch)


def time_gansuite(evaluator: Evaluator, bank: ImageBank, device: str, stats: dict) -> tuple[float, float, float]:
    """(seconds, of which the Fréchet step, FID); ``stats["mu"]``, ``stats["sigma"]``: the generated statistics."""
    frechet = []
    original = fidelity.frechet_distance_to

    def timed_frechet(reference, mu, sigma):
        sync(device)
        t = time.perf_counter()
        out = original(reference, mu, sigma)
        frechet.append(time.perf_counter() - t)
        stats.update(mu=mu, sigma=sigma)
        return out

    bank.cursor = 0
    with mock.patch.object(fidelity, "frechet_distance_to", timed_frechet):
        sync(device)
        start = time.perf_counter()
        result = evaluator.evaluate(bank)
        sync(device)
        seconds = time.perf_counter() - start
    (fid,) = result.values.values()
    return seconds, frechet[0], fid


def time_torch_fidelity(gen: Dataset, real: Dataset, args, weights: Path, **cache) -> tuple[float, float]:
    """(seconds, FID) of one calculate_metrics call."""
    import torch_fidelity

    options = dict(fid=True, cuda=args.device.startswith("cuda"), batch_size=args.batch, verbose=False,
                   feature_extractor_weights_path=str(weights))
    sync(args.device)
    start = time.perf_counter()
    out = torch_fidelity.calculate_metrics(input1=gen, input2=real, **options, **(cache or {"cache": False}))
    sync(args.device)
    return time.perf_counter() - start, out["frechet_inception_distance"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="generated images, and reference images (default 64)")
    parser.add_argument("--batch", type=int, default=32, help="batch size of both tools (default 32; 250 on a GPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--weights", type=Path, help="torch-fidelity's Inception weights (default: random ones)")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each variant; medians are printed")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, help="also write the medians here")
    args = parser.parse_args(argv)
    # torch-fidelity's DataLoader starts 4 workers whatever the core count; on 2 cores torch warns about it.
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device.startswith("cuda")

    with tempfile.TemporaryDirectory(prefix="fid_speed-") as tmp:
        tmp = Path(tmp)
        weights = args.weights
        if weights is None:
            weights = tmp / metrics_inception.INCEPTION_FILE
            write_random_inception_weights(weights)
        gen_u8 = make_images(args.n, args.resolution, seed=1, smooth=4)
        real_u8 = make_images(args.n, args.resolution, seed=2, smooth=8)
        gen_ds, real_ds = Images(gen_u8), Images(real_u8)
        bank = ImageBank(gen_u8, args.device)
        print(f"{args.n} generated vs {args.n} reference images, {args.resolution}px RGB, batch {args.batch}, "
              f"{args.device} ({torch.cuda.get_device_name() if gpu else f'{torch.get_num_threads()} threads'}), "
              f"weights: {args.weights or 'random'}")

        precisions = ["exact", "tf32"] if gpu else ["exact"]
        evaluators = {p: gansuite_evaluator(weights, real_u8, args, tmp / "gansuite-cache", p) for p in precisions}
        tf_cache = dict(cache=True, cache_root=str(tmp / "fidelity-cache"), input2_cache_name="fid_speed_reference")
        # Fills torch-fidelity's cache with the reference's statistics (and warms its code path): one batch of
        # generated images against the whole reference.
        time_torch_fidelity(Images(gen_u8[: max(2, args.batch)]), real_ds, args, weights, **tf_cache)

        runs: dict[str, list[tuple[float, ...]]] = {}
        exact_stats: dict[str, torch.Tensor] = {}
        for _ in range(args.repeats):
            for p, evaluator in evaluators.items():
                stats = exact_stats if p == "exact" else {}
                runs.setdefault(f"gansuite {p}", []).append(time_gansuite(evaluator, bank, args.device, stats))
            runs.setdefault("torch-fidelity", []).append(time_torch_fidelity(gen_ds, real_ds, args, weights))
            runs.setdefault("torch-fidelity cached ref", []).append(
                time_torch_fidelity(gen_ds, real_ds, args, weights, **tf_cache))

    # torch-fidelity's Fréchet step (numpy eigenvalues on the CPU) on gansuite's statistics: its share of the
    # torch-fidelity times above, and a check of gansuite's FID against torch-fidelity's formula.
    ref = evaluators["exact"].reference
    mu, sigma = exact_stats["mu"].cpu().numpy(), exact_stats["sigma"].cpu().numpy()
    start = time.perf_counter()
    tf_formula = fidelity.frechet_distance(mu, sigma, ref.mu, ref.sigma)
    tf_frechet_s = time.perf_counter() - start

    med = {name: [statistics.median(column) for column in zip(*values, strict=True)] for name, values in runs.items()}
    tf_full, tf_cached = med["torch-fidelity"][0], med["torch-fidelity cached ref"][0]
    print(f"\n{'variant':<27} {'seconds':>8} {'img/s':>8} {'Fréchet s':>9} {'FID':>14}  "
          f"{'/ torch-fidelity':>16} {'/ tf cached ref':>15}")
    for name, m in med.items():
        seconds, fid = m[0], m[-1]
        frechet = f"{m[1]:9.2f}" if name.startswith("gansuite") else f"{'':9}"
        print(f"{name:<27} {seconds:8.2f} {args.n / seconds:8.1f} {frechet} {fid:14.7g}  "
              f"{seconds / tf_full:16.3f} {seconds / tf_cached:15.3f}")
    exact = med["gansuite exact"][-1]
    print(f"\ntorch-fidelity's Fréchet step (numpy eigvals on the CPU) on gansuite's statistics: {tf_frechet_s:.2f} s; "
          f"its FID - gansuite's: {tf_formula - exact:+.3e} (relative {abs(tf_formula - exact) / abs(exact):.1e})")
    print(f"FID, gansuite exact - torch-fidelity: {exact - med['torch-fidelity'][-1]:+.3e} "
          f"(relative {abs(exact - med['torch-fidelity'][-1]) / abs(exact):.1e})")
    if gpu:
        fast = med["gansuite tf32"][-1]
        print(f"FID, gansuite tf32 - exact: {fast - exact:+.3e} (relative {abs(fast - exact) / abs(exact):.1e}); "
              f"tf32 - torch-fidelity: {fast - med['torch-fidelity'][-1]:+.3e}")
    else:
        print("FID, gansuite tf32 - exact: not measured (TF32 exists only on CUDA GPUs)")
    print(f"target: gansuite exact <= 0.5 x torch-fidelity: ratio {med['gansuite exact'][0] / tf_full:.3f} "
          f"(against torch-fidelity with its reference cached: {med['gansuite exact'][0] / tf_cached:.3f})")
    if args.json:
        record = {"n": args.n, "device": args.device, "gansuite_s": med["gansuite exact"][0],
                  "torch_fidelity_s": tf_full, "torch_fidelity_cached_s": tf_cached, "fid_exact": exact,
                  "fid_torch_fidelity": med["torch-fidelity"][-1]}
        if gpu:
            record.update(gansuite_tf32_s=med["gansuite tf32"][0], fid_tf32=med["gansuite tf32"][-1])
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
