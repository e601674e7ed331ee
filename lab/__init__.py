"""Local lab: Debian 12 machines booted here with systemd-nspawn for real deploys and checks.

`python -m lab up|status|ssh|down|inventory` drives it; see `lab.cli`.
"""
