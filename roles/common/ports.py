"""Port checks across roles: the services on one host must not take each other's ports."""

from __future__ import annotations


def ssh_port_clash(key: str, port: int, data: dict) -> list[tuple[str, str]]:
    """A service port that is sshd's too (firewall_ssh_port): the service could not bind it."""
    # Imported here: the firewall role imports the services' settings to open their ports.
    from roles.firewall.settings import FirewallSettings

    firewall, problems = FirewallSettings.checked(data)
    if firewall is None or problems or port != firewall.ssh_port:
        return []
    return [(key, f"{port} is the SSH port (firewall_ssh_port); give the service another one")]
