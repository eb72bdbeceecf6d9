"""left8's list: `validate` said OK for `device: cuda` on a CPU-only box (it never imports torch, to stay fast), and
`run` then stopped at start with exit 2. Now it warns, naming the key and what to write, still without torch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from daemon_helpers import ROOT, make_config

NO_GPU_HERE = not Path("/dev/nvidia0").exists()


def _validate(config: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "validate", "--config", str(config)], env=env,
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_validate_warns_of_a_cuda_device_this_machine_cannot_give(tmp_path):
    """devices: [cuda:63] cannot be had on any machine here (a CPU torch, no GPU, or fewer GPUs): always warned.
    device: cuda is warned where there is no NVIDIA GPU, as on the 2-core test box; device: cpu never is."""
    for folder, overrides, warned in (("many", {"devices": ["cuda:0", "cuda:63"]}, True),
                                      ("cuda", {"device": "cuda"}, NO_GPU_HERE),
                                      ("cpu", {"device": "cpu"}, False)):
        config = make_config(tmp_path / folder, **overrides)
        result = _validate(config)
        assert result.returncode == 0 and f"{config}: OK" in result.stdout, result.stderr
        key = next(iter(overrides))
        assert (f"{config}: warning: {key}: " in result.stderr) == warned, (folder, result.stderr)
        if warned:
            assert "stops at start (exit 2): use auto" in result.stderr and "Traceback" not in result.stderr
