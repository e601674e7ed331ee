"""Plan tests of the client role: the real deploy.py on the control machine's host (@fake
stands in for @local) with an AI guest in the inventory, through pyinfra's own connect/run."""

from __future__ import annotations

import hashlib
import posixpath
from typing import Any

import pytest
import yaml
from harness import ROOT, Plan, _text
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.operations import run_ops
from pyinfra.context import ctx_state
from pyinfra.facts.files import Directory, File, Sha1File
from pyinfra.facts.server import Home
from pyinfra_cli.util import load_deploy_file

from roles.client.facts import SecretLine
from roles.common import registry
from roles.common.services import PrimaryAddress

KEY = "0123456789abcdef0123456789abcdef0123456789abcdef"
HOME = "/home/dev"
CONFIG = f"{HOME}/.continue/config.yaml"
ENV = f"{HOME}/.continue/.env"
CLIENT = "@fake/laptop"
# The guest without the TLS front door (plain HTTP, tabbyAPI's own key); the client behind the
# front door: tests/plan/test_proxy_plan.py.
GUEST_DATA = {"ssh_hostname": "192.168.1.50", "proxy_plain_http": True}


@pytest.fixture(autouse=True)
def api_key(monkeypatch, tmp_path):
    """The user's tabbyAPI key comes from the environment; no secrets file is written."""
    monkeypatch.setenv("AICODER_TABBYAPI_API_KEY", KEY)
    monkeypatch.setenv("AICODER_SECRETS_FILE", str(tmp_path / "secrets.yml"))


def run_client(
    responses: dict | None = None,
    client_data: dict | None = None,
    guests: dict[str, dict] | None = None,
    guest_responses: dict | None = None,
) -> Plan:
    """Run deploy.py for the client host only (as `--limit clients` would). The guests are in
    the inventory, and connected when ``guest_responses`` is given, but not deployed."""
    found = {str(Home().command()): HOME}
    found.update(responses or {})
    client = (CLIENT, {"fake_responses": found, "fake_delay": 0, "fake_delay_jitter": 0})
    guest_hosts = [
        (f"@fake/{name}", {"fake_responses": guest_responses or {}, "fake_delay": 0, **data})
        for name, data in (guests or {"guest": GUEST_DATA}).items()
    ]
    inventory = Inventory(
        ([client[0], *(name for name, _ in guest_hosts)], {}),
        clients=([client], client_data or {}),
        ai_guests=(guest_hosts, {}),
    )
    state = State(inventory, Config())
    state.limit_hosts = [inventory.get_host(CLIENT)]
    plan = Plan()
    with ctx_state.use(state):
        connect_all(state)
        if guest_responses is not None:
            for name, _ in guest_hosts:
                inventory.get_host(name).connect()
        try:
            load_deploy_file(state, str(ROOT / "deploy.py"))
        except Exception as error:
            plan.error = error
            return plan
        run_ops(state)
    host = inventory.get_host(CLIENT)
    for op_hash in state.get_op_order():
        meta = state.ops[host].get(op_hash)
        if meta and meta.operation_meta.is_complete() and meta.operation_meta.did_change():
            names = " | ".join(sorted(state.get_op_meta(op_hash).names))
            plan.changed.append((names, [_text(c, plan) for c in meta.operation_meta._commands]))
    return plan


def existing(path: str, content: str, mode: str = "-rw-r--r--") -> dict:
    """Fact responses of a file at ``path`` holding ``content``, in an existing folder."""
    folder = posixpath.dirname(path)
    return {
        str(Directory().command(path=folder)): (
            f"user=dev group=dev mode=drwx------ atime=0 mtime=0 ctime=0 size=4096 '{folder}'"
        ),
        str(File().command(path=path)): (
            f"user=dev group=dev mode={mode} atime=0 mtime=0 ctime=0 size={len(content)} '{path}'"
        ),
        str(Sha1File().command(path=path)): f"{hashlib.sha1(content.encode()).hexdigest()}  {path}",
    }


def env_holding(line: str, mode: str = "600") -> dict:
    digest = hashlib.sha256(line.encode()).hexdigest()
    return {str(SecretLine().command(path=ENV, variable="TABBYAPI_API_KEY")): [mode, f"{digest} -"]}


def config_of(plan: Plan) -> dict:
    return yaml.safe_load(plan.files[CONFIG])


def test_fresh_client_gets_config_pointing_at_the_guest_and_key_in_env():
    plan = run_client()
    assert plan.error is None, plan.error
    config = config_of(plan)
    assert config["schema"] == "v1" and config["name"] == "AI coding server"
    by_provider = {m["provider"]: m for m in config["models"]}
    tabby, ollama = by_provider["openai"], by_provider["ollama"]
    # tabbyAPI listens on the guest's LAN address ('auto'); the guest is not connected in this
    # run, so the address the control machine reaches it at is used.
    assert tabby["apiBase"] == "http://192.168.1.50:5000/v1"
    assert tabby["roles"] == ["chat", "edit", "apply", "autocomplete"]
    assert tabby["apiKey"] == "${{ secrets.TABBYAPI_API_KEY }}"
    assert tabby["model"] == "Qwen_Qwen3-Coder-30B-A3B-Instruct-EXL3-4.0bpw_H6"
    assert tabby["defaultCompletionOptions"] == {"contextLength": 32768}
    assert tabby["autocompleteOptions"]["modelTimeout"] == 1000
    assert ollama == {
        "name": "nomic-embed-text (Ollama)",
        "provider": "ollama",
        "model": "nomic-embed-text",
        "apiBase": "http://192.168.1.50:11434",
        "roles": ["embed"],
    }
    assert not plan.find(r"cp -p")  # nothing to back up


def test_the_key_is_only_in_env_and_masked_in_every_command():
    plan = run_client()
    assert KEY not in plan.files[CONFIG]
    assert not [c for c in plan.commands if KEY in c]
    (write,) = plan.find(r"TABBYAPI_API_KEY")
    assert "*MASKED*" in write and "umask 077" in write and "chmod 600" in write
    assert write.endswith(f"mv {ENV}.tmp {ENV}")


def test_converged_client_plans_nothing():
    fresh = run_client()
    converged = {
        **existing(CONFIG, fresh.files[CONFIG]),
        **env_holding(f"TABBYAPI_API_KEY={KEY}\n"),
    }
    assert run_client(converged).changed == []


def test_a_different_config_is_backed_up_before_it_is_replaced():
    plan = run_client(existing(CONFIG, "name: mine\n"))
    names = plan.names()
    (config_op,) = [n for n in names if n.startswith("Client: Continue config | Continue config")]
    commands = dict(plan.changed)[config_op]
    assert commands[0].startswith(f"cp -p {CONFIG} {CONFIG}.") and commands[0].endswith(".bak")
    assert commands[1] == f"upload {CONFIG}"


def test_env_with_the_key_but_loose_mode_only_gets_chmod():
    fresh = run_client()
    plan = run_client(
        {**existing(CONFIG, fresh.files[CONFIG]), **env_holding(f"TABBYAPI_API_KEY={KEY}\n", "644")}
    )
    assert plan.commands == [f"chmod 600 {ENV}"]


def test_a_changed_key_rewrites_only_that_line():
    plan = run_client(env_holding("TABBYAPI_API_KEY=old\n"))
    (write,) = plan.find(r"TABBYAPI_API_KEY")
    assert f"grep -v '^TABBYAPI_API_KEY=' {ENV}" in write


def test_config_path_is_a_setting():
    plan = run_client(client_data={"client_config_path": "/home/dev/editor/continue.yaml"})
    assert "/home/dev/editor/continue.yaml" in plan.files
    assert plan.find(r"> /home/dev/\.continue/\.env\.tmp")  # the .env Continue reads
    assert not plan.find(r"/home/dev/editor/\.env")


def test_auto_is_reached_at_the_ssh_address_behind_the_firewall_else_the_bound_one():
    address = {str(PrimaryAddress().command()): "route 10.0.0.7"}
    # Behind the firewall 'auto' binds every address: the one the deploy reaches the guest at.
    plan = run_client(guest_responses=address)
    urls = {m["apiBase"] for m in config_of(plan)["models"]}
    assert urls == {"http://192.168.1.50:5000/v1", "http://192.168.1.50:11434"}
    # Without it, 'auto' binds the guest's (static) primary address: the config follows.
    unfiltered = {"guest": {**GUEST_DATA, "firewall_enabled": False}}
    plan = run_client(guests=unfiltered, guest_responses=address)
    urls = {m["apiBase"] for m in config_of(plan)["models"]}
    assert urls == {"http://10.0.0.7:5000/v1", "http://10.0.0.7:11434"}


def test_client_api_host_wins_and_an_explicit_bind_address_is_used():
    plan = run_client(
        guests={"guest": {**GUEST_DATA, "tabbyapi_host": "10.1.2.3", "ollama_port": 11500}},
    )
    urls = {m["provider"]: m["apiBase"] for m in config_of(plan)["models"]}
    assert urls == {"openai": "http://10.1.2.3:5000/v1", "ollama": "http://192.168.1.50:11500"}
    plan = run_client(client_data={"client_api_host": "localhost"})
    assert {m["apiBase"] for m in config_of(plan)["models"]} == {
        "http://localhost:5000/v1",
        "http://localhost:11434",
    }


def test_a_service_bound_to_loopback_is_refused_with_the_fix():
    plan = run_client(guests={"guest": {**GUEST_DATA, "ollama_bind_address": "127.0.0.1"}})
    assert "ollama_bind_address is 127.0.0.1" in str(plan.error)
    assert "client_api_host" in str(plan.error)


def test_two_guests_need_client_guest():
    guests = {"a": {"ssh_hostname": "10.0.0.1"}, "b": {"ssh_hostname": "10.0.0.2"}}
    plan = run_client(guests=guests)
    assert "set client_guest" in str(plan.error) and "@fake/a, @fake/b" in str(plan.error)
    plan = run_client(guests=guests, client_data={"client_guest": "@fake/b"})
    assert {m["apiBase"] for m in config_of(plan)["models"]} == {  # b's TLS front door
        "https://10.0.0.2:8443/tabbyapi/v1",
        "https://10.0.0.2:8443/ollama/",
    }
    plan = run_client(guests=guests, client_data={"client_guest": "c"})
    assert "'c' is not in the ai_guests group; set it to one of @fake/a, @fake/b" in str(plan.error)


def test_disabled_tabbyapi_leaves_only_ollama_models():
    plan = run_client(guests={"guest": {**GUEST_DATA, "tabbyapi_enabled": False}})
    assert [m["provider"] for m in config_of(plan)["models"]] == ["ollama"]


def test_only_a_served_api_with_a_key_gets_a_line_in_env():
    plan = run_client(guests={"guest": {**GUEST_DATA, "tabbyapi_enabled": False}})
    assert plan.error is None, plan.error
    assert not plan.find(r"TABBYAPI_API_KEY")  # Ollama has no key; tabbyAPI is not served


def test_a_front_before_a_service_is_what_the_config_points_at(monkeypatch):
    """A proxy registered as a front (TLS, say) publishes tabbyAPI under its own host name,
    scheme and port: the config follows without an edit to the client."""

    def front(endpoint, settings_of):
        if endpoint.service != "tabbyapi":
            return endpoint
        return registry.fronted(endpoint, scheme="https", port=8443, public_host="ai.example.lan")

    monkeypatch.setattr(registry, "_fronts", lambda: (front,))
    urls = {m["provider"]: m["apiBase"] for m in config_of(run_client())["models"]}
    assert urls == {
        "openai": "https://ai.example.lan:8443/v1",
        "ollama": "http://192.168.1.50:11434",
    }


def test_planned_guest_gets_the_planned_models_and_roles():
    guest = {
        **GUEST_DATA,
        "planner_chat_model": "qwen3-coder-30b-a3b",
        "planner_autocomplete_model": "qwen2.5-coder-1.5b-base",
        "planner_vram_gib": 24.0,
    }
    models = {m["model"]: m for m in config_of(run_client(guests={"guest": guest}))["models"]}
    chat = models.pop("Qwen_Qwen3-Coder-30B-A3B-Instruct-EXL3-5.0bpw_H6")
    assert chat["roles"] == ["chat", "edit", "apply"]
    assert chat["defaultCompletionOptions"] == {"contextLength": 16384}
    assert models["qwen2.5-coder:1.5b-base-q8_0"]["roles"] == ["autocomplete"]
    assert models["qwen2.5-coder:1.5b-base-q8_0"]["provider"] == "ollama"
    assert models["nomic-embed-text"]["roles"] == ["embed"]


def test_model_roles_override_the_derived_ones():
    guest = {**GUEST_DATA, "ollama_models": ["nomic-embed-text", "qwen2.5-coder:1.5b-base-q8_0"]}
    plan = run_client(guests={"guest": guest})
    assert [m["model"] for m in config_of(plan)["models"]][1:] == ["nomic-embed-text"]
    roles = {
        "qwen2.5-coder:1.5b-base-q8_0": ["autocomplete"],
        "Qwen_Qwen3-Coder-30B-A3B-Instruct-EXL3-4.0bpw_H6": ["chat", "edit", "apply"],
        "nomic-embed-text": [],
    }
    plan = run_client(guests={"guest": guest}, client_data={"client_model_roles": roles})
    found = {m["model"]: m["roles"] for m in config_of(plan)["models"]}
    assert found == {k: v for k, v in roles.items() if v}


def test_bad_client_settings_stop_before_anything():
    plan = run_client(client_data={"client_config_path": "relative/config.yaml"})
    assert "client_config_path" in str(plan.error) and plan.changed == []


def test_configs_the_deploy_writes_pass_continues_schema(tmp_path):
    from continue_validator import validate

    planned: dict[str, Any] = {
        **GUEST_DATA,
        "planner_chat_model": "qwen2.5-coder-7b",
        "planner_autocomplete_model": "qwen2.5-coder-1.5b-base",
        "planner_vram_gib": 12.0,
        "tabbyapi_model_repo": "me/Qwen2.5-Coder-7B-Instruct-exl3",
        "tabbyapi_model_revision": "8.0bpw",
    }
    files = []
    for name, guest in {"defaults": GUEST_DATA, "planned": planned}.items():
        plan = run_client(guests={"guest": guest})
        assert plan.error is None, plan.error
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(plan.files[CONFIG])
    code, messages = validate(*files)
    assert code == 0, messages


def test_the_config_uses_the_tool_parser_and_the_embeddings_the_guest_has():
    models = {m["provider"]: m for m in config_of(run_client())["models"]}
    # tabbyAPI's default model is Qwen3-Coder, whose tool calls it parses (tool_format).
    assert models["openai"]["capabilities"] == ["tool_use"]
    assert "capabilities" not in models["ollama"]  # nomic-embed-text: embeddings only
    assert "codebase" in [c["provider"] for c in config_of(run_client())["context"]]
    no_parser = {**GUEST_DATA, "tabbyapi_tool_format": ""}
    plain = config_of(run_client(guests={"guest": no_parser}))["models"]
    assert all("capabilities" not in m for m in plain)
