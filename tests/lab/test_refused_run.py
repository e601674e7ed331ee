"""A refused real run (not --dry) changes nothing on any host (issue 13, item 8).

A fresh lab guest (a cheap nspawn machine, never deployed) and this machine as the client: the
guest's settings are good, the client's are not, so the guest is the host that would have
planned (and, before all hosts were validated first, written the generated keys). After the
refused real run the guest's files, packages, users and units, the user's secrets.yml, the
editor's config and the client's ~ are byte for byte as before."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from deploy_run import ANSI, pyinfra_deploy

pytestmark = pytest.mark.lab

# What a deploy would change on the guest: files and folders (type, mode, owner, size, mtime)
# where the roles write, installed packages, users, enabled units. /var/lib/systemd holds
# timestamps systemd keeps by itself.
SNAPSHOT = (
    "find /etc /opt /srv /home /root /usr/local /var/lib -xdev -path /var/lib/systemd -prune "
    "-o -printf '%p %y %m %u %g %s %T@\\n' | sort; dpkg-query -W; getent passwd; "
    "systemctl list-unit-files --no-legend --no-pager"
)
KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978"


def unchanged(snapshot: str) -> list[str]:
    """The snapshot's lines but sudo's trace in the admin's home."""
    sudo = ("/home/aicoder d ", "/home/aicoder/.sudo_as_admin_successful ")
    return [line for line in snapshot.splitlines() if not line.startswith(sudo)]


def tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): "dir"
        if p.is_dir()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


def test_a_refused_real_run_changes_nothing_on_any_host(lab_factory, tmp_path, lab_timings):
    home = tmp_path / "home"
    (home / ".continue").mkdir(parents=True)
    (home / ".continue" / "config.yaml").write_text("name: mine\n")
    secrets = tmp_path / "secrets.yml"
    secrets.write_text(f"# my key, my comment\ntabbyapi_api_key: '{KEY}'\n")  # no admin key yet
    secrets.chmod(0o600)
    with lab_factory("input", "guest") as lab:
        inventory = tmp_path / "inventory.py"
        inventory.write_text(
            f"exec(open({str(lab.inventory)!r}).read())\n"
            "clients = [('@local', {'client_config_path': '/proc/aicoder/config.yaml'})]\n"
        )
        before = lab.ssh("guest", SNAPSHOT).stdout
        home_before, secrets_before = tree(home), secrets.read_bytes()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AICODER_")}
        env.update(HOME=str(home), AICODER_SECRETS_FILE=str(secrets))
        run = pyinfra_deploy(inventory, env=env, timeout=900)  # a real run: no --dry
        lab_timings["refused real run"] = run.seconds
        output = ANSI.sub("", run.output)
        assert run.returncode != 0, output[-3000:]
        assert "client_config_path" in output and "nothing was changed" in output, output[-3000:]
        assert KEY not in output and "Traceback" not in output, output[-3000:]
        after = lab.ssh("guest", SNAPSHOT).stdout
    # The valid hosts' facts are still read with sudo, so that one message names the problems
    # of every host: sudo's own flag file (and its home folder's size and time) is all it leaves.
    assert unchanged(before) == unchanged(after)
    assert len(before.splitlines()) > 1000  # the snapshot saw the machine
    assert secrets.read_bytes() == secrets_before and tree(home) == home_before
