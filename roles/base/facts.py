"""The base role's probe: what it checks on the host besides files and packages, printed as
tagged lines inside the role's one HostState read (roles/common/host_state.py)."""

from __future__ import annotations

import shlex

STAMP = "/var/lib/apt/periodic/update-success-stamp"
# Packages a killed dpkg left half-way: not installed or configured (H, U, F, W, t in the status
# column) or flagged for reinstallation (R); `dpkg --configure -a` alone does not mend these.
BROKEN_PACKAGES = (
    "dpkg-query -W -f='${db:Status-Abbrev}${Package}\\n' 2>/dev/null | "
    "awk 'substr($0, 2, 1) ~ /[HUFWt]/ || substr($0, 3, 1) == \"R\" { print substr($0, 4) }'"
)


def probe(timezone: str, user: str, home: str) -> str:
    """Shell printing: the age of apt's index, dpkg's interrupted-run journal and the packages it
    left broken, the time zone database and zone, the admin user's passwd entry, home and
    ~/.ssh, /etc/localtime's target."""
    zone, user, home = (shlex.quote(v) for v in (timezone, user, home))
    return "; ".join(
        [
            f'echo "age $(( $(date +%s) - $(stat -c %Y {STAMP} 2>/dev/null || echo 0) ))"',
            f"test -e {STAMP} && echo stamp",
            'echo "journal $(ls -A /var/lib/dpkg/updates 2>/dev/null | wc -l)"',
            f"{BROKEN_PACKAGES} | sed 's/^/broken /'",
            "test -f /usr/share/zoneinfo/UTC || echo nozonedb",
            f"test -f /usr/share/zoneinfo/{zone} && echo zone",
            f'echo "passwd $(getent passwd {user})"',
            f"test -d {home} && echo homedir",
            f"echo \"sshdir $(stat -c '%a %U:%G' {home}/.ssh)\"",
            'echo "localtime $(readlink /etc/localtime)"',
        ]
    )


def parse(lines: list[str]) -> dict:
    """The probe's lines as a dict (a host that printed nothing reads as a fresh one)."""
    tagged = {}
    for line in lines:
        tag, _, rest = line.partition(" ")
        tagged[tag] = rest.strip()
    passwd = tagged.get("passwd", "").split(":")
    stamp = "stamp" in tagged
    return {
        "index_age": int(tagged.get("age", "0")) if stamp else None,
        # The repair lists the broken packages itself, after `dpkg --configure -a`.
        "dpkg_interrupted": int(tagged.get("journal", "0") or 0) > 0 or "broken" in tagged,
        # Unknown until tzdata (installed by this role) brings the zone database.
        "timezone_exists": None if "nozonedb" in tagged or not lines else "zone" in tagged,
        "user": {"home": passwd[5], "shell": passwd[6]} if len(passwd) >= 7 else None,
        "home_exists": "homedir" in tagged,
        "ssh_dir": tagged.get("sshdir", ""),
        "localtime": tagged.get("localtime", ""),
    }
