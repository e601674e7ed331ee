"""Plan tests of the host report (report.py): it plans no operation and says what it found and
what the deploy would do, on recorded EL9 facts (tests/fixtures/el9)."""

from __future__ import annotations

import re

from harness import ROOT, fixture, run_plan
from test_libvirt_plan import EL9, LAN, STATIC_UPLINK, nm_response, responses
from vfio_facts import INTEL_CPU, host

REPORT = ROOT / "report.py"
INTEL_ROOT_PORT = dict(
    cpuinfo=INTEL_CPU,
    cmdline=fixture("cmdline.rocky-9.4.no-iommu.txt"),
    groups=fixture("iommu-groups.shared-root-port.gt1030.ubuntu-6.8.txt"),
    grubby=fixture("grubby-info-all.rocky-9.1.txt"),
)


def test_report_plans_nothing_and_says_what_the_deploy_would_do(capsys):
    found = {
        **host(EL9, **INTEL_ROOT_PORT),
        **nm_response(["enp3s0:enp3s0"], STATIC_UPLINK),
        re.compile(r"echo '\[os\]'"): "[os]\nRocky Linux 9.4 (Blue Onyx)\n[kernel-cmdline]\n"
        "[curl]\npackage curl is not installed\ncurl-minimal-7.76.1-29.el9_4.x86_64\n"
        "[selinux]\nEnforcing\n[firewalld]\nnot running\n",
        **{k: v for k, v in responses(EL9).items() if "class/net" in str(k)},
    }
    data = {**LAN, "libvirt_bridge_uplink": "enp3s0", "vfio_gpus": ["10de:1d01"]}
    plan = run_plan({"hypervisors": data}, found, deploy_file=REPORT)
    assert plan.error is None, plan.error
    assert plan.changed == [] and plan.operations == 0
    out = capsys.readouterr().out
    assert "host report (read-only; nothing was changed)" in out
    assert "group 2: 0000:00:01.0 PCI bridge [8086:1901], driver no driver" in out
    assert "group 2: 0000:01:00.1 Audio device [10de:0fb8]" in out
    # The recorded Rocky 9.4 command line has no IOMMU arguments.
    assert "would add kernel arguments intel_iommu=on iommu=pt and need a reboot" in out
    assert "/etc/kernel/cmdline: absent" in out
    assert "curl-minimal-7.76.1" in out and "Enforcing" in out
    assert "NetworkManager profile 'enp3s0'" in out
    assert "would bridge br0 (enp3s0): static 192.168.1.5/24, gateway 192.168.1.1" in out


def test_report_says_the_deploy_would_refuse_dhcp_over_a_static_uplink(capsys):
    found = {**host(EL9, **INTEL_ROOT_PORT), **nm_response(["enp3s0:enp3s0"], STATIC_UPLINK),
             **{k: v for k, v in responses(EL9).items() if "class/net" in str(k)}}  # fmt: skip
    data = {**LAN, "libvirt_bridge_uplink": "enp3s0", "libvirt_bridge_address": "dhcp"}
    plan = run_plan({"hypervisors": data}, found, deploy_file=REPORT)
    assert plan.error is None and plan.changed == []
    assert "would refuse: " in capsys.readouterr().out
