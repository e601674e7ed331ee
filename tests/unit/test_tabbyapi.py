"""tabbyapi role: settings validation and what it renders (config.yml, api_tokens.yml, unit)."""

from __future__ import annotations

import pytest
import yaml

from roles.common.settings import SettingsError, validate_host
from roles.hf_tools.settings import HfToolsSettings
from roles.ollama.settings import OllamaSettings
from roles.tabbyapi import render
from roles.tabbyapi.facts import parse_state
from roles.tabbyapi.settings import OWNED_OPTIONS, TabbyapiSettings, model_folder

CLASSES = [TabbyapiSettings, OllamaSettings, HfToolsSettings]


class FakeHost:
    def __init__(self, data):
        self.name = "guest"
        self.data = type("Data", (), {"dict": lambda _self: dict(data)})()


def settings(**data) -> TabbyapiSettings:
    built, problems = TabbyapiSettings.problems_in({f"tabbyapi_{k}": v for k, v in data.items()})
    assert not problems, problems
    return built


def problems(data: dict) -> str:
    with pytest.raises(SettingsError) as caught:
        validate_host(FakeHost(data), CLASSES)
    message = str(caught.value)
    assert "nothing was changed" in message
    return message


@pytest.fixture(autouse=True)
def no_user_secrets(monkeypatch, tmp_path):
    monkeypatch.setenv("AICODER_SECRETS_FILE", str(tmp_path / "secrets.yml"))
    for name in ("HF_TOKEN", "TABBYAPI_API_KEY", "TABBYAPI_ADMIN_KEY"):
        monkeypatch.delenv(f"AICODER_{name}", raising=False)


# --- settings ----------------------------------------------------------------------------------


def test_defaults_are_valid_documented_and_point_at_upstream():
    s = settings()
    assert s.git_url == "https://github.com/theroyallab/tabbyAPI"
    assert len(s.git_ref) == 40  # a pinned commit, not a branch
    assert s.pip_extras == ["cu12"] and s.model_repo and s.model_revision
    for key, _default, doc in TabbyapiSettings.docs():
        assert key.startswith("tabbyapi_") and doc, key


BAD = [
    ("tabbyapi_cache_mode", "q8", "not an exllamav3 cache mode"),
    ("tabbyapi_cache_mode", "fp16", "not an exllamav3 cache mode"),
    ("tabbyapi_cache_mode", "9,9", "not an exllamav3 cache mode"),
    ("tabbyapi_cache_mode", "1,8", "not an exllamav3 cache mode"),
    ("tabbyapi_cache_mode", "Q5", "not an exllamav3 cache mode"),
    ("tabbyapi_draft_cache_mode", "8,8", "is not one of 'FP16'"),  # upstream: names only
    ("tabbyapi_host", "10.0.0.300", "not an IP address"),
    ("tabbyapi_host", "my-guest.lan", "not an IP address"),
    ("tabbyapi_port", 70000, "not a TCP port"),
    ("tabbyapi_model_repo", "just-a-name", "Hugging Face repo id"),
    ("tabbyapi_model_repo", "a/b/c", "Hugging Face repo id"),
    ("tabbyapi_model_repo", "owner/name with space", "Hugging Face repo id"),
    ("tabbyapi_model_name", "../../etc", "folder name"),
    ("tabbyapi_model_name", "a/b", "folder name"),
    ("tabbyapi_model_name", "bad;rm -rf", "folder name"),
    ("tabbyapi_model_revision", "--upload-pack=x", "branch, tag or commit"),
    ("tabbyapi_git_ref", "-b evil", "commit id or tag"),
    ("tabbyapi_git_url", "github.com/theroyallab/tabbyAPI", "not a URL"),
    ("tabbyapi_pip_extras", ["cu121"], "dependency set"),
    ("tabbyapi_pip_extras", ["cu12", "cu13"], "not both"),
    ("tabbyapi_pip_extras", ["extras"], "add cu12"),
    ("tabbyapi_pip_extras", [], "add cu12"),
    ("tabbyapi_config_overrides", {"developer": {"unsafe_launch": True}}, "lab_unsafe_launch"),
    ("tabbyapi_max_seq_len", 0, "0 is no context"),
    ("tabbyapi_cache_size", 1000, "not a multiple of 256"),
    ("tabbyapi_gpu_split", [0, 12], "more than 0 GB"),
    ("tabbyapi_gpu_split", [20, 20], "gpu_split_auto is True"),
    ("tabbyapi_autosplit_reserve", [-1], "cannot be negative"),
    ("tabbyapi_tensor_parallel_backend", "nccl", "only with tensor_parallel"),
    ("tabbyapi_config_overrides", {"network": {"disable_auth": True}}, "disable_auth is refused"),
    ("tabbyapi_config_overrides", {"network": {"disable_auth": False}}, "disable_auth is refused"),
    ("tabbyapi_config_overrides", {"netwrok": {"port": 1}}, "unknown config.yml section"),
    ("tabbyapi_install_dir", "opt/tabbyapi", "not an absolute path"),
    ("tabbyapi_draft_mode", "eagle", "is not one of"),
    ("tabbyapi_hf_token_required", True, "secret hf_token is missing"),
]


@pytest.mark.parametrize(("key", "value", "fragment"), BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_bad_values_are_refused_naming_the_key(key, value, fragment):
    message = problems({key: value})
    assert f"- {key}: " in message and fragment in message, message


def test_cache_size_below_the_context_is_refused():
    message = problems({"tabbyapi_max_seq_len": 32768, "tabbyapi_cache_size": 16384})
    assert "less than max_seq_len" in message


def test_tensor_parallel_over_one_gpu_is_refused():
    message = problems({"tabbyapi_tensor_parallel": True, "tabbyapi_gpu_split": [24]})
    assert "needs several GPUs" in message


def test_hf_token_required_is_satisfied_by_the_secret(monkeypatch):
    monkeypatch.setenv("AICODER_HF_TOKEN", "hf_example")
    assert settings(hf_token_required=True).hf_token_required


@pytest.mark.parametrize(
    "cache", ["FP16", "Q8", "Q6", "Q4", "8,8", "4,6", "2, 8"], ids=lambda c: repr(c)
)
def test_every_upstream_cache_mode_is_accepted(cache):
    assert settings(cache_mode=cache).cache_mode == cache


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/theroyallab/tabbyAPI",
        "/srv/mirrors/tabbyAPI.git",
        "file:///srv/mirrors/tabbyAPI.git",
        "git@github.com:theroyallab/tabbyAPI.git",
        None,
    ],
)
def test_git_sources_a_mirror_or_none(url):
    assert settings(git_url=url).git_url == url


# --- model folders -------------------------------------------------------------------------------


def test_model_folder_is_derived_from_repo_and_revision():
    assert model_folder("turboderp/Qwen3-8B-exl3", "4.0bpw") == "Qwen3-8B-exl3-4.0bpw"
    assert model_folder("turboderp/Qwen3-8B-exl3", "main") == "Qwen3-8B-exl3"
    s = settings(model_repo="o/M-exl3", model_revision="6.0bpw", draft_model_repo="o/D-exl3")
    assert s.downloads() == [
        ("o/M-exl3", "6.0bpw", "M-exl3-6.0bpw"),
        ("o/D-exl3", "main", "D-exl3"),
    ]
    assert settings(model_repo="o/M", model_name="mine").model == "mine"
    assert settings(model_repo=None).downloads() == [] and settings(model_repo=None).model == ""


# --- config.yml ----------------------------------------------------------------------------------


def test_config_yml_typical():
    text = render.config_yml(settings(), "192.168.1.20")
    config = yaml.safe_load(text)
    assert text.startswith("# Managed by the ai-coding-server deploy")
    assert config["network"] == {
        "host": "192.168.1.20",
        "port": 5000,
        "api_servers": ["OAI"],
        "disable_auth": False,
    }
    model = config["model"]
    assert model["model_dir"] == "/var/lib/tabbyapi/models"
    assert model["model_name"] == "Qwen_Qwen3-Coder-30B-A3B-Instruct-EXL3-4.0bpw_H6"
    assert model["max_seq_len"] == 32768
    assert model["cache_mode"] == "8,8"  # stays a string: upstream's pattern is [2-8],[2-8]
    assert "cache_size" not in model  # None: tabbyAPI's default (max_seq_len)
    assert config["draft_model"] == {
        "draft_mode": "model",
        "draft_model_dir": "/var/lib/tabbyapi/models",
        "draft_cache_mode": "FP16",
        "draft_gpu_split": [],
    }
    assert config["logging"] == {
        "log_prompt": False,
        "log_generation_params": False,
        "log_requests": False,
    }


def test_config_yml_draft_model_and_several_gpus():
    s = settings(
        draft_model_repo="turboderp/Qwen3-0.6B-exl3",
        draft_model_revision="4.0bpw",
        draft_cache_mode="Q4",
        gpu_split_auto=False,
        gpu_split=[20.5, 23],
        autosplit_reserve=[96, 0],
        tensor_parallel=True,
        tensor_parallel_backend="nccl",
        draft_gpu_split=[1, 1],
        cache_size=65536,
        cache_mode="Q6",
        max_seq_len=-1,
    )
    config = render.config(s, "10.0.0.5")
    assert config["model"]["gpu_split"] == [20.5, 23]
    assert config["model"]["gpu_split_auto"] is False
    assert config["model"]["tensor_parallel"] is True
    assert config["model"]["tensor_parallel_backend"] == "nccl"
    assert config["model"]["autosplit_reserve"] == [96, 0]
    assert config["model"]["cache_size"] == 65536 and config["model"]["max_seq_len"] == -1
    assert config["draft_model"]["draft_model_name"] == "Qwen3-0.6B-exl3-4.0bpw"
    assert config["draft_model"]["draft_cache_mode"] == "Q4"
    assert config["draft_model"]["draft_gpu_split"] == [1, 1]


def test_config_without_a_model_starts_empty_and_overrides_merge():
    s = settings(
        model_repo=None,
        max_seq_len=None,
        config_overrides={
            "model": {"chunk_size": 1024},
            "sampling": {"override_preset": None},
            "network": {"send_tracebacks": False},
        },
    )
    config = render.config(s, "127.0.0.1")
    assert "model_name" not in config["model"] and "max_seq_len" not in config["model"]
    assert config["model"]["chunk_size"] == 1024
    assert config["sampling"] == {"override_preset": None}
    assert config["network"]["send_tracebacks"] is False
    assert config["network"]["disable_auth"] is False


def test_config_yml_is_dumped_data_not_a_template():
    """Values YAML would misread (a colon, a leading '*', quotes) come out as the same value."""
    s = settings(model_name="a_b", config_overrides={"model": {"prompt_template": "x: *y 'z'"}})
    assert yaml.safe_load(render.config_yml(s, "::1"))["model"]["prompt_template"] == "x: *y 'z'"


# --- api_tokens.yml, unit, log rotation ---------------------------------------------------------


def test_api_tokens_yml_holds_both_keys():
    text = render.api_tokens_yml("k-api", "k-admin")
    assert yaml.safe_load(text) == {"api_key": "k-api", "admin_key": "k-admin"}


def unit_fields(text: str) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            fields.setdefault(key, []).append(value)
    return fields


def test_unit_runs_main_py_in_the_current_release_and_keeps_the_keys_out_of_the_journal():
    fields = unit_fields(render.unit(settings()))
    assert fields["WorkingDirectory"] == ["/opt/tabbyapi/current/src"]
    assert fields["ExecStart"] == ["/opt/tabbyapi/current/venv/bin/python main.py"]
    assert fields["User"] == ["tabbyapi"] and fields["Group"] == ["tabbyapi"]
    assert fields["Restart"] == ["on-failure"]
    assert fields["WantedBy"] == ["multi-user.target"]
    assert fields["StandardOutput"] == ["append:/var/log/tabbyapi/tabbyapi.log"]
    assert fields["StandardError"] == ["inherit"]
    assert fields["UMask"] == ["0077"]
    assert fields["ConditionPathExists"] == ["/opt/tabbyapi/current/src/main.py"]
    assert fields["ReadWritePaths"] == ["/var/lib/tabbyapi /var/log/tabbyapi"]


def test_unit_loads_nvidia_uvm_as_root_and_lets_cuda_run_nvidia_modprobe():
    """CUDA creates /dev/nvidia-uvm* with the setuid nvidia-modprobe after a cold boot:
    NoNewPrivileges would block it. The module is loaded as root ("+") before the start, and a
    guest without it ("-": no driver yet) still starts."""
    fields = unit_fields(render.unit(settings()))
    assert fields["ExecStartPre"] == ["-+/sbin/modprobe -q nvidia-uvm"]
    assert "NoNewPrivileges" not in fields


def test_release_folders_are_named_by_ref_and_extras():
    s = settings(git_ref="feature/x", pip_extras=["extras", "cu12"])
    assert s.release_dir == "/opt/tabbyapi/releases/feature_x+cu12-extras"
    assert s.src == s.release_dir + "/src" and s.venv == s.release_dir + "/venv"
    assert s.lock == "/opt/tabbyapi/locks/feature_x+cu12-extras.txt"
    base = settings(pip_extras=[], lab_unsafe_launch=True)
    assert base.release.endswith("+base") and not base.check()


def test_the_lab_cpu_launch_is_off_by_default_and_written_only_when_set():
    assert TabbyapiSettings().lab_unsafe_launch is False
    assert "developer" not in render.config(settings(), "127.0.0.1")
    lab = render.config(settings(pip_extras=[], lab_unsafe_launch=True), "127.0.0.1")
    assert lab["developer"] == {"unsafe_launch": True}


def test_unit_lets_the_service_write_a_model_dir_outside_its_home():
    fields = unit_fields(render.unit(settings(model_dir="/srv/models", user="tabby")))
    assert fields["ReadWritePaths"] == ["/var/lib/tabby /var/log/tabbyapi /srv/models"]
    assert fields["Environment"] == ["HF_HOME=/var/lib/tabby/.cache/huggingface"]


def test_logrotate_truncates_in_place_as_the_service_user():
    text = render.logrotate(settings())
    assert "/var/log/tabbyapi/tabbyapi.log {" in text
    assert "copytruncate" in text and "su tabbyapi tabbyapi" in text


# --- the install fact ----------------------------------------------------------------------------


def test_install_fact_parses_a_converged_guest():
    state = parse_state(
        [
            "head e632af41eba68abeadc3437c62674360f2f8cbf1",
            "ref e632af41eba68abeadc3437c62674360f2f8cbf1",
            "origin https://github.com/theroyallab/tabbyAPI",
            "installed e632af41eba68abeadc3437c62674360f2f8cbf1 cu12",
            "python 3.11",
            "gpus 2",
            "user yes",
            "current /opt/tabbyapi/releases/abc+cu12",
            "locked yes",
            "model M-exl3-4.0bpw o/M-exl3@4.0bpw",
            "model Mine ",
        ]
    )
    assert state.head == state.ref and state.installed.endswith(" cu12")
    assert state.python == (3, 11) and state.gpus == 2 and state.user_exists
    assert state.current == "/opt/tabbyapi/releases/abc+cu12" and state.locked
    assert state.models == {"M-exl3-4.0bpw": "o/M-exl3@4.0bpw", "Mine": ""}


def test_install_fact_parses_a_fresh_guest():
    lines = ["head", "ref", "origin", "installed", "current", "locked no", "python 3.11", "gpus 0"]
    state = parse_state([*lines, "user no"])
    assert not state.head and not state.installed and not state.user_exists and not state.models
    assert not state.current and not state.locked


def test_every_option_a_setting_writes_is_refused_as_an_override():
    """OWNED_OPTIONS must name each config.yml option render.config fills from a setting, or an
    override of it would bypass that setting's checks."""
    settings = TabbyapiSettings(draft_model_repo="owner/draft")  # every optional option set
    written = render.config(settings, "127.0.0.1")
    deploy_owned = {("network", "api_servers"), ("network", "disable_auth")}
    for section in ("network", "model", "draft_model"):
        for option in written[section]:
            if (section, option) not in deploy_owned:
                assert (section, option) in OWNED_OPTIONS, (section, option)


def test_tool_format_follows_the_model_family_so_tool_calls_are_parsed():
    """The generated config.yml set no tool_format: tabbyAPI then returns a model's tool calls
    as plain text and Continue's agent mode gets no tool_calls."""
    default = render.config(settings(), "127.0.0.1")["model"]
    assert default["tool_format"] == "qwen3_coder"  # the default model is Qwen3-Coder
    other = settings(model_repo="someone/Qwen2.5-Coder-32B-Instruct-exl3", tool_format="auto")
    assert other.tool_calls == "" and "tool_format" not in render.config(other, "::1")["model"]
    assert settings(model_repo="someone/Devstral-exl3", tool_format="mistral").tool_calls == (
        "mistral"
    )
    assert "tool_format" not in render.config(settings(tool_format=""), "::1")["model"]
    message = problems({"tabbyapi_tool_format": "hermes"})
    assert "tabbyapi_tool_format" in message and "'qwen3_coder'" in message


@pytest.mark.parametrize("extras", [["cu12"], []])
def test_install_stamp_survives_the_probes_shell_round_trip(extras):
    """The probe reads the stamp back as `echo installed $(cat stamp)`, which drops trailing
    blanks: with no extras (the lab's CPU-only launch) a stamp ending in a blank never matched,
    and every run reinstalled tabbyAPI's dependencies and restarted it."""
    import subprocess

    from roles.tabbyapi import install_stamp

    wanted = settings(pip_extras=extras, lab_unsafe_launch=not extras)
    stamp = install_stamp(wanted)
    read_back = subprocess.run(
        [
            "sh",
            "-c",
            'f=$(mktemp); printf "%s\\n" "$1" > "$f"; echo installed $(cat "$f"); rm "$f"',
            "-",
            stamp,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert parse_state(read_back.splitlines()).installed == stamp
