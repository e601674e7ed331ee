"""Host data the lab adds to its generated inventory, per group (offline/mirror settings).

Merged over the lab's own connection data in `<labdir>/inventory.py`; keep it plain literals.
"""

OVERRIDES: dict[str, dict] = {
    "ai_guests": {},
    "hypervisors": {},
}
