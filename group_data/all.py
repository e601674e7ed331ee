"""Settings for every host. Each key is documented in the README's settings tables.

Uncomment and edit what you need; anything left out keeps its documented default.
"""

# Public SSH keys for the admin user created on every host.
# base_admin_ssh_keys = ["ssh-ed25519 AAAA... you@laptop"]
# base_admin_user = "aicoder"
# base_timezone = "UTC"
# A Debian mirror near you (also used by the AI guest):
# base_debian_mirror = "http://deb.debian.org/debian"
