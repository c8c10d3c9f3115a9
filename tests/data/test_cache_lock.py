"""The cache is built once when processes load one bbox at once, and a killed build leaves no cache (issue 12)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from synclr_monai.data import cache as cache_module
from synclr_monai.data.bbox import find_bboxes
from synclr_monai.data.cache import load_bbox, read_cache, source_fingerprint
from synclr_monai.data.label_maps import label_map_for
from synclr_monai.data.synthetic import generate_dataset

REPO = Path(__file__).resolve().parents[2]

# Each process waits at a barrier (two ready files), then loads the bbox; the assembly is slowed down so that
# the second process surely finds the lock taken, and it appends a line to a marker file each time it runs.
LOADER = textwrap.dedent(
    """
    import hashlib, logging, sys, time
    from pathlib import Path

    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
    from synclr_monai.data import cache as cache_module
    from synclr_monai.data.bbox import find_bboxes

    root, cache_dir, sync, me, other = sys.argv[1:6]
    real = cache_module.plan_assembly

    def counting(*args, **kwargs):
        with open(Path(sync) / "assemblies", "a") as f:
            f.write(me + "\\n")
        time.sleep(2.0)
        return real(*args, **kwargs)

    cache_module.plan_assembly = counting
    source = find_bboxes(root)[0]
    (Path(sync) / f"ready-{me}").touch()
    deadline = time.monotonic() + 120
    while not (Path(sync) / f"ready-{other}").exists():
        if time.monotonic() > deadline:
            sys.exit("the other process never got ready")
        time.sleep(0.01)
    volume = cache_module.load_bbox(source, cache_dir)
    print("DIGEST", hashlib.sha256(volume.raw.tobytes() + volume.mask.tobytes()).hexdigest())
    """
)

# Dies while building: mid-write (after the raw dataset, before the mask) or after the temporary file is
# complete but before its rename, as a SIGKILL or an out-of-memory kill would.
DYING_BUILDER = textwrap.dedent(
    """
    import os, signal, sys
    import h5py
    from synclr_monai.data import cache as cache_module
    from synclr_monai.data.bbox import find_bboxes

    root, cache_dir, when = sys.argv[1:4]
    if when == "mid-write":
        real_create = h5py.Group.create_dataset

        def dying(self, name, *args, **kwargs):
            out = real_create(self, name, *args, **kwargs)
            if name == "raw":
                self.file.flush()
                os._exit(9)
            return out

        h5py.Group.create_dataset = dying
    else:
        os.replace = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    cache_module.load_bbox(find_bboxes(root)[0], cache_dir)
    """
)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lock") / "data"
    generate_dataset(root, n_bboxes=1, shape=(32, 48, 48), synapses_per_bbox=1, seed=11)
    return root


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _run_script(tmp_path: Path, script: str, args: list[str]) -> subprocess.Popen:
    path = tmp_path / "script.py"
    if not path.exists():
        path.write_text(script)
    return subprocess.Popen(
        [sys.executable, str(path), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
    )


@pytest.mark.slow
def test_two_processes_build_one_cache_once(tiny_root, tmp_path):
    cache_dir, sync = tmp_path / "cache", tmp_path / "sync"
    sync.mkdir()
    procs = [
        _run_script(tmp_path, LOADER, [str(tiny_root), str(cache_dir), str(sync), me, other])
        for me, other in (("a", "b"), ("b", "a"))
    ]
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out
        outputs.append(out)
    assert len((sync / "assemblies").read_text().split()) == 1, outputs  # ONE assembly
    digests = {line.split()[1] for out in outputs for line in out.splitlines() if line.startswith("DIGEST")}
    assert len(digests) == 1, outputs  # both processes got the same volume
    assert "waiting for another process building the cache" in "".join(outputs)
    assert "built by another process" in "".join(outputs)
    source = find_bboxes(tiny_root)[0]
    cached = read_cache(cache_dir / "bbox1.h5", source_fingerprint(source, label_map_for(1), "float16"))
    assert cached is not None and cached.raw.shape == (32, 48, 48)
    assert sorted(p.name for p in cache_dir.iterdir()) == ["bbox1.h5", "bbox1.h5.lock"]  # no temporary file


@pytest.mark.slow
@pytest.mark.parametrize("when", ["mid-write", "before-rename"])
def test_killed_build_leaves_no_cache_and_the_next_load_rebuilds(tiny_root, tmp_path, monkeypatch, when):
    cache_dir = tmp_path / "cache"
    proc = _run_script(tmp_path, DYING_BUILDER, [str(tiny_root), str(cache_dir), when])
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode in (9, -9), out
    assert not (cache_dir / "bbox1.h5").exists()
    (tmp,) = cache_dir.glob(".bbox1.h5.*.tmp")  # the killed writer's temporary, under a name no reader opens
    assert read_cache(cache_dir / "bbox1.h5") is None

    calls = []
    real = cache_module.plan_assembly
    monkeypatch.setattr(cache_module, "plan_assembly", lambda *a, **k: calls.append(1) or real(*a, **k))
    source = find_bboxes(tiny_root)[0]
    volume = load_bbox(source, cache_dir)
    assert calls == [1]  # rebuilt, not taken from the temporary
    assert not tmp.exists()  # the stale temporary is cleaned up under the lock
    assert sorted(p.name for p in cache_dir.iterdir()) == ["bbox1.h5", "bbox1.h5.lock"]
    again = read_cache(cache_dir / "bbox1.h5", source_fingerprint(source, label_map_for(1), "float16"))
    np.testing.assert_array_equal(again.mask, volume.mask)
