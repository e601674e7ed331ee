"""Settings for every host. Each key is documented in the README's settings tables.

Uncomment and edit what you need; anything left out keeps its documented default.
"""

# Public SSH keys for the admin user created on every host.
# base_admin_ssh_keys = ["ssh-ed25519 AAAA... you@laptop"]
# base_admin_user = "aicoder"
# base_timezone = "UTC"
# A Debian mirror near you (also used by the AI guest):
# base_debian_mirror = "http://deb.debian.org/debian"

# Firewall (hypervisors and AI guests): who may reach SSH, tabbyAPI and Ollama (which has no
# authentication). Left empty, it is the LAN of the interface carrying the default route, read
# at deploy time. The address you deploy from always keeps SSH, so a deploy cannot lock you out.
# firewall_allowed_networks = ["192.168.1.0/24", "fd00:1::/64"]
# firewall_ssh_port = 22
# More ports for the allowed networks (e.g. a web UI on the guest):
# firewall_extra_tcp_ports = [8080]
# EL9 hypervisors: the firewalld zone your interfaces are in (it is rewritten: SSH moves to the
# source zone "aicoder-admin" that lists the allowed networks):
# firewall_firewalld_zone = "public"
# Leave the host firewall to yourself (not advised: Docker-published ports bypass most setups):
# firewall_enabled = False
