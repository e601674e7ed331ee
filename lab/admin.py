"""The admin user of a lab machine, made before the first deploy as cloud-init makes it on the
VMs this project creates (roles/guest_vm/render.py): the lab's key, passwordless sudo, no
password. The lab's inventory logs in as this user with `_sudo`, as a user's inventory does, so an
operation that needs root but does not go through sudo fails in the lab too. Root's SSH login
stays for the lab's own tooling (`python -m lab ssh`, test helpers)."""

from __future__ import annotations

import shlex

from lab import ssh
from lab.config import Lab
from roles.base.settings import BaseSettings
from roles.guest_vm.render import admin_user_entry

USER: str = BaseSettings.admin_user  # the deploy's default base_admin_user
# Where cloud-init writes the `sudo` rules of its `users`.
SUDOERS = "/etc/sudoers.d/90-cloud-init-users"


def script(lab: Lab, user: str = USER) -> str:
    """Shell (run as root) creating ``user`` as cloud-init's `users` entry does; idempotent."""
    key = lab.key.with_suffix(".pub").read_text().strip()
    entry = admin_user_entry(user, [key])
    name, home = shlex.quote(entry["name"]), f"/home/{entry['name']}"
    keys = "".join(f"{k}\n" for k in entry["ssh_authorized_keys"])
    rule = f"# User rules for {entry['name']}\n{entry['name']} {entry['sudo']}\n"
    return " && ".join(
        [
            f"(id -u {name} >/dev/null 2>&1 || useradd --create-home --shell {entry['shell']} "
            f"--groups {','.join(entry['groups'])} {name})",
            f"passwd --lock {name} >/dev/null" if entry["lock_passwd"] else "true",
            f"install -d -m 700 -o {name} -g {name} {home}/.ssh",
            f"printf %s {shlex.quote(keys)} > {home}/.ssh/authorized_keys",
            f"chown {name}:{name} {home}/.ssh/authorized_keys",
            f"chmod 600 {home}/.ssh/authorized_keys",
            f"printf %s {shlex.quote(rule)} > {SUDOERS}",
            f"chmod 440 {SUDOERS}",
            f"visudo -cqf {SUDOERS}",
        ]
    )


def provision(lab: Lab, ip: str, port: int = 22) -> None:
    """Give the machine at ``ip`` the admin user (as root, over the lab's own SSH login)."""
    ssh.run(lab, ip, script(lab), port=port)
