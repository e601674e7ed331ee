"""pyinfra inventory of the Vagrant machines (docs/vagrant.md), used by the Vagrantfile's deploy
trigger: ``pyinfra vagrant/inventory.py deploy.py`` from the repository root.

pyinfra's @vagrant connector turns ``@vagrant/<machine>`` into that running machine's SSH
details (``vagrant status`` and ``vagrant ssh-config``, run where the Vagrantfile is); the groups
and settings come from here and group_data/, as for real hosts. Only the machines Vagrant
reports running are listed (`vagrant up guest` brings up the guest alone; the connector refuses a
machine that is not running).
"""

import json
import os

from pyinfra import local


def _running() -> set[str]:
    """Machines `vagrant status` reports running (what the @vagrant connector can reach)."""
    lines = local.shell("vagrant status --machine-readable", splitlines=True)
    fields = [line.strip().split(",", 3) for line in lines]
    return {f[1] for f in fields if len(f) == 4 and f[2:] == ["state", "running"]}


def _lab_data() -> dict:
    """LAB ONLY (tests/lab/test_vagrant.py): host data for the guest from the JSON file named by
    AICODER_LAB_VAGRANT_DATA (the lab's offline/mirror settings); unset for every real use."""
    path = os.environ.get("AICODER_LAB_VAGRANT_DATA")
    if not path:
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# The host-only addresses set in the Vagrantfile: the host reaches the guest's APIs there.
HYPERVISOR_IP = "192.168.56.10"
GUEST_IP = "192.168.56.11"

# Both boxes log in as "vagrant" with passwordless sudo. SSH arrives from the provider's
# management network (vagrant-libvirt 192.168.121.0/24, VirtualBox NAT 10.0.2.0/24); the APIs
# are reached on the host-only network.
_VAGRANT = {
    "_sudo": True,
    "firewall_allowed_networks": ["192.168.121.0/24", "10.0.2.0/24", "192.168.56.0/24"],
}

_RUNNING = _running()

hypervisors = [("@vagrant/hypervisor", dict(_VAGRANT))]

ai_guests = [
    (
        "@vagrant/guest",
        dict(
            _VAGRANT,
            # No GPU in the box: tabbyAPI starts without a model (no 16 GB download it could
            # not load), and Ollama serves the embeddings on the CPU.
            tabbyapi_model_repo=None,
            ollama_gpu=False,
        )
        | _lab_data(),
    )
]
hypervisors = [h for h in hypervisors if h[0].split("/")[1] in _RUNNING]
ai_guests = [h for h in ai_guests if h[0].split("/")[1] in _RUNNING]

# This machine: the deploy writes the editor's Continue config here. The editor reaches the TLS
# front door (every address, port 8443; the model servers on loopback behind it) on the
# host-only address, which the door's certificate then names too (client_api_host).
clients = [("@local", {"client_api_host": GUEST_IP})]
