"""The model planner: backend and quant by the users' rule on known cards, refusals, the table,
the CLI, nvidia-smi parsing and the settings it fills for the tabbyapi and ollama roles."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from typing_extensions import override

from roles.common.settings import SettingsError
from roles.planner import apply_plan, plan_for_host, planned_data
from roles.planner.__main__ import main
from roles.planner.catalogue import CATALOGUE, EXL3_BPW, SMALL_FIM, lookup
from roles.planner.facts import GpuMemory, parse_nvidia_smi
from roles.planner.plan import (
    GIB,
    OLLAMA,
    PROCESS_OVERHEAD_GIB,
    TABBYAPI,
    Draft,
    PlanError,
    _share_ollama_context,
    plan,
)
from roles.planner.settings import PlannerSettings
from roles.tabbyapi.service import kv_bits

# Recorded outputs kept with the tests (SOURCES.md there).
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "el9"


# --- the users' rule on known cards -------------------------------------------------------------


@pytest.mark.parametrize(
    ("vram", "chat", "backend", "quant"),
    [
        # 32B at 4.0 bpw is 15.1 GiB + 4 GiB of FP16 cache for 16k tokens + 1.5 GiB for the
        # tabbyAPI process: fits 24 GB with the embedder and 1 GiB kept free, 5.0 does not.
        (24, "qwen2.5-coder-32b", TABBYAPI, "EXL3 4.0bpw"),
        (24, "qwen2.5-coder-7b", TABBYAPI, "EXL3 8.0bpw"),
        (12, "qwen2.5-coder-7b", TABBYAPI, "EXL3 8.0bpw"),
        # Even 4.0 bpw does not fit 12 GB: GGUF Q4_K_M on Ollama, the rest in system RAM.
        (12, "qwen2.5-coder-32b", OLLAMA, "Q4_K_M"),
        # Was 5.0 bpw while the planner counted 0.5 GiB per model and kept 0.5 GiB free: with the
        # tabbyAPI process's 1.5 GiB, the embedder's runner and a 1 GiB reserve, 8 GB holds 4.0.
        (8, "qwen2.5-coder-7b", TABBYAPI, "EXL3 4.0bpw"),
    ],
)
def test_known_cards_and_models(vram, chat, backend, quant):
    result = plan(vram, chat, autocomplete=chat)
    served = result.serving("chat")
    assert (served.backend, served.quant_label) == (backend, quant), result.table()
    assert served.roles == ("chat", "edit", "apply", "autocomplete")
    assert result.serving("embed").model.key == "nomic-embed-text"
    assert result.serving("embed").backend == OLLAMA
    assert result.used_vram_gib <= vram - result.reserve_gib


def test_a_model_too_big_for_the_card_spills_only_what_does_not_fit():
    result = plan(12, "qwen2.5-coder-32b")
    chat = result.serving("chat")
    assert chat.offload_gib == pytest.approx(chat.total_gib - chat.vram_gib)
    assert result.used_vram_gib == pytest.approx(12 - 1.0, abs=0.01)  # all but the reserve
    assert chat.offload_gib < 16


def test_a_smaller_cache_buys_a_higher_quant():
    # (Was 32B on 24 GB; with realistic overheads a Q8 cache no longer buys it 5.0 bpw.)
    assert plan(8, "qwen2.5-coder-7b", tabbyapi_kv_bits=16).tabbyapi.quant_label == "EXL3 4.0bpw"
    assert plan(8, "qwen2.5-coder-7b", tabbyapi_kv_bits=4).tabbyapi.quant_label == "EXL3 5.0bpw"


def test_chat_autocomplete_and_embedding_share_the_card():
    chat = "qwen3-coder-30b-a3b"
    alone = plan(24, chat, autocomplete=chat, tabbyapi_kv_bits=8)
    shared = plan(24, chat, autocomplete="qwen2.5-coder-3b-base", tabbyapi_kv_bits=8)
    assert alone.tabbyapi.quant_label == "EXL3 5.0bpw"
    assert shared.tabbyapi.quant_label == "EXL3 4.0bpw"  # the 3B autocomplete takes its room
    auto = shared.serving("autocomplete")
    assert (auto.backend, auto.quant_label, auto.offload_gib) == (OLLAMA, "Q8_0", 0.0)
    assert shared.tabbyapi.roles == ("chat", "edit", "apply")
    assert shared.used_vram_gib <= 23.0


def test_tabbyapi_serves_one_model_at_most():
    result = plan(80, "qwen2.5-coder-32b", autocomplete="qwen2.5-coder-7b-base")
    assert [p.backend for p in result.placements].count(TABBYAPI) == 1
    assert result.tabbyapi.model.key == "qwen2.5-coder-32b"  # the chat model's claim comes first


def test_ollama_chat_and_autocomplete_share_one_context_length():
    chat = plan(80, "qwen2.5-coder-32b").serving("chat")
    on_ollama = [
        (replace(chat, backend=OLLAMA, quant="Q4_K_M"), True),
        (
            replace(
                chat,
                model=lookup("qwen2.5-coder-1.5b-base"),
                roles=("autocomplete",),
                backend=OLLAMA,
                quant="Q8_0",
                context=4096,
            ),
            False,
        ),
        (
            replace(
                chat,
                model=lookup("nomic-embed-text"),
                roles=("embed",),
                backend=OLLAMA,
                quant=None,
                context=2048,
            ),
            False,
        ),
    ]
    shared = [p.context for p, _ in _share_ollama_context(on_ollama)]
    assert shared == [16384, 16384, 2048]


def test_kv_cache_estimate_matches_the_architecture():
    # Qwen2.5-Coder-32B: 64 layers x 8 KV heads x 128 x 2 (K and V) x 2 bytes = 256 KiB a token.
    chat = plan(80, "qwen2.5-coder-32b", chat_context=32768).serving("chat")
    assert chat.kv_cache_gib * GIB == 64 * 8 * 128 * 2 * 2 * 32768
    assert chat.weights_gib * GIB == pytest.approx(32.5e9 * 8 / 8)


def test_context_is_capped_at_the_models_own():
    assert plan(80, "qwen2.5-coder-7b", chat_context=131072).serving("chat").context == 32768


# --- refusals -----------------------------------------------------------------------------------


def test_nothing_fits_is_refused_with_what_to_change():
    with pytest.raises(PlanError) as caught:
        plan(12, "qwen2.5-coder-32b", ram_offload_gib=4)
    message = str(caught.value)
    assert "no plan fits" in message and "qwen2.5-coder-32b" in message and "Q4_K_M" in message
    assert "11.0 GiB free" in message and "4.0 GiB may spill" in message
    # The optional small FIM model is not what the message blames.
    assert SMALL_FIM not in message
    assert "planner_chat_context" in message and "planner_ram_offload_gib" in message


def test_without_offload_a_model_that_does_not_fit_is_refused():
    with pytest.raises(PlanError, match="no plan fits"):
        plan(12, "qwen2.5-coder-32b", ram_offload_gib=0)


def test_unknown_and_unsuitable_models_are_refused():
    with pytest.raises(PlanError, match="unknown model 'gpt-5'.*known: codestral-22b"):
        plan(24, "gpt-5")
    with pytest.raises(PlanError, match="not made for chat"):
        plan(24, "qwen2.5-coder-1.5b-base")
    with pytest.raises(PlanError, match="not made for embed"):
        plan(24, "qwen2.5-coder-7b", embed="qwen2.5-coder-7b")


# --- output -------------------------------------------------------------------------------------


def test_table_lists_each_model_with_backend_quant_and_vram():
    table = plan(12, "qwen2.5-coder-32b").table()
    header, rule, chat, embed, total = table.splitlines()
    assert header.split() == [
        "model",
        "roles",
        "backend",
        "quant",
        "context",
        "weights",
        "KV",
        "cache",
        "VRAM",
    ]
    assert set(rule) <= {"-", " "}
    assert chat.startswith("qwen2.5-coder-32b") and "ollama" in chat and "Q4_K_M" in chat
    assert "RAM)" in chat  # the spilled part is shown
    assert embed.startswith("nomic-embed-text") and "F16" in embed
    assert "11.0 of 12.0" in total and "1.5 tabbyAPI, 0.5 each Ollama model" in total


def test_cli_prints_the_plan_or_the_refusal(capsys):
    assert main(["--vram", "24", "--chat", "qwen2.5-coder-32b"]) == 0
    assert "EXL3 4.0bpw" in capsys.readouterr().out
    assert main(["--vram", "24", "--chat", "qwen3-coder-30b-a3b", "--draft", "qwen3-0.6b"]) == 0
    assert "qwen3-0.6b draft" in capsys.readouterr().out
    assert main(["--vram", "24", "--chat", "qwen3-coder-30b-a3b", "--draft", "nope"]) == 1
    assert capsys.readouterr().err.startswith("error: unknown model 'nope'")
    assert main(["--vram", "8", "--chat", "qwen2.5-coder-32b", "--ram-offload", "0"]) == 1
    assert "no plan fits" in capsys.readouterr().err
    assert main(["--list"]) == 0
    assert "qwen2.5-coder-32b" in capsys.readouterr().out


def test_catalogue_entries_are_complete():
    for key, model in CATALOGUE.items():
        assert lookup(key) is model and model.source.startswith("https://huggingface.co/")
        assert model.layers and model.kv_heads and model.head_dim and model.context
    assert (
        CATALOGUE["qwen2.5-coder-32b"].ollama_tag("Q4_K_M") == "qwen2.5-coder:32b-instruct-q4_K_M"
    )
    assert CATALOGUE["qwen2.5-coder-1.5b-base"].ollama_tag("Q8_0") == "qwen2.5-coder:1.5b-base-q8_0"
    assert CATALOGUE["nomic-embed-text"].ollama_tag(None) == "nomic-embed-text"


# --- nvidia-smi ---------------------------------------------------------------------------------


def test_gpu_memory_from_recorded_nvidia_smi():
    text = (FIXTURES / "nvidia-smi.debian-12-vm.a100-passthrough.535.216.01.txt").read_text()
    lines = text.splitlines()
    assert parse_nvidia_smi(lines) == [
        {"index": 0, "name": "NVIDIA A100 80GB PCIe", "total_mib": 81920}
    ]
    assert GpuMemory().process([]) == []


# --- the host: settings, nvidia-smi, the keys it fills ------------------------------------------


class FakeHost:
    """What the planner reads from a pyinfra host: its name, data and one fact."""

    def __init__(self, data: dict, gpus: list | None = None):
        self.name = "guest"
        self.data = _Data(data)
        self.gpus = gpus or []

    def get_fact(self, fact):
        assert fact is GpuMemory
        return self.gpus


class _Data:
    values: dict

    def __init__(self, values):
        self.__dict__["values"] = dict(values)

    def dict(self):
        return dict(self.values)

    @override
    def __setattr__(self, key, value):
        self.values[key] = value


def test_no_chat_model_means_no_plan_and_nothing_filled():
    host = FakeHost({})
    assert plan_for_host(host) is None and planned_data(host) == {}


def test_plan_fills_what_the_user_did_not_pin():
    host = FakeHost({"planner_chat_model": "qwen3-coder-30b-a3b", "planner_vram_gib": 24.0})
    assert planned_data(host) == {
        "tabbyapi_enabled": True,
        "tabbyapi_max_seq_len": 16384,
        "tabbyapi_model_repo": "ArtusDev/Qwen_Qwen3-Coder-30B-A3B-Instruct-EXL3",
        "tabbyapi_model_revision": "5.0bpw_H6",
        "tabbyapi_tool_format": "qwen3_coder",
        "ollama_enabled": True,
        "ollama_models": ["qwen2.5-coder:1.5b-base-q8_0", "nomic-embed-text"],
        "ollama_context_length": 4096,
    }
    pinned = FakeHost({**host.data.dict(), "tabbyapi_max_seq_len": 8192})
    assert "tabbyapi_max_seq_len" not in planned_data(pinned)


def test_apply_plan_sets_host_data_and_prints_the_table(caplog):
    host = FakeHost({"planner_chat_model": "qwen2.5-coder-32b", "planner_vram_gib": 12.0})
    with caplog.at_level("INFO", logger="pyinfra"):
        apply_plan(host)
    data = host.data.dict()
    assert data["tabbyapi_enabled"] is False  # everything is on Ollama
    # No room for a small FIM model on 12 GB: the spilling chat model autocompletes too.
    assert data["ollama_models"] == ["qwen2.5-coder:32b-instruct-q4_K_M", "nomic-embed-text"]
    assert data["ollama_context_length"] == 16384
    assert "model plan for 12.0 GiB" in caplog.text and "Q4_K_M" in caplog.text


def test_vram_is_read_from_nvidia_smi_when_not_set():
    gpus = [{"index": 0, "name": "RTX 3060", "total_mib": 12288}]
    host = FakeHost({"planner_chat_model": "qwen2.5-coder-7b"}, gpus)
    assert plan_for_host(host).vram_gib == 12.0


def test_several_gpus_are_planned_as_one_pool_while_tabbyapi_splits_automatically():
    gpus = [{"index": i, "name": "RTX 3090", "total_mib": 24576} for i in range(2)]
    data = {"planner_chat_model": "qwen2.5-coder-32b", "planner_ram_offload_gib": 0.0}
    pooled = plan_for_host(FakeHost(data, gpus))
    assert pooled.vram_gib == 48.0
    first_only = plan_for_host(FakeHost({**data, "tabbyapi_gpu_split_auto": False}, gpus))
    assert first_only.vram_gib == 24.0
    # 48 GiB less a reserve per GPU leaves room for a bigger quant than one card does.
    assert pooled.tabbyapi.quant != first_only.tabbyapi.quant, (pooled.table(), first_only.table())


def test_unknown_vram_without_nvidia_smi_names_the_setting():
    with pytest.raises(SettingsError, match="planner_vram_gib.*nvidia-smi is not on the guest"):
        plan_for_host(FakeHost({"planner_chat_model": "qwen2.5-coder-7b"}))


def test_a_refused_plan_is_a_settings_error_naming_the_chat_model():
    host = FakeHost(
        {
            "planner_chat_model": "qwen2.5-coder-32b",
            "planner_vram_gib": 8.0,
            "planner_ram_offload_gib": 0.0,
        }
    )
    with pytest.raises(SettingsError, match="planner_chat_model: no plan fits"):
        plan_for_host(host)


def test_a_model_without_known_exl3_repo_asks_for_the_repo():
    host = FakeHost({"planner_chat_model": "qwen2.5-coder-32b", "planner_vram_gib": 24.0})
    with pytest.raises(SettingsError) as caught:
        planned_data(host)
    assert {key for key, _ in caught.value.problems} == {
        "tabbyapi_model_repo",
        "tabbyapi_model_revision",
    }
    pinned = FakeHost(
        {
            **host.data.dict(),
            "tabbyapi_model_repo": "me/q32-exl3",
            "tabbyapi_model_revision": "4.0bpw",
        }
    )
    assert planned_data(pinned)["tabbyapi_max_seq_len"] == 16384
    # tabbyAPI has no parser for Qwen2.5's tool calls: the plan says so, whatever the name.
    assert planned_data(pinned)["tabbyapi_tool_format"] == ""


def test_the_roles_cache_settings_size_the_plan():
    fp16 = FakeHost(
        {
            "planner_chat_model": "qwen3-coder-30b-a3b",
            "planner_vram_gib": 24.0,
            "tabbyapi_cache_mode": "FP16",
        }
    )
    assert plan_for_host(fp16).tabbyapi.kv_bits == 16
    assert [kv_bits(m) for m in ("Q4", "Q6", "8,8", "4,6")] == [4, 6, 8, 6]


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("planner_chat_model", "gpt-5", "not in the planner's catalogue"),
        ("planner_chat_model", "nomic-embed-text", "not made for chat"),
        ("planner_autocomplete_model", "nomic-embed-text", "not made for autocomplete"),
        ("planner_vram_gib", -1.0, "out of range"),
        ("planner_chat_context", 100, "out of range"),
        ("planner_vram_gib", "24", "expected a finite number"),
    ],
)
def test_bad_planner_settings_name_the_key(key, value, fragment):
    _, problems = PlannerSettings.problems_in({key: value})
    assert [k for k, _ in problems] == [key] and fragment in problems[0][1]


def test_a_backend_the_user_turned_off_is_not_planned():
    result = plan(24, "qwen2.5-coder-7b", backends=(OLLAMA,))
    assert result.serving("chat").backend == OLLAMA and result.tabbyapi is None
    with pytest.raises(PlanError, match="nomic-embed-text can only be served by ollama"):
        plan(24, "qwen2.5-coder-7b", backends=(TABBYAPI,))
    host = FakeHost(
        {
            "planner_chat_model": "qwen3-coder-30b-a3b",
            "planner_vram_gib": 24.0,
            "tabbyapi_enabled": False,
        }
    )
    assert planned_data(host)["ollama_models"] == [
        "qwen3-coder:30b-a3b-q4_K_M",
        "qwen2.5-coder:1.5b-base-q8_0",
        "nomic-embed-text",
    ]


# --- realism: process overheads, reserve, draft models, branch names, a small FIM model ---------


def test_each_process_is_budgeted_its_cuda_overhead():
    result = plan(24, "qwen2.5-coder-32b")  # tabbyAPI + two Ollama runners (FIM, embeddings)
    overheads = sum(p.total_gib - p.weights_gib - p.kv_cache_gib for p in result.placements)
    assert [p.backend for p in result.placements] == [TABBYAPI, OLLAMA, OLLAMA]
    assert overheads == pytest.approx(PROCESS_OVERHEAD_GIB[TABBYAPI] + 2 * 0.5)
    assert 1.0 <= PROCESS_OVERHEAD_GIB[TABBYAPI] <= 1.5


@pytest.mark.parametrize("chat", ["qwen2.5-coder-32b", "qwen3-coder-30b-a3b", "codestral-22b"])
def test_a_24_gb_card_keeps_a_gib_free(chat):
    """The old planner left 0.2 GiB free on a 24 GiB card: too little for two CUDA processes."""
    result = plan(24, chat, tabbyapi_kv_bits=8)
    assert result.reserve_gib == 1.0 and 24 - result.used_vram_gib >= 1.0, result.table()
    assert PlannerSettings.problems_in({})[0].reserve_gib == 1.0


def test_a_draft_model_takes_its_room_beside_the_chat_model():
    chat = "qwen3-coder-30b-a3b"
    without = plan(24, chat, autocomplete=chat, tabbyapi_kv_bits=8)
    draft = Draft(lookup("qwen3-0.6b"), bits=8.0, kv_bits=16)
    with_draft = plan(24, chat, autocomplete=chat, tabbyapi_kv_bits=8, draft=draft)
    served = with_draft.tabbyapi
    # 0.6B at 8 bpw plus an FP16 cache of 28 layers x 8 KV heads x 128 for the 16k context.
    expected = 0.6e9 / GIB + 2 * 28 * 8 * 128 * 16384 * 2 / GIB
    assert served.draft_gib == pytest.approx(expected)
    tabby_process = served.weights_gib + served.kv_cache_gib + PROCESS_OVERHEAD_GIB[TABBYAPI]
    assert served.total_gib == pytest.approx(tabby_process + expected)
    assert served.quant_label == "EXL3 4.0bpw" != without.tabbyapi.quant_label
    assert "qwen3-0.6b draft" in with_draft.table()
    assert with_draft.ollama[0].draft is None  # the draft lives in tabbyAPI's process only


def test_exl3_branches_are_named_with_the_head_bits_repos_use():
    model = lookup("qwen3-coder-30b-a3b")
    assert model.exl3_branch(8.0) == "8.0bpw_H8"  # was 8.0bpw_H6, a branch no repo has
    assert [model.exl3_branch(b) for b in (6.0, 5.0, 4.0)] == [
        "6.0bpw_H6",
        "5.0bpw_H6",
        "4.0bpw_H6",
    ]
    assert {model.exl3_branch(b) for b in EXL3_BPW}  # every planned size has a name
    big = plan(80, "qwen3-coder-30b-a3b", autocomplete="qwen3-coder-30b-a3b")
    assert big.tabbyapi.exl3_revision == "8.0bpw_H8"


def test_a_small_fim_model_autocompletes_when_the_card_has_room():
    roomy = plan(24, "qwen2.5-coder-32b")
    auto = roomy.serving("autocomplete")
    assert (auto.model.key, auto.backend) == (SMALL_FIM, OLLAMA)
    alone = plan(24, "qwen2.5-coder-32b", autocomplete="qwen2.5-coder-32b")
    assert (
        roomy.tabbyapi.quant_label == alone.tabbyapi.quant_label
    )  # it cost the chat model nothing
    # On 12 GB the FIM model would cost the 7B its 8.0 bpw: the chat model autocompletes.
    tight = plan(12, "qwen2.5-coder-7b")
    assert tight.serving("autocomplete") is tight.serving("chat")
    assert tight.tabbyapi.quant_label == "EXL3 8.0bpw"


def test_the_draft_tabbyapi_loads_must_be_named_for_the_plan():
    base = {"planner_chat_model": "qwen3-coder-30b-a3b", "planner_vram_gib": 24.0}
    drafting = {
        **base,
        "tabbyapi_draft_model_repo": "someone/Qwen3-0.6B-exl3",
        "tabbyapi_draft_model_revision": "4.0bpw_H6",
    }
    with pytest.raises(SettingsError, match="planner_draft_model: tabbyAPI loads the draft"):
        plan_for_host(FakeHost(drafting))
    sized = plan_for_host(FakeHost({**drafting, "planner_draft_model": "qwen3-0.6b"}))
    draft = sized.tabbyapi.draft
    assert (draft.model.key, draft.bits, draft.kv_bits) == ("qwen3-0.6b", 4.0, 16)
    # Speculative decoding off: nothing to count, and naming a draft is then a mistake.
    off = {**drafting, "tabbyapi_draft_mode": "disabled"}
    assert plan_for_host(FakeHost(off)).tabbyapi.draft is None
    with pytest.raises(SettingsError, match="planner_draft_model: qwen3-0.6b is planned"):
        plan_for_host(FakeHost({**base, "planner_draft_model": "qwen3-0.6b"}))
    _, problems = PlannerSettings.problems_in({"planner_draft_model": "qwen2.5-coder-7b"})
    assert "not made for draft" in problems[0][1]
