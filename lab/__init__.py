"""Local lab: Debian 12 machines booted on this host for real deploys and checks.

    python -m lab up [--machines guest,hv]   boot (running machines are kept); writes the inventory
    python -m lab status | inventory          what runs, and the inventory's path
    python -m lab ssh NAME [CMD...]           root shell or command in a machine
    python -m lab down                        stop everything, restore the host network

Machines are systemd-nspawn containers (`lab.nspawn`) of one cached root filesystem
(`lab.rootfs`) on a bridge of their own (`lab.network`). Several instances can run at once:
AICODER_LAB_NAME names one (bridge, subnet, nft table), AICODER_LAB_DIR holds its state.
"""
