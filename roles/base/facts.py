"""Facts of the base role."""

from __future__ import annotations

from pyinfra.api import FactBase

STAMP = "/var/lib/apt/periodic/update-success-stamp"


class BaseState(FactBase):
    """In one round trip: the age of apt's package index in seconds (None if never fetched),
    whether a dpkg run was interrupted (its journal in /var/lib/dpkg/updates is not empty), and
    whether the time zone ``timezone`` exists on the host (None without a zone database)."""

    def command(self, timezone: str) -> str:
        return (
            f"echo $(( $(date +%s) - $(stat -c %Y {STAMP} 2>/dev/null || echo 0) )); "
            "ls -A /var/lib/dpkg/updates 2>/dev/null | wc -l; "
            f"test -e {STAMP} && echo stamp || echo nostamp; "
            "test -f /usr/share/zoneinfo/UTC || echo nodb; "
            f"test -f /usr/share/zoneinfo/{timezone} && echo zone || echo nozone"
        )

    @staticmethod
    def default():
        return {"index_age": None, "dpkg_interrupted": False, "timezone_exists": None}

    def process(self, output):
        if len(output) < 4:
            return self.default()
        age, journal, stamp, *zone = (line.strip() for line in output)
        return {
            "index_age": int(age) if stamp == "stamp" else None,
            "dpkg_interrupted": int(journal) > 0,
            # Unknown until tzdata (installed by this role) brings the zone database.
            "timezone_exists": None if "nodb" in zone else zone == ["zone"],
        }
