"""A bridge change that cannot lock the host out: applied with a rollback that runs by itself.

The change runs detached (it may cut this SSH connection for a moment). It first saves what it
changes (EL9: a NetworkManager checkpoint; Debian: the ifupdown files), applies, waits for the
bridge to be up with an address, and pings the LAN through it (``libvirt_bridge_check_address``,
else the bridge's default gateway). A failed check rolls back at once. Otherwise it waits for the
deploy to confirm: a fresh command from the deploy, after the change, proves that the host is
still reachable. Unconfirmed after ``seconds`` (the deploy could not reach the host again), the
change is rolled back by itself (EL9: NetworkManager rolls its checkpoint back, too).
"""

from __future__ import annotations

import shlex

STATE_DIR = "/run/aicoder-bridge"
NM = (
    "gdbus call --system --dest org.freedesktop.NetworkManager "
    "--object-path /org/freedesktop/NetworkManager --method org.freedesktop.NetworkManager"
)
# NM_CHECKPOINT_CREATE_FLAG_DESTROY_ALL | DELETE_NEW_CONNECTIONS | DISCONNECT_NEW_DEVICES
# (NetworkManager's nm-dbus-interface.h): a rollback also removes the profiles and the bridge
# device the change created.
CHECKPOINT_FLAGS = 0x01 | 0x02 | 0x04


def _q(text: str) -> str:
    return shlex.quote(text)


def nm_checkpoint(seconds: int) -> tuple[list[str], list[str]]:
    """EL9: (save, rollback) steps with a NetworkManager checkpoint covering every device; NM
    itself rolls it back after ``seconds`` unless it is destroyed (the confirmation)."""
    save = [
        # CheckpointCreate(ao devices: none = all, u rollback_timeout, u flags) -> o checkpoint
        f"cp=$({NM}.CheckpointCreate '@ao []' 'uint32 {seconds}' 'uint32 {CHECKPOINT_FLAGS}' | "
        "sed -n \"s/.*'\\(.*\\)'.*/\\1/p\")",
        f'[ -n "$cp" ] || {{ echo "failed: no NetworkManager checkpoint" >{STATE_DIR}/status; '
        "exit 1; }",
        f'echo "$cp" >{STATE_DIR}/checkpoint',
    ]
    rollback = [f'{NM}.CheckpointRollback "$(cat {STATE_DIR}/checkpoint)" >/dev/null']
    return save, rollback


def ifupdown_backup(files: list[str], bridge: str, uplink: str) -> tuple[list[str], list[str]]:
    """Debian: (save, rollback) steps that copy ``files`` aside and put them back (removing those
    that did not exist), then bring the interfaces up as before."""
    save, rollback = [f"ifdown {_q(bridge)} 2>/dev/null"], []
    for i, path in enumerate(files):
        saved = f"{STATE_DIR}/saved.{i}"
        save.append(f"rm -f {saved} {saved}.absent; "
                    f"cp -a {_q(path)} {saved} 2>/dev/null || touch {saved}.absent")  # fmt: skip
        rollback.append(f"if [ -e {saved}.absent ]; then rm -f {_q(path)}; "
                        f"else cp -a {saved} {_q(path)}; fi")  # fmt: skip
    rollback.append("ifup -a")
    if uplink:
        rollback.append(f"ifup {_q(uplink)}")
    rollback.insert(0, save.pop(0))  # the ifdown belongs to the rollback, before the restore
    return save, rollback


def apply_script(
    bridge: str,
    save: list[str],
    steps: list[str],
    rollback: list[str],
    check_address: str,
    wants_address: bool,
    seconds: int,
) -> str:
    """The detached script: save, apply, check (rolled back at once if the check fails), then
    wait ``seconds`` for the deploy's confirmation or roll back by itself."""
    d = STATE_DIR
    undo = "; ".join(rollback)
    check = _q(check_address)
    lines = [
        f"mkdir -p {d}; rm -f {d}/status {d}/pending {d}/confirmed {d}/expired",
        *save,
        f"touch {d}/pending",
        *steps,
        # Up, and (unless it has no IPv4 by design) with an address, within 60 s.
        "i=0; until ip -o link show dev {b} up | grep -q . {addr}; do i=$((i+1)); "
        '[ "$i" -le 60 ] || break; sleep 1; done'.format(
            b=_q(bridge),
            addr=f"&& ip -4 -o addr show dev {_q(bridge)} | grep -q inet" if wants_address else "",
        ),
        f"target={check}",
        f'[ -n "$target" ] || target=$(ip -4 route show default dev {_q(bridge)} | '
        "awk '{print $3; exit}')",
        'ok=yes; if [ -n "$target" ]; then ok=no; j=0; while [ "$j" -lt 20 ]; do '
        f'ping -c 1 -W 1 -I {_q(bridge)} "$target" >/dev/null 2>&1 && {{ ok=yes; break; }}; '
        "j=$((j+1)); sleep 1; done; fi",
        f'if [ "$ok" != yes ]; then rm -f {d}/pending; {undo}; '
        f'echo "rolled back: {bridge} did not reach $target on the LAN" >{d}/status; exit 1; fi',
        f"echo applied >{d}/status",
        f'k=0; while [ -e {d}/pending ] && [ "$k" -lt {seconds} ]; do k=$((k+1)); sleep 1; done',
        # Whoever moves the marker first wins: the deploy's confirmation or this rollback.
        f"if mv {d}/pending {d}/expired 2>/dev/null; then {undo}; "
        f'echo "rolled back: not confirmed within {seconds} s" >{d}/status; fi',
    ]
    return "\n".join(lines)


def run_detached(bridge: str, script: str, timeout: int = 150) -> str:
    """Start ``script`` in its own session (it survives this SSH connection) and wait until it
    reports: applied (exit 0) or rolled back (exit 1, with its log)."""
    log = f"/var/log/aicoder-bridge-{bridge}.log"
    d = STATE_DIR
    return (
        f"mkdir -p {d}; rm -f {d}/status; setsid sh -xc {_q(script)} >{log} 2>&1 </dev/null & "
        f"for i in $(seq {timeout}); do "
        f'if [ -e {d}/status ]; then s=$(cat {d}/status); [ "$s" = applied ] && exit 0; '
        f'echo "bridge {bridge}: $s" >&2; tail -n 40 {log} >&2; exit 1; fi; sleep 1; done; '
        f"echo 'bridge {bridge}: no result in {timeout} s' >&2; tail -n 40 {log} >&2; exit 1"
    )


def confirm(checkpoint: bool) -> str:
    """The deploy's confirmation, a fresh command after the change: keeps it (EL9: destroys the
    checkpoint), or fails if it was already rolled back."""
    d = STATE_DIR
    keep = f'{NM}.CheckpointDestroy "$(cat {d}/checkpoint)" >/dev/null; ' if checkpoint else ""
    return (
        f"if mv {d}/pending {d}/confirmed 2>/dev/null; then {keep}exit 0; fi; "
        f'echo "the bridge change was not kept: $(cat {d}/status 2>/dev/null)" >&2; exit 1'
    )
