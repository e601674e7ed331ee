"""Optional upstream mirrors the lab serves to its machines: GitHub is unreachable here.

tabbyAPI's git bundle is looked for in AICODER_LAB_TABBYAPI_BUNDLE, else in its usual place
beside the repository (`../shared/mirrors/tabbyAPI.bundle`). When found, a bare clone of it in
`<labdir>/mirrors/` is bind-mounted read-only into the AI guest and the deploy clones from there;
without it the lab uses upstream if GitHub answers, and otherwise leaves tabbyAPI's code out.
"""

from __future__ import annotations

import functools
import os
import subprocess
import urllib.request
from pathlib import Path

from lab.config import REPO, Lab

BUNDLE_ENV = "AICODER_LAB_TABBYAPI_BUNDLE"
MOUNT = "/srv/aicoder-lab-mirrors"  # where the AI guest sees <labdir>/mirrors
TABBYAPI = "tabbyAPI.git"
UPSTREAM = "https://github.com/theroyallab/tabbyAPI"


def tabbyapi_bundle() -> Path | None:
    """The bundle the environment names (it must exist), else the one in its usual place."""
    named = os.environ.get(BUNDLE_ENV)
    if named:
        if not Path(named).is_file():
            raise SystemExit(f"{BUNDLE_ENV}={named}: no such file; unset it or fix the path")
        return Path(named)
    usual = REPO.parent / "shared" / "mirrors" / "tabbyAPI.bundle"
    return usual if usual.is_file() else None


def folder(lab: Lab) -> Path:
    return lab.dir / "mirrors"


def ensure(lab: Lab) -> Path | None:
    """A bare clone of the bundle in the lab's mirror folder, refreshed when the bundle is
    newer; None without a bundle."""
    bundle = tabbyapi_bundle()
    if bundle is None:
        return None
    bare = folder(lab) / TABBYAPI
    if not (bare / "HEAD").exists():
        bare.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "--quiet", "--bare", str(bundle), str(bare)], check=True)
    elif bundle.stat().st_mtime > (bare / "HEAD").stat().st_mtime:
        subprocess.run(
            ["git", "-C", str(bare), "fetch", "--quiet", str(bundle), "+refs/heads/*:refs/heads/*"],
            check=True,
        )
        (bare / "HEAD").touch()
    return bare


@functools.cache
def github_answers() -> bool:
    try:
        urllib.request.urlopen(UPSTREAM, timeout=5).close()
    except OSError:
        return False
    return True


def tabbyapi_url(lab: Lab) -> str | None:
    """What the guest clones tabbyAPI from: the served mirror, upstream, or None."""
    if (folder(lab) / TABBYAPI / "HEAD").exists():
        return f"{MOUNT}/{TABBYAPI}"
    return UPSTREAM if github_answers() else None
