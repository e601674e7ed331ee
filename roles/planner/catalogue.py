"""The models the planner knows: size and attention shape, from each model's public config.json.

``params_b`` is the total parameter count in billions (the model card's figure); ``layers``,
``kv_heads`` and ``head_dim`` are ``num_hidden_layers``, ``num_key_value_heads`` and
``hidden_size / num_attention_heads`` (or ``head_dim``) from config.json: they size the KV cache.
``context`` is the context the model was trained for (``max_position_embeddings``, without
YaRN scaling). Add a model by adding one entry, with its source.
"""

from __future__ import annotations

from dataclasses import dataclass

CHAT, AUTOCOMPLETE, EMBED, DRAFT = "chat", "autocomplete", "embed", "draft"

# Ollama's library names quants by llama.cpp type, e.g. "qwen2.5-coder:32b-instruct-q4_K_M".
GGUF_QUANTS = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M")
EXL3_BPW = (8.0, 6.0, 5.0, 4.0)
# Bits of the output head in the EXL3 quants people publish: 6 below 8 bpw, 8 at 8 bpw. Branches
# are named after both, e.g. "4.0bpw_H6" and "8.0bpw_H8" (ArtusDev's repos; turboderp's exl3
# repos name their 8-bit branch "8.0bpw_H8" too), never "8.0bpw_H6".
EXL3_HEAD_BITS = {8.0: 8, 6.0: 6, 5.0: 6, 4.0: 6}
# The small fill-in-the-middle model the planner adds for autocomplete when the card has room.
SMALL_FIM = "qwen2.5-coder-1.5b-base"


@dataclass(frozen=True)
class Model:
    key: str  # the name users give the planner
    params_b: float
    layers: int
    kv_heads: int
    head_dim: int
    context: int
    uses: tuple[str, ...]  # what it is good for: chat, autocomplete (FIM), embed, draft
    ollama: str  # Ollama library name without the quant, e.g. "qwen2.5-coder:7b-instruct"
    ollama_quants: tuple[str, ...] = GGUF_QUANTS  # the quants the Ollama library publishes
    # A Hugging Face repo of EXL3 quants with one branch per size, and the branch name for a
    # size; None where no such repo is known here (the tabbyapi_model_* settings must name one).
    exl3_repo: str | None = None
    exl3_revision: str = "{bpw:.1f}bpw_H{head}"
    # tabbyAPI's tool-call parser for this family (config.yml model.tool_format; the names are
    # upstream's endpoints/OAI/utils/tools.py); None: tabbyAPI cannot parse its tool calls.
    tool_format: str | None = None
    # Ollama's library template of this model handles tools (the library's "tools" tag).
    ollama_tools: bool = False
    # Quants vLLM serves (AWQ, GPTQ, FP8 safetensors) as (quant, Hugging Face repo, commit),
    # where a repo and its commit are known here; vLLM is no option for the others.
    vllm_quants: tuple[tuple[str, str, str], ...] = ()
    source: str = ""

    def exl3_branch(self, bpw: float) -> str:
        return self.exl3_revision.format(bpw=bpw, head=EXL3_HEAD_BITS[bpw])

    def ollama_tag(self, quant: str | None) -> str:
        """The Ollama model name for ``quant`` (a model published in one precision has none)."""
        return f"{self.ollama}-{quant[0].lower()}{quant[1:]}" if quant else self.ollama


def _qwen25_coder(
    size, params_b, layers, kv_heads, head_dim, variant="instruct", uses=None, vllm=()
):
    """Qwen2.5-Coder: config.json at huggingface.co/Qwen/Qwen2.5-Coder-<size>[-Instruct]. Its
    instruct models call tools in the Hermes JSON style, which Ollama's template handles and
    tabbyAPI has no parser for (none of its tool formats is that style)."""
    name = f"Qwen2.5-Coder-{size.upper()}" + ("-Instruct" if variant == "instruct" else "")
    return Model(
        key=f"qwen2.5-coder-{size}" + ("-base" if variant == "base" else ""),
        params_b=params_b,
        layers=layers,
        kv_heads=kv_heads,
        head_dim=head_dim,
        context=32768,
        uses=uses or ((CHAT, AUTOCOMPLETE) if variant == "instruct" else (AUTOCOMPLETE,)),
        ollama=f"qwen2.5-coder:{size}-{variant}",
        ollama_tools=variant == "instruct",
        vllm_quants=vllm,
        source=f"https://huggingface.co/Qwen/{name}/blob/main/config.json",
    )


CATALOGUE: dict[str, Model] = {
    m.key: m
    for m in (
        # Qwen2.5-Coder (Qwen2ForCausalLM): 32B 64 layers, 40 Q / 8 KV heads, hidden 5120;
        # 14B 48 layers, 40/8, hidden 5120; 7B 28 layers, 28/4, hidden 3584; 3B 36 layers,
        # 16/2, hidden 2048; 1.5B 28 layers, 12/2, hidden 1536. Head dim 128 for all five.
        _qwen25_coder("32b", 32.5, 64, 8, 128),
        _qwen25_coder("14b", 14.7, 48, 8, 128),
        # Qwen's own AWQ quant of the 7B instruct model, at the commit public code pins.
        _qwen25_coder(
            "7b",
            7.61,
            28,
            4,
            128,
            vllm=(
                (
                    "AWQ",
                    "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ",
                    "8e8ed243bbe6f9a5aff549a0924562fc719b2b8a",
                ),
            ),
        ),  # fmt: skip
        _qwen25_coder("3b", 3.09, 36, 2, 128),
        _qwen25_coder("1.5b", 1.54, 28, 2, 128),
        # The base models are the ones trained for fill-in-the-middle: autocomplete only.
        _qwen25_coder("7b", 7.61, 28, 4, 128, variant="base"),
        _qwen25_coder("3b", 3.09, 36, 2, 128, variant="base"),
        _qwen25_coder("1.5b", 1.54, 28, 2, 128, variant="base"),
        # Draft models for speculative decoding (same tokenizer as the model they draft for).
        # Qwen2.5-Coder-0.5B-Instruct: 24 layers, 14 Q / 2 KV heads, hidden 896 (head dim 64).
        _qwen25_coder("0.5b", 0.49, 24, 2, 64, uses=(DRAFT,)),
        # Qwen3-0.6B (Qwen3ForCausalLM), a draft for Qwen3-Coder (same vocabulary): 28 layers,
        # 16 Q / 8 KV heads, head_dim 128, 40960 context.
        Model(
            key="qwen3-0.6b",
            params_b=0.6,
            layers=28,
            kv_heads=8,
            head_dim=128,
            context=40960,
            uses=(DRAFT,),
            ollama="qwen3:0.6b",
            source="https://huggingface.co/Qwen/Qwen3-0.6B/blob/main/config.json",
        ),
        # Qwen3-Coder-30B-A3B-Instruct (Qwen3MoeForCausalLM, 3.3B active): 48 layers, 32 Q / 4 KV
        # heads, head_dim 128, 262144 context. ArtusDev's EXL3 repo is tabbyapi's default model;
        # its branches 3.0bpw_H6, 3.5bpw_H6 and 4.0bpw_H6 are referenced in public code, and
        # ArtusDev's 8-bit branches are named 8.0bpw_H8 (EXL3_HEAD_BITS; Hugging Face itself is
        # not reachable from here). tabbyAPI parses its XML tool calls as "qwen3_coder".
        # Ollama publishes q4_K_M and q8_0 of it, with a template that handles tools.
        Model(
            key="qwen3-coder-30b-a3b",
            params_b=30.5,
            layers=48,
            kv_heads=4,
            head_dim=128,
            context=262144,
            uses=(CHAT, AUTOCOMPLETE),
            ollama="qwen3-coder:30b-a3b",
            ollama_quants=("Q8_0", "Q4_K_M"),
            exl3_repo="ArtusDev/Qwen_Qwen3-Coder-30B-A3B-Instruct-EXL3",
            tool_format="qwen3_coder",
            ollama_tools=True,
            source="https://huggingface.co/Qwen/Qwen3-Coder-30B-A3B-Instruct/blob/main/config.json",
        ),
        # Codestral 22B v0.1 (MistralForCausalLM): 56 layers, 48 Q / 8 KV heads, head_dim 128,
        # 32k context; FIM-trained. https://huggingface.co/mistralai/Codestral-22B-v0.1
        Model(
            key="codestral-22b",
            params_b=22.2,
            layers=56,
            kv_heads=8,
            head_dim=128,
            context=32768,
            uses=(CHAT, AUTOCOMPLETE),
            ollama="codestral:22b-v0.1",
            source="https://huggingface.co/mistralai/Codestral-22B-v0.1/blob/main/config.json",
        ),
        # nomic-embed-text v1.5 (NomicBertModel): 137M parameters, 12 layers, 12 heads of 64,
        # 768-dimensional embeddings, 2048 tokens by default (8192 with rope scaling). Ollama
        # publishes it in F16 only.
        Model(
            key="nomic-embed-text",
            params_b=0.137,
            layers=12,
            kv_heads=12,
            head_dim=64,
            context=2048,
            uses=(EMBED,),
            ollama="nomic-embed-text",
            ollama_quants=(),
            source="https://huggingface.co/nomic-ai/nomic-embed-text-v1.5/blob/main/config.json",
        ),
    )
}

# Dimension of the vectors each embedding model returns (for the endpoint checks).
EMBED_DIMENSIONS = {"nomic-embed-text": 768}


def lookup(key: str) -> Model:
    """The catalogue entry for ``key``, or a KeyError listing the known names."""
    try:
        return CATALOGUE[key]
    except KeyError:
        raise KeyError(
            f"unknown model {key!r}; known: {', '.join(sorted(CATALOGUE))} "
            "(add it to roles/planner/catalogue.py with its config.json numbers)"
        ) from None
