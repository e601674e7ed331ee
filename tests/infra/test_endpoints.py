"""End-to-end checks from the control machine, where the editor runs: the APIs the Continue
config points at answer as Continue needs them to.

For each AI guest: every registered service (roles/common/registry.py) that runs there answers
its health path at the address the editor uses, and one that takes a key refuses a request
without it and lists its models with it; tabbyAPI completes a short prompt; Ollama returns an
embedding of the expected dimension. When
a clients host (@local) is in the inventory, the config.yaml and .env the deploy wrote there are
the current ones, and each model in that config answers at its apiBase with the key from .env.

A service that is not on the guest at all (its source was unreachable: the lab's offline
settings) skips with that reason; one that is installed but cannot be reached from here fails.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest
import testinfra
import yaml
from typing_extensions import override

from roles.client import config_paths
from roles.client.deployed import (
    deployment,
    key_env,
    reach_address,
    served_endpoints,
)
from roles.client.render import Deployment, config_yaml
from roles.client.settings import ClientSettings
from roles.common import registry, secrets
from roles.planner.catalogue import EMBED_DIMENSIONS
from roles.proxy import pki

TIMEOUT = 10  # seconds for an API call; a completion gets longer
COMPLETION_TIMEOUT = 300


class GuestView:
    """What the client role reads from a pyinfra host, served from the inventory's data and,
    for facts, commands run on the guest through testinfra: the checks then compute the same
    addresses and models as the deploy."""

    def __init__(self, name: str, data: dict, testinfra_host):
        self.name = name
        self.groups = ("ai_guests",)  # the guest fixture's group
        self.data = _Data(data)
        self._host = testinfra_host
        self.connected = True

    def get_fact(self, fact_cls, **kwargs):
        fact = fact_cls()
        output = self._host.check_output(str(fact.command(**kwargs)))
        return fact.process(output.splitlines())


class _Data:
    def __init__(self, values: dict):
        self._values = dict(values)

    def dict(self) -> dict:
        return dict(self._values)

    def get(self, key, default=None):
        return self._values.get(key, default)

    @override
    def __setattr__(self, key, value):
        if key.startswith("_"):
            super().__setattr__(key, value)
        else:
            self._values[key] = value


def client_settings(inventory_hosts) -> ClientSettings:
    clients = inventory_hosts.get("clients", [])
    settings, problems = ClientSettings.problems_in(clients[0].data if clients else {})
    assert not problems, f"invalid client settings in the inventory: {problems}"
    return settings


def tls(cafile: str | None = None) -> ssl.SSLContext:
    """What the editor trusts: ``cafile`` (its caBundlePath), else the deploy's private CA when
    this machine keeps it (the TLS front door's), else the system's store."""
    kept = pki.ca_dir() / "ca.crt"
    return ssl.create_default_context(cafile=cafile or (str(kept) if kept.exists() else None))


def call(
    url: str,
    key: str | None = None,
    body: dict | None = None,
    timeout: float = TIMEOUT,
    cafile: str | None = None,
):
    """(HTTP status, parsed JSON or text) of a GET, or a POST of ``body``."""
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body else None)
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    context = tls(cafile) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def reachable(url: str, cafile: str | None = None) -> str | None:
    """None if something answers HTTP at ``url``, else why not."""
    try:
        call(url, timeout=5, cafile=cafile)
    except (urllib.error.URLError, OSError) as error:
        return str(getattr(error, "reason", error))
    return None


@pytest.fixture
def view(request, guest, host_data) -> GuestView:
    return GuestView(request.node.callspec.params["guest"].name, host_data, guest)


@pytest.fixture
def served(view, inventory_hosts) -> Deployment:
    """The models and URLs the deploy put into the Continue config for this guest."""
    return deployment(view, client_settings(inventory_hosts))


@pytest.fixture
def apis(view, inventory_hosts) -> dict[str, tuple[registry.Endpoint, str]]:
    """Registered service name -> (its public endpoint, its base URL as the editor reaches
    it) for every service enabled on this guest."""
    settings = client_settings(inventory_hosts)
    return {
        service.name: (endpoint, endpoint.base_url(reach_address(view, settings, endpoint), ""))
        for service, _, endpoint in served_endpoints(view, settings)
    }


def key_of(endpoint: registry.Endpoint) -> str:
    """The key ``endpoint`` wants, from the secrets the deploy used; skip without it."""
    key = secrets.get(endpoint.key_secret)
    if not key:
        pytest.skip(
            f"no {endpoint.key_secret} secret here ({secrets.secrets_file()}, or "
            f"AICODER_{endpoint.key_secret.upper()}): run the checks where the deploy ran, or "
            "set AICODER_SECRETS_FILE"
        )
    return key


def answering(apis, name: str, guest) -> str:
    """The base URL of the service ``name``, once it is known to be running on the guest: one
    that is off, or listens nowhere on the guest (not installed: its source or image was
    unreachable, e.g. the lab offline), skips; one that listens there but does not answer
    from here fails."""
    if name not in apis:
        pytest.skip(f"{name}_enabled is False: no {name} on this guest")
    endpoint, base = apis[name]
    own = endpoint.own
    if guest.run(f"ss -Htln 'sport = :{own.port}' | grep -q .").rc != 0:
        pytest.skip(
            f"nothing listens on {own.label}'s port {own.port} on the guest: not running there "
            "(its source or image was unreachable, e.g. the lab offline)"
        )
    why = reachable(base + endpoint.health_path)
    assert why is None, f"{endpoint.label} is running but {base} is unreachable: {why}"
    return base


@pytest.fixture
def tabbyapi(apis, guest) -> str:
    """tabbyAPI's OpenAI API base URL, once it is running on the guest."""
    return answering(apis, "tabbyapi", guest) + apis["tabbyapi"][0].api_path


def _gpu_reason(guest) -> str | None:
    if guest.run("nvidia-smi -L").rc != 0:
        return "no NVIDIA GPU usable on the guest (nvidia-smi fails): no model can be loaded"
    return None


@pytest.fixture
def ollama(apis, guest) -> str:
    """Ollama's base URL, once it is running on the guest (behind the TLS front door: its
    route, /ollama)."""
    return answering(apis, "ollama", guest) + apis["ollama"][0].provider_path.rstrip("/")


# --- every registered service --------------------------------------------------------------------


def test_every_service_answers_its_health_path(apis, guest):
    if not apis:
        pytest.skip("no registered service is enabled on this guest")
    for name in apis:
        answering(apis, name, guest)


def test_services_with_a_key_refuse_requests_without_it_and_list_models_with_it(apis, guest):
    keyed = {name: endpoint for name, (endpoint, _) in apis.items() if endpoint.auth == "bearer"}
    if not keyed:
        pytest.skip("no service of this guest takes a key")
    for name, endpoint in keyed.items():
        url = answering(apis, name, guest) + endpoint.api_path + "/models"
        for wrong in (None, "not-the-key"):
            status, _ = call(url, key=wrong)
            assert status in (401, 403), f"{endpoint.label} answered {status} without its key"
        status, body = call(url, key=key_of(endpoint))
        assert status == 200, body


# --- tabbyAPI -----------------------------------------------------------------------------------


def test_tabbyapi_lists_its_model_with_the_key(tabbyapi, apis, served):
    status, body = call(f"{tabbyapi}/models", key=key_of(apis["tabbyapi"][0]))
    assert status == 200, body
    ids = {m["id"] for m in body["data"]}
    wanted = {m.model for m in served.models if m.api.label == "tabbyAPI"}
    assert wanted <= ids, f"the config names {wanted}; tabbyAPI lists {ids}"


def test_tabbyapi_completes_a_short_prompt(tabbyapi, apis, served, guest):
    reason = _gpu_reason(guest)
    if reason:
        pytest.skip(reason)
    api_key = key_of(apis["tabbyapi"][0])
    models = [m.model for m in served.models if m.api.label == "tabbyAPI"]
    if not models:
        pytest.skip("tabbyAPI has no model configured (tabbyapi_model_repo/model_name unset)")
    (model,) = models
    body = {"model": model, "prompt": "def add(a, b):\n    return", "max_tokens": 8}
    status, result = call(f"{tabbyapi}/completions", api_key, body, COMPLETION_TIMEOUT)
    assert status == 200, result
    assert result["choices"][0]["text"].strip(), result


# --- Ollama ------------------------------------------------------------------------------------


def test_ollama_embeds_with_the_expected_dimension(ollama, apis, served):
    embedders = [m.model for m in served.models if m.api.label == "Ollama" and "embed" in m.roles]
    if not embedders:
        pytest.skip("no embedding model is configured for Continue on this guest")
    endpoint = apis["ollama"][0]
    key = key_of(endpoint) if endpoint.auth == "bearer" else None  # the front door's
    for model in embedders:
        status, tags = call(f"{ollama}/api/tags", key)
        names = {t["name"] for t in tags.get("models", [])}
        assert {model, f"{model}:latest"} & names, f"{model} is not pulled (have {names})"
        body = {"model": model, "input": "hello"}
        status, result = call(f"{ollama}/api/embed", key, body)
        assert status == 200, result
        (vector,) = result["embeddings"]
        expected = EMBED_DIMENSIONS.get(model.split(":")[0])
        assert len(vector) == expected if expected else vector, f"{model}: {len(vector)} values"


# --- the editor's files on the control machine ------------------------------------------------


@pytest.fixture
def written(client, inventory_hosts) -> tuple[str, str, ClientSettings]:
    """(config.yaml, .env, settings) the deploy wrote on the clients host."""
    settings = client_settings(inventory_hosts)
    config, env = config_paths(settings, client.check_output("echo ~"))
    if not client.file(config).exists:
        pytest.skip(f"{config} does not exist: the deploy has not run for the clients group yet")
    return config, env, settings


def _guest_of(settings: ClientSettings, inventory_hosts) -> GuestView:
    guests = inventory_hosts.get("ai_guests", [])
    chosen = [g for g in guests if g.name == settings.guest] if settings.guest else guests
    assert len(chosen) == 1, "client_guest names no single ai_guests host"
    return GuestView(chosen[0].name, chosen[0].data, testinfra.get_host(chosen[0].spec))


def test_continue_config_is_current_and_its_key_private(client, written, inventory_hosts):
    config, env, settings = written
    view = _guest_of(settings, inventory_hosts)
    current = yaml.safe_load(client.file(config).content_string)
    # The CA file beside the config (the TLS front door's), at the client's own path.
    ca = {m.get("requestOptions", {}).get("caBundlePath", "") for m in current["models"]}
    served = deployment(view, settings, max(ca, default=""))
    expected = config_yaml(served, settings.name, settings.autocomplete_options)
    assert client.file(config).content_string == expected, (
        f"{config} differs from what the deploy writes now: re-run the deploy"
    )
    assert client.file(env).mode == 0o600
    text = client.file(env).content_string
    for _, _, endpoint in served_endpoints(view, settings):
        variable = key_env(endpoint)
        if not variable:
            continue
        lines = [line for line in text.splitlines() if line.startswith(f"{variable}=")]
        assert len(lines) == 1, f"{env} must hold one {variable}= line"
        key = secrets.get(endpoint.key_secret)
        if key:  # compared, never printed
            assert lines[0] == f"{variable}={key}", f"{variable} in .env is not the guest's key"


def test_every_model_in_the_config_answers_at_its_api_base(request, client, written):
    if request.node.callspec.params["client"].spec != "local://":
        pytest.skip("the clients host is not this machine: its editor's view is not checked here")
    config, env, _ = written
    pairs = (line.split("=", 1) for line in client.file(env).content_string.splitlines())
    keys = dict(p for p in pairs if len(p) == 2)
    models = yaml.safe_load(client.file(config).content_string)["models"]
    assert models, f"{config} lists no model"
    for model in models:
        base = model["apiBase"].rstrip("/")
        url = f"{base}/models" if model["provider"] == "openai" else f"{base}/api/tags"
        cafile = model.get("requestOptions", {}).get("caBundlePath")
        why = reachable(url, cafile)
        if why:
            pytest.skip(f"{model['name']}: {url} does not answer ({why}); see the guest checks")
        # ${{ secrets.NAME }}: the key under NAME in .env
        variable = model.get("apiKey", "").removeprefix("${{ secrets.").removesuffix(" }}")
        status, body = call(url, key=keys.get(variable), cafile=cafile)
        if status == 502 and cafile:  # the front door took the key; nothing behind it answers
            pytest.skip(f"{model['name']}: the TLS front door let {url} in, the server behind it "
                        "does not answer (not running there); see the guest checks")  # fmt: skip
        assert status == 200, f"{model['name']}: {url} answered {status}"
