"""The client role's settings and the Continue config it renders, checked with Continue's own
schema package (@continuedev/config-yaml, run by Node.js from tests/node)."""

from __future__ import annotations

import os

import pytest
import yaml
from continue_validator import validate

from roles.client import config_paths
from roles.client.render import Api, Deployment, Served, config_yaml
from roles.client.settings import ClientSettings

DEFAULTS = ClientSettings.problems_in({})[0]
CHAT_ROLES = ("chat", "edit", "apply")


def tabbyapi(host: str) -> Api:
    return Api("tabbyAPI", "openai", f"http://{host}:5000/v1", "TABBYAPI_API_KEY")


def ollama(host: str) -> Api:
    return Api("Ollama", "ollama", f"http://{host}:11434")


# Deployments the client can meet: the roles' defaults, a planned split, Ollama only, IPv6.
DEPLOYMENTS = {
    "defaults": Deployment(
        "ai-guest",
        (
            Served(
                tabbyapi("192.168.1.50"),
                "Qwen_Qwen3-Coder-30B-A3B-Instruct-EXL3-4.0bpw_H6",
                (*CHAT_ROLES, "autocomplete"),
                32768,
                tools=True,
            ),
            Served(ollama("192.168.1.50"), "nomic-embed-text", ("embed",)),
        ),
    ),
    "planned-split": Deployment(
        "gpu-guest",
        (
            Served(ollama("10.0.0.7"), "nomic-embed-text", ("embed",)),
            Served(ollama("10.0.0.7"), "qwen2.5-coder:1.5b-base-q8_0", ("autocomplete",), 4096),
            Served(
                tabbyapi("10.0.0.7"),
                "Qwen_Qwen3-Coder-30B-A3B-Instruct-EXL3-5.0bpw_H6",
                CHAT_ROLES,
                16384,
                True,
            ),
        ),
    ),
    "ollama-only": Deployment(
        "small",
        (
            Served(
                ollama("small"),
                "qwen2.5-coder:32b-instruct-q4_K_M",
                (*CHAT_ROLES, "autocomplete"),
                16384,
                tools=True,
            ),
            Served(ollama("small"), "nomic-embed-text", ("embed",)),
        ),
    ),
    "ipv6": Deployment(
        "v6",
        (Served(tabbyapi("[fd00::7]"), "model", (*CHAT_ROLES, "autocomplete")),),
    ),
}
OPTIONS = {
    "defaults": DEFAULTS.autocomplete_options,
    "tuned": {
        "debounceDelay": 150,
        "maxPromptTokens": 2048,
        "prefixPercentage": 0.4,
        "onlyMyCode": False,
        "useCache": True,
    },
}


def rendered(deployment="defaults", options="defaults", name="AI coding server") -> str:
    return config_yaml(DEPLOYMENTS[deployment], name, OPTIONS[options])


# --- settings ---------------------------------------------------------------------------------

BAD = [
    ("client_config_path", "continue/config.yaml", "neither absolute nor under ~/"),
    ("client_config_path", "~/.continue/config.json", "not a .yaml file"),
    ("client_api_host", "http://x", "host name or IP address"),
    ("client_name", "", "must not be empty"),
    ("client_autocomplete_options", {"debounce": 1}, "not a Continue autocompleteOptions key"),
    ("client_autocomplete_options", {"modelTimeout": "1s"}, "must be int"),
    ("client_autocomplete_options", {"onlyMyCode": 1}, "must be bool"),
    ("client_autocomplete_options", {"prefixPercentage": True}, "must be a number"),
    ("client_guest", 3, "expected a string"),
    ("client_model_roles", {"m": ["chitchat"]}, "'chitchat' is not a Continue role"),
    ("client_model_roles", {"m": "chat"}, "expected a dict of a string to a list of a string"),
]


@pytest.mark.parametrize(("key", "value", "fragment"), BAD)
def test_bad_client_settings_name_the_key(key, value, fragment):
    _, problems = ClientSettings.problems_in({key: value})
    assert [k for k, _ in problems] == [key] and fragment in problems[0][1]


def test_defaults_are_valid_and_documented():
    assert DEFAULTS.config_path == "~/.continue/config.yaml"
    assert all(doc for _, _, doc in ClientSettings.docs())


def test_paths_expand_home_and_the_env_is_always_continues_own():
    assert config_paths(DEFAULTS, "/home/me") == (
        "/home/me/.continue/config.yaml",
        "/home/me/.continue/.env",
    )
    # Continue reads secrets from ~/.continue/.env only (core/config/yaml/LocalPlatformClient.ts:
    # ~/.continue/.env, then a workspace's .continue/.env and .env): never one beside a config
    # kept elsewhere, such as a local assistant in ~/.continue/assistants/.
    for path in ("~/.continue/assistants/aicoder.yaml", "/home/me/editor/a.yaml"):
        custom = ClientSettings.problems_in({"client_config_path": path})[0]
        assert config_paths(custom, "/home/me") == (
            path.replace("~", "/home/me"),
            "/home/me/.continue/.env",
        )


# --- rendering --------------------------------------------------------------------------------


def test_config_has_schema_v1_and_chat_model_first():
    config = yaml.safe_load(rendered("planned-split"))
    assert {k: config[k] for k in ("name", "version", "schema")} == {
        "name": "AI coding server",
        "version": "1.0.0",
        "schema": "v1",
    }
    assert [m["roles"] for m in config["models"]] == [
        list(CHAT_ROLES),
        ["embed"],
        ["autocomplete"],
    ]


def test_tabbyapi_is_openai_with_the_key_as_a_secret_reference():
    (tabby, ollama) = yaml.safe_load(rendered())["models"]
    assert tabby["provider"] == "openai" and tabby["apiBase"] == "http://192.168.1.50:5000/v1"
    assert tabby["apiKey"] == "${{ secrets.TABBYAPI_API_KEY }}"
    assert ollama["provider"] == "ollama" and "apiKey" not in ollama
    assert ollama["apiBase"] == "http://192.168.1.50:11434"


def test_autocomplete_options_only_on_the_autocomplete_model_and_context_on_llms():
    models = yaml.safe_load(rendered("planned-split", "tuned"))["models"]
    options = {m["model"]: m.get("autocompleteOptions") for m in models}
    assert options["qwen2.5-coder:1.5b-base-q8_0"] == OPTIONS["tuned"]
    assert options["nomic-embed-text"] is None
    contexts = {m["model"]: m.get("defaultCompletionOptions") for m in models}
    assert contexts["nomic-embed-text"] is None
    assert contexts["qwen2.5-coder:1.5b-base-q8_0"] == {"contextLength": 4096}


def test_rendering_is_stable():
    assert rendered("planned-split", "tuned") == rendered("planned-split", "tuned")


# --- Continue's own schema --------------------------------------------------------------------


def test_every_rendered_config_passes_continues_schema(tmp_path):
    files = []
    for deployment in DEPLOYMENTS:
        for options in OPTIONS:
            path = tmp_path / f"{deployment}-{options}.yaml"
            path.write_text(rendered(deployment, options, name=f"test {deployment}"))
            files.append(path)
    code, messages = validate(*files)
    assert code == 0, messages


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c.pop("version"), "version"),
        (lambda c: c["models"][0].update(rolez=["chat"]), "unknown key $.models[0].rolez"),
        (lambda c: c["models"][0].update(roles=["chitchat"]), "models.0: Invalid input"),
        (lambda c: c["models"][0]["autocompleteOptions"].update(debounce=1), "debounce"),
    ],
)
def test_the_schema_check_catches_broken_configs(tmp_path, change, expected):
    config = yaml.safe_load(rendered())
    change(config)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    code, messages = validate(path)
    assert code == 1 and expected in messages, messages


def test_tool_use_is_offered_only_for_models_whose_server_parses_tool_calls():
    config = yaml.safe_load(rendered())
    chat, embed = config["models"]
    assert chat["capabilities"] == ["tool_use"]  # agent mode sends this model tools
    assert "capabilities" not in embed
    no_parser = yaml.safe_load(rendered("ipv6"))["models"][0]  # tabbyAPI without a tool format
    assert "capabilities" not in no_parser
    ollama_chat = yaml.safe_load(rendered("ollama-only"))["models"][0]
    assert ollama_chat["capabilities"] == ["tool_use"]
    split = {m["model"]: m for m in yaml.safe_load(rendered("planned-split"))["models"]}
    assert "capabilities" not in split["qwen2.5-coder:1.5b-base-q8_0"]  # autocomplete only


def test_codebase_context_is_offered_when_an_embed_model_is_served():
    providers = [c["provider"] for c in yaml.safe_load(rendered())["context"]]
    assert "codebase" in providers and "folder" in providers and "code" in providers
    without = [c["provider"] for c in yaml.safe_load(rendered("ipv6"))["context"]]
    assert "codebase" not in without and "folder" not in without and "diff" in without


class _LocalClient:
    """The @local client host as host_problems sees it: its data and its home folder."""

    name = "@local"

    def __init__(self, data: dict, home: str):
        self.data = type("Data", (), {"dict": lambda _self: dict(data)})()
        self._home = home

    def get_fact(self, _fact):
        return self._home


def test_a_continue_folder_the_user_cannot_write_is_refused_wherever_the_config_goes(
    tmp_path, monkeypatch
):
    """The keys go to ~/.continue/.env even when config_path is elsewhere: an unwritable
    ~/.continue failed only once the run wrote there. (os.access answers as a non-root user
    would: root writes anywhere.)"""
    from roles.client import host_problems

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / ".continue").mkdir()
    locked = str(tmp_path / ".continue")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: path != locked and real_access(path, mode))
    client = _LocalClient({"client_config_path": "~/elsewhere/config.yaml"}, str(tmp_path))
    found = host_problems(client)
    assert found and f"{locked} (on the way to {locked}/.env)" in found[0], found
    monkeypatch.setattr(os, "access", real_access)
    assert host_problems(client) == []
