"""Throughput of the two-view augmentation: view pairs per second per CPU core (and on a GPU).

Compares, on 80³ cubes with the lab's augmentation defaults (``--views lab``) or with the stronger 3-D
views of ``bundle/configs/demo.yaml`` (``--views strong``: one resample of a larger context cube, EM
section artefacts, noise, gamma, cutouts, mask morphology):

- ``monai``: the per-sample MONAI path (``RandTwoViewd`` on one cube at a time, as in DataLoader workers);
- ``batched``: ``BatchedTwoViewAugment`` on a CPU batch (the path that runs on the GPU in training);
- ``baseline``: the obvious NumPy/SciPy version (``np.rot90``, slice-by-slice ``scipy.ndimage.gaussian_filter``,
  ``scipy.ndimage.zoom``), drawing the same distributions;

all single-threaded, so the figures are per core. It also times cutting cubes out of a bbox (what the
CPU workers still do when the augmentation runs on the GPU). With ``--device cuda`` it adds the batched
path on the GPU and what a 3-D ResNet-18 consumes at 80³ with AMP (two views per pair, forward and
backward), with their ratio (target: at least 5x).

PyTorch's large CPU tensors are fresh ``mmap`` allocations whose page faults dominate a batch's cost
on some machines; the script enables transparent huge pages for them (``THP_MEM_ALLOC_ENABLE=1``, as
NumPy does for its own large arrays) unless ``--no-thp`` is given.

Usage::

    python benchmarks/pipeline.py                      # CPU figures (about 2 minutes)
    python benchmarks/pipeline.py --pairs 8 --batch-size 8
    python benchmarks/pipeline.py --device cuda        # adds GPU figures
    python benchmarks/pipeline.py --views strong       # the stronger views chosen for the defaults
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# one thread everywhere, set before NumPy/SciPy/PyTorch load their thread pools: figures are per core
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"
if "--no-thp" not in sys.argv:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402

from synclr_monai.transforms import AugmentConfig, BatchedTwoViewAugment, RandTwoViewd, cut_cube  # noqa: E402


def make_cubes(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` float32 cubes: z-scored raw noise, sparse binary masks (a slab of pre, a cleft disc)."""
    rng = np.random.RandomState(seed)
    cubes = np.zeros((n, 3, size, size, size), dtype=np.float32)
    cubes[:, 0] = rng.randn(n, size, size, size)
    c = size // 2
    cubes[:, 1, c - 10 : c + 10, c - 10 : c + 10, c - 14 : c - 2] = 1
    cubes[:, 2, c - 12 : c + 12, c - 12 : c + 12, c - 2 : c + 2] = 1
    return cubes


def baseline_view(cube: np.ndarray, rng: np.random.RandomState, cfg: AugmentConfig, second: bool) -> np.ndarray:
    """One view written the obvious way with NumPy/SciPy."""
    s = cube.shape[1]
    axes = ((1, 2), (1, 3), (2, 3))[rng.randint(3)]
    view = np.rot90(cube, rng.randint(4), axes=axes).copy()
    view[0] = view[0] * rng.normal(1.0, cfg.scale_std) + rng.normal(0.0, cfg.shift_std)
    if rng.random_sample() < cfg.blur_prob:
        sigma = rng.uniform(*cfg.blur_sigma)
        for z in range(s):
            view[0, z] = ndimage.gaussian_filter(view[0, z], sigma)
    if second:
        lo, hi = cfg.crop_sizes(s)
        edge = rng.randint(lo, hi + 1)
        a = rng.randint(0, s - edge + 1, size=3)
        crop = view[:, a[0] : a[0] + edge, a[1] : a[1] + edge, a[2] : a[2] + edge]
        if edge != s:
            zoom = s / edge
            out = np.empty_like(view)
            out[0] = ndimage.zoom(crop[0], zoom, order=1)[:s, :s, :s]
            for ch in (1, 2):
                out[ch] = ndimage.zoom(crop[ch], zoom, order=0)[:s, :s, :s]
            view = out
        if rng.random_sample() < cfg.mask_dropout_prob:
            view[2] = 0
    return view


def _rotation(rng: np.random.RandomState) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def baseline_strong_view(ctx: np.ndarray, rng: np.random.RandomState, cfg: AugmentConfig, s: int, second: bool) -> np.ndarray:
    """One view of the stronger 3-D augmentation written the obvious way with NumPy/SciPy (same distributions)."""
    c = ctx.shape[1]
    v = ctx.copy()
    if rng.random_sample() < cfg.section_prob:
        v[0] = v[0] * rng.normal(1.0, cfg.section_std, c)[:, None, None] + rng.normal(0.0, cfg.section_std, c)[:, None, None]
    black = rng.poisson(cfg.blackout_rate)
    if black:
        v[0, rng.choice(c, min(black, c), replace=False)] = v[0].min()
    if rng.random_sample() < cfg.misalign_prob:
        z0 = rng.randint(1, c)
        shift = rng.randint(-cfg.misalign_max, cfg.misalign_max + 1, size=2)
        v[:, z0:] = ndimage.shift(v[:, z0:], (0, 0, *shift), order=0, mode="nearest")
    rot = _rotation(rng) if rng.random_sample() < cfg.rotate3d_prob else np.eye(3)
    flips = np.where(rng.random_sample(3) < cfg.flip_prob, -1.0, 1.0)
    matrix = rot * flips[None, :] / rng.uniform(*cfg.zoom_range)
    shift = rng.uniform(-1, 1, 3) * cfg.translate_fraction * s
    offset = (c - 1) / 2.0 + shift - matrix @ np.full(3, (s - 1) / 2.0)
    out = np.empty((4, s, s, s), np.float32)
    out[0] = ndimage.affine_transform(v[0], matrix, offset, output_shape=(s, s, s), order=1)
    for ch in (1, 2, 3):
        out[ch] = ndimage.affine_transform(v[ch], matrix, offset, output_shape=(s, s, s), order=0)
    out[0] = out[0] * rng.normal(1.0, cfg.scale_std) + rng.normal(0.0, cfg.shift_std)
    if rng.random_sample() < cfg.gamma_prob:
        lo, span = out[0].min(), np.ptp(out[0])
        out[0] = ((out[0] - lo) / (span + 1e-7)) ** rng.uniform(*cfg.gamma_range) * span + lo
    if rng.random_sample() < cfg.blur_prob:
        out[0] = ndimage.gaussian_filter(out[0], rng.uniform(*cfg.blur_sigma), truncate=4.0, mode="constant")
    if rng.random_sample() < cfg.mult_noise_prob:
        out[0] *= np.exp(rng.uniform(*cfg.mult_noise_std) * rng.standard_normal((s, s, s)))
    if rng.random_sample() < cfg.noise_prob:
        out[0] += rng.uniform(*cfg.noise_std) * rng.standard_normal((s, s, s))
    if second and rng.random_sample() < cfg.mask_dropout_prob:
        out[2] = 0
    for ch in (1, 2, 3):
        if rng.random_sample() < cfg.mask_morph_prob:
            r = rng.randint(1, cfg.mask_morph_radius + 1)
            op = ndimage.binary_dilation if rng.random_sample() < 0.5 else ndimage.binary_erosion
            out[ch] = op(out[ch] > 0, np.ones((3, 3, 3), bool), iterations=r)
    if rng.random_sample() < cfg.cutout_prob:
        e = np.round(rng.uniform(*cfg.cutout_size, 3) * s).astype(int)
        a = rng.randint(0, s - e + 1)
        out[:, a[0] : a[0] + e[0], a[1] : a[1] + e[1], : e[2]] = 0
    return out[:3]


def timed(fn, pairs_per_call: int, min_pairs: int, warmup: int = 1) -> float:
    """Pairs per second of ``fn`` (called until ``min_pairs`` pairs are done, after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    done, t0 = 0, time.perf_counter()
    while done < min_pairs:
        fn()
        done += pairs_per_call
    return done / (time.perf_counter() - t0)


def bench_cpu(args: argparse.Namespace, cfg: AugmentConfig) -> dict[str, float]:
    torch.set_num_threads(1)
    s = args.cube_size
    strong = cfg.uses_context
    c = cfg.context_size(s)
    pool = make_cubes(max(args.batch_size, 4), c)
    if strong:  # a post-synaptic channel beside the pre-synaptic one
        pool = np.concatenate([pool, np.flip(pool[:, 1:2], axis=4).copy()], axis=1)
    pool_t = torch.from_numpy(pool)
    out: dict[str, float] = {}

    rng = np.random.RandomState(0)
    it = iter(range(10**9))

    def baseline() -> None:
        cube = pool[next(it) % len(pool)]
        if strong:
            baseline_strong_view(cube, rng, cfg, s, False)
            baseline_strong_view(cube, rng, cfg, s, True)
        else:
            baseline_view(cube, rng, cfg, False)
            baseline_view(cube, rng, cfg, True)

    views = RandTwoViewd(config=cfg, cube_size=s).set_random_state(0)

    def monai_path() -> None:
        views({"image": pool[next(it) % len(pool)]})

    aug = BatchedTwoViewAugment(cfg, cube_size=s).set_random_state(0)

    def batched() -> None:
        aug(pool_t[: args.batch_size])

    raw = np.random.RandomState(1).randn(1, 2 * s, 2 * s, 2 * s).astype(np.float16)
    mask = np.zeros((2, 2 * s, 2 * s, 2 * s), dtype=np.uint8)
    crng = np.random.RandomState(2)

    def cut() -> None:
        cut_cube(raw, mask, crng.randint(0, s + 1, size=3), s)

    # rounds interleave the methods and the best round counts, so that load from other processes on a
    # shared machine penalises no method in particular
    for _ in range(args.repeats):
        for key, fn, per_call, n in (
            ("baseline", baseline, 1, args.pairs),
            ("monai", monai_path, 1, args.pairs),
            ("batched", batched, args.batch_size, max(args.pairs, args.batch_size)),
            ("cut_cubes_per_s", cut, 1, args.pairs * 4),
        ):
            out[key] = max(out.get(key, 0.0), timed(fn, per_call, n))
    return out


def bench_gpu(args: argparse.Namespace, cfg: AugmentConfig) -> dict[str, float]:
    from monai.networks.nets import resnet18

    dev = torch.device(args.device)
    s, b = args.cube_size, args.gpu_batch_size
    cubes = torch.from_numpy(make_cubes(b, s)).to(dev)
    aug = BatchedTwoViewAugment(cfg).set_random_state(0)

    def sync_call(fn):
        def run() -> None:
            fn()
            torch.cuda.synchronize(dev)

        return run

    out = {"batched_gpu": timed(sync_call(lambda: aug(cubes)), b, args.gpu_pairs, warmup=3)}

    net = resnet18(spatial_dims=3, n_input_channels=3, num_classes=256).to(dev).to(memory_format=torch.channels_last_3d)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    v1, v2 = aug(cubes)
    x = torch.cat([v1, v2]).contiguous(memory_format=torch.channels_last_3d)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = net(x).float().pow(2).mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    out["resnet18_amp_consumes"] = timed(sync_call(step), b, args.gpu_pairs // 4 or b, warmup=3)
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cube-size", type=int, default=80)
    p.add_argument("--pairs", type=int, default=64, help="pairs timed per CPU method (after a warm-up call)")
    p.add_argument("--batch-size", type=int, default=16, help="batch of the batched path on the CPU")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the best round of each method counts")
    p.add_argument("--device", default="cpu", help="'cuda' adds the GPU figures")
    p.add_argument("--gpu-batch-size", type=int, default=64)
    p.add_argument("--gpu-pairs", type=int, default=2048)
    p.add_argument("--no-thp", action="store_true", help="leave PyTorch's CPU allocations without huge pages")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    p.add_argument("--views", choices=("lab", "strong"), default="lab", help="lab defaults or demo.yaml's views")
    args = p.parse_args(argv)
    if args.views == "strong":
        import yaml

        with open(os.path.join(os.path.dirname(__file__), "..", "bundle", "configs", "demo.yaml")) as f:
            cfg = AugmentConfig.from_any(yaml.safe_load(f)["augment"])
    else:
        cfg = AugmentConfig()

    print(
        f"cube {args.cube_size}³ (context {cfg.context_size(args.cube_size)}³), {args.views} views, 1 thread, "
        f"best of {args.repeats} interleaved rounds of {args.pairs} pairs; "
        f"THP for torch: {os.environ.get('THP_MEM_ALLOC_ENABLE', '0')}"
    )
    res = bench_cpu(args, cfg)
    base = res["baseline"]
    print(f"{'path':<34}{'pairs/s/core':>14}{'x baseline':>12}")
    for key, label in (
        ("baseline", "NumPy/SciPy baseline"),
        ("monai", "per-sample MONAI path"),
        ("batched", f"batched path, CPU (B={args.batch_size})"),
    ):
        print(f"{label:<34}{res[key]:>14.1f}{res[key] / base:>12.2f}")
    print(f"{'cutting cubes (cubes/s/core)':<34}{res['cut_cubes_per_s']:>14.1f}")
    if args.device != "cpu":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device}: CUDA is not available")
        gpu = bench_gpu(args, cfg)
        res.update(gpu)
        ratio = gpu["batched_gpu"] / gpu["resnet18_amp_consumes"]
        res["gpu_ratio"] = ratio
        print(f"{'batched path, GPU (B=%d)' % args.gpu_batch_size:<34}{gpu['batched_gpu']:>14.1f}  pairs/s")
        print(f"{'ResNet-18 AMP train step consumes':<34}{gpu['resnet18_amp_consumes']:>14.1f}  pairs/s")
        print(f"augmentation / consumption: {ratio:.1f}x (target >= 5x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
