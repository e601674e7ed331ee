"""Every plan test keeps what a run writes on the control machine (generated secrets, the
front door's CA: pyinfra's fake connector runs those operations) in its own temporary folder,
never beside deploy.py; a test may point AICODER_SECRETS_FILE elsewhere itself."""

from __future__ import annotations

import pytest

from roles.proxy import pki


@pytest.fixture(autouse=True)
def own_secrets_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("AICODER_SECRETS_FILE", str(tmp_path / "secrets.yml"))
    pki._NEW.clear()
