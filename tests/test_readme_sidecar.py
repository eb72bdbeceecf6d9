"""The README's sidecar example, run as written (rev11b: the README described sidecars at length and never showed
one). Its shell lines run verbatim in a fresh folder; the daemon then styles the photo as the README says."""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from daemon_helpers import ROOT, errors, make_config

pytestmark = pytest.mark.usefixtures("torch_threads")


def _example() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"For example \(the sidecar first, or with its photo\):\n\n  ```sh\n(.*?)\n  ```", readme, re.S)
    assert block, "the README's sidecar example is gone"
    return "\n".join(line.strip() for line in block.group(1).splitlines())


def test_the_readmes_sidecar_example_styles_as_it_says(tmp_path, engine):
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path, defaults={"format": "jpeg"})  # as the shipped config.yaml writes
    (tmp_path / "pipeline").symlink_to(ROOT / "pipeline")  # the example's paths are the checkout's
    subprocess.run(["bash", "-euc", _example()], cwd=tmp_path, check=True, timeout=60)
    assert Daemon(config, once=True, engine=engine).run() == 0
    assert errors(tmp_path) == {}
    log = json.loads((tmp_path / "outbox" / "scream" / "astronaut.json").read_text())
    assert (tmp_path / "outbox" / "scream" / "astronaut.jpg").is_file() and log["settings"]["steps"] == 50
    assert sorted(p.name for p in (tmp_path / "spool" / "done").iterdir()) == ["astronaut.jpg", "astronaut.yaml"]


def test_the_sidecar_example_sends_a_photo_the_quickstart_did_not():
    """rev12b: the example sent coffee.jpg, which the quickstart had already styled into outbox/scream/, so the
    reader following both got coffee-1.jpg and spool/done/coffee-1.yaml, not the names promised."""
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("With `make run` going, in another terminal:", 1)[1].split("and a minute or two", 1)[0]
    sent = set(re.findall(r"samples/(\S+\.jpg)", quickstart))
    example = set(re.findall(r"samples/(\S+\.jpg)", _example()))
    assert sent and example and not sent & example, (sent, example)


def test_the_readmes_sidecar_typo_fails_as_it_says(tmp_path, engine):
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path)
    (tmp_path / "pipeline").symlink_to(ROOT / "pipeline")
    subprocess.run(["bash", "-euc", _example().replace("scream", "screem")], cwd=tmp_path, check=True, timeout=60)
    Daemon(config, once=True, engine=engine).run()
    failed = errors(tmp_path)["astronaut.jpg"]
    assert failed["code"] == "bad_sidecar" and "did you mean 'scream'?" in failed["message"] + failed["fix"], failed
