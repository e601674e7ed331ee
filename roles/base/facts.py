"""Facts of the base role."""

from __future__ import annotations

from pyinfra.api import FactBase

STAMP = "/var/lib/apt/periodic/update-success-stamp"


class AptState(FactBase):
    """Age of apt's package index in seconds (None if never fetched) and whether a dpkg run was
    interrupted (its journal in /var/lib/dpkg/updates is not empty), in one round trip."""

    def command(self) -> str:
        return (
            f"echo $(( $(date +%s) - $(stat -c %Y {STAMP} 2>/dev/null || echo 0) )); "
            "ls -A /var/lib/dpkg/updates 2>/dev/null | wc -l; "
            f"test -e {STAMP} && echo stamp || echo nostamp"
        )

    @staticmethod
    def default():
        return {"index_age": None, "dpkg_interrupted": False}

    def process(self, output):
        if len(output) < 3:
            return self.default()
        age, journal, stamp = (line.strip() for line in output[:3])
        return {
            "index_age": int(age) if stamp == "stamp" else None,
            "dpkg_interrupted": int(journal) > 0,
        }
