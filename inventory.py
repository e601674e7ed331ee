"""Your machines, by group. Edit the addresses; settings live in group_data/*.py.

Run: ``pyinfra inventory.py deploy.py`` (add ``--dry`` to see the plan first).
"""

# The RHEL 9 family (or Debian 12) machine that owns the NVIDIA GPU and runs the VM.
hypervisors = [
    ("gpu-host.example.lan", {"ssh_user": "root"}),
]

# The Debian 12 VM that receives the GPU (its address is set in group_data/hypervisors.py).
ai_guests = [
    ("ai-guest.example.lan", {"ssh_user": "aicoder"}),
]
