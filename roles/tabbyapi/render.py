"""What the tabbyapi role writes: config.yml and api_tokens.yml (data, dumped from dicts), the
systemd unit and the log rotation (Jinja2 text). Pure functions, so unit tests call them directly.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from roles.common.services import outside
from roles.common.templates import render
from roles.hf_tools import models
from roles.tabbyapi.settings import TabbyapiSettings

CONFIG_DIR = "/etc/tabbyapi"
CONFIG_FILE = f"{CONFIG_DIR}/config.yml"
TOKENS_FILE = f"{CONFIG_DIR}/api_tokens.yml"
LOG_DIR = "/var/log/tabbyapi"
LOG_FILE = f"{LOG_DIR}/tabbyapi.log"
UNIT = "tabbyapi.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
LOGROTATE_PATH = "/etc/logrotate.d/tabbyapi"
INSTALL_STAMP = ".aicoder-installed"  # in the venv: what the last successful pip install was for


def hf_home(settings: TabbyapiSettings) -> str:
    """HF_HOME of the service user: its Hugging Face token and download cache."""
    return models.hf_home(home(settings))


def home(settings: TabbyapiSettings) -> str:
    """The service user's home: its Hugging Face token and cache live under it."""
    return f"/var/lib/{settings.user}"


def _drop_none(section: dict) -> dict:
    """Options left None are omitted, so tabbyAPI applies its own default."""
    return {k: v for k, v in section.items() if v is not None}


def config(settings: TabbyapiSettings, listen: str) -> dict:
    """config.yml as a dict; ``listen`` is the resolved address (never 'auto')."""
    data: dict[str, Any] = {
        "network": {
            "host": listen,
            "port": settings.port,
            "api_servers": ["OAI"],
        },
        # Prompts and requests stay out of the log (it is the service user's, but still).
        "logging": {"log_prompt": False, "log_generation_params": False, "log_requests": False},
        "model": _drop_none(
            {
                "model_dir": settings.model_dir,
                "model_name": settings.model or None,
                "max_seq_len": settings.max_seq_len,
                "cache_size": settings.cache_size,
                "cache_mode": settings.cache_mode,
                "gpu_split_auto": settings.gpu_split_auto,
                "gpu_split": list(settings.gpu_split),
                "autosplit_reserve": list(settings.autosplit_reserve),
                "tensor_parallel": settings.tensor_parallel,
                "tensor_parallel_backend": settings.tensor_parallel_backend,
                "tool_format": settings.tool_calls or None,
            }
        ),
        "draft_model": _drop_none(
            {
                "draft_mode": settings.draft_mode,
                "draft_model_dir": settings.model_dir,
                "draft_model_name": settings.draft_model or None,
                "draft_cache_mode": settings.draft_cache_mode,
                "draft_gpu_split": list(settings.draft_gpu_split),
            }
        ),
    }
    for section, values in settings.config_overrides.items():
        data.setdefault(section, {}).update(copy.deepcopy(values))
    if settings.lab_unsafe_launch:  # lab only (refused where a GPU exists): no torch needed
        data.setdefault("developer", {})["unsafe_launch"] = True
    # Written last and explicitly: no override or default can turn authentication off.
    data["network"]["disable_auth"] = False
    return data


def config_yml(settings: TabbyapiSettings, listen: str) -> str:
    header = "# Managed by the ai-coding-server deploy (roles/tabbyapi): edit group_data instead.\n"
    return header + yaml.safe_dump(config(settings, listen), sort_keys=False)


def api_tokens_yml(api_key: str, admin_key: str) -> str:
    """api_tokens.yml: tabbyAPI's keys file (upstream common/auth.py reads api_key, admin_key)."""
    return yaml.safe_dump({"api_key": api_key, "admin_key": admin_key}, sort_keys=False)


def unit(settings: TabbyapiSettings) -> str:
    return render(
        "tabbyapi/tabbyapi.service.j2",
        user=settings.user,
        current=settings.current,
        home=home(settings),
        hf_home=hf_home(settings),
        log_file=LOG_FILE,
        log_dir=LOG_DIR,
        # Downloads from the admin API write to the models too.
        writable=outside(home(settings), settings.model_dir),
    )


def logrotate(settings: TabbyapiSettings) -> str:
    return render("common/logrotate.j2", role="tabbyapi", log_file=LOG_FILE, user=settings.user)
