"""Decide which backend and quant serve each wanted model on one GPU, and how much VRAM they use.

The users' rule: a model that fits in VRAM is served by tabbyAPI as an EXL3 quant of 4.0 bits
per weight or more (the highest that fits); one that does not is served by Ollama as a GGUF quant
of Q4 or more, spilling layers into system RAM if it must. Chat, autocomplete and embeddings
share the card, so a plan counts them together. tabbyAPI loads one model at a time (its model
section has a single model_name), so at most one model goes to tabbyAPI; the chat model has the
first claim on it.

All sizes are estimates in GiB: weights = parameters x bits per weight / 8; KV cache =
2 (K and V) x layers x KV heads x head dim x context x cache bits / 8; plus a fixed overhead
per process on the card (CUDA context, scratch buffers): tabbyAPI is one process (its draft
model included), Ollama runs one runner process per loaded model. A reserve stays free.

Without a named autocomplete model, a small fill-in-the-middle model (SMALL_FIM) is added on
Ollama when it fits beside the others without costing the chat model a quant; otherwise the chat
model autocompletes too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import product

from roles.planner.catalogue import (
    AUTOCOMPLETE,
    CHAT,
    EMBED,
    EXL3_BPW,
    SMALL_FIM,
    Model,
    lookup,
)

GIB = 2**30
TABBYAPI, OLLAMA, VLLM = "tabbyapi", "ollama", "vllm"

# Average bits per weight of llama.cpp's GGUF types, from Ollama's published file sizes of
# qwen2.5-coder:32b (Q8_0 35 GB, Q6_K 27 GB, Q5_K_M 23 GB, Q4_K_M 20 GB for 32.5B weights).
GGUF_BITS = {"Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.69, "Q4_K_M": 4.85, None: 16.0}
# VRAM a process takes before any weights: the CUDA context plus the backend's scratch and
# compute buffers. tabbyAPI's process (torch + exllamav3) takes about 1-1.5 GiB; each Ollama
# runner (one per loaded model) about 0.5 GiB. Estimates, on the safe side.
PROCESS_OVERHEAD_GIB = {"tabbyapi": 1.5, "ollama": 0.5, "vllm": 2.0}
# vLLM: weight bits of its quants, the group scales included (AWQ/GPTQ: 4 bits and a 16-bit
# scale and zero point per group of 128); its process (torch, CUDA graphs) takes about 2 GiB.
VLLM_BITS = {"AWQ": 4.25, "GPTQ": 4.25, "FP8": 8.0}
# VRAM kept free by default: a 24 GiB card with two CUDA processes needs about 1 GiB of room
# (allocator fragmentation, the driver's own use, a desktop or nvidia-persistenced).
RESERVE_GIB = 1.0
# A draft model's bits per weight when its branch name does not say (the largest EXL3 size).
DRAFT_BPW = 8.0
CHAT_ROLES = (CHAT, "edit", "apply")


class PlanError(ValueError):
    """No placement of the wanted models fits; the message says what to change."""


@dataclass(frozen=True)
class Draft:
    """A draft model tabbyAPI loads for speculative decoding: its size and cache precision."""

    model: Model
    bits: float = DRAFT_BPW
    kv_bits: float = 16


@dataclass(frozen=True)
class Placement:
    """One model served by one backend in one quant."""

    model: Model
    roles: tuple[str, ...]
    backend: str
    quant: str | None  # GGUF type, "8.0" style bpw for EXL3, None for a single-precision model
    context: int
    kv_bits: float
    slots: int = 1  # requests served at once, each with its own cache (OLLAMA_NUM_PARALLEL)
    offload_gib: float = 0.0  # the part Ollama keeps in system RAM
    draft: Draft | None = None  # tabbyAPI's speculative-decoding draft model, loaded beside it

    @property
    def bits(self) -> float:
        if self.backend == VLLM:
            return VLLM_BITS[self.quant or "FP8"]
        return float(self.quant or 16) if self.backend == TABBYAPI else GGUF_BITS[self.quant]

    @property
    def quant_label(self) -> str:
        if self.backend == TABBYAPI:
            return f"EXL3 {self.bits:.1f}bpw"
        return self.quant or "F16"

    @property
    def vllm_source(self) -> tuple[str, str] | None:
        """(Hugging Face repo, commit) of the quant vLLM serves."""
        if self.backend != VLLM:
            return None
        return next((repo, rev) for q, repo, rev in self.model.vllm_quants if q == self.quant)

    @property
    def weights_gib(self) -> float:
        return self.model.params_b * 1e9 * self.bits / 8 / GIB

    @property
    def kv_cache_gib(self) -> float:
        m = self.model
        tokens = self.context * self.slots
        return 2 * m.layers * m.kv_heads * m.head_dim * tokens * self.kv_bits / 8 / GIB

    @property
    def overhead_gib(self) -> float:
        return PROCESS_OVERHEAD_GIB[self.backend]

    @property
    def draft_gib(self) -> float:
        """Weights and cache of the draft model (same context as the model it drafts for)."""
        d = self.draft
        if d is None:
            return 0.0
        m = d.model
        weights = m.params_b * 1e9 * d.bits / 8 / GIB
        cache = 2 * m.layers * m.kv_heads * m.head_dim * self.context * d.kv_bits / 8 / GIB
        return weights + cache

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.kv_cache_gib + self.draft_gib + self.overhead_gib

    @property
    def vram_gib(self) -> float:
        return self.total_gib - self.offload_gib

    @property
    def exl3_revision(self) -> str | None:
        """The branch of the model's EXL3 repo holding this size, e.g. "4.0bpw_H6"."""
        return self.model.exl3_branch(self.bits) if self.backend == TABBYAPI else None

    @property
    def ollama_tag(self) -> str | None:
        return self.model.ollama_tag(self.quant) if self.backend == OLLAMA else None


@dataclass(frozen=True)
class Plan:
    vram_gib: float
    reserve_gib: float
    ram_offload_gib: float
    placements: tuple[Placement, ...]

    @property
    def used_vram_gib(self) -> float:
        return sum(p.vram_gib for p in self.placements)

    @property
    def tabbyapi(self) -> Placement | None:
        return next((p for p in self.placements if p.backend == TABBYAPI), None)

    @property
    def vllm(self) -> Placement | None:
        return next((p for p in self.placements if p.backend == VLLM), None)

    @property
    def ollama(self) -> list[Placement]:
        return [p for p in self.placements if p.backend == OLLAMA]

    def serving(self, role: str) -> Placement | None:
        return next((p for p in self.placements if role in p.roles), None)

    def table(self) -> str:
        """The plan as a text table: one row per model, then the card's total."""
        header = ("model", "roles", "backend", "quant", "context", "weights", "KV cache", "VRAM")
        # All sizes in GiB.
        rows = [header]
        for p in self.placements:
            vram = f"{p.vram_gib:.1f}" + (f" (+{p.offload_gib:.1f} RAM)" if p.offload_gib else "")
            draft = f" (+{p.draft.model.key} draft {p.draft_gib:.1f})" if p.draft else ""
            rows.append(
                (
                    p.model.key + draft,
                    ", ".join(p.roles),
                    p.backend,
                    p.quant_label,
                    str(p.context),
                    f"{p.weights_gib:.1f}",
                    f"{p.kv_cache_gib:.1f}",
                    vram,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        vllm = f", {PROCESS_OVERHEAD_GIB[VLLM]} vLLM" if self.vllm else ""
        lines.append(
            "VRAM in GiB (weights + KV cache + per process "
            f"{PROCESS_OVERHEAD_GIB[TABBYAPI]} tabbyAPI, {PROCESS_OVERHEAD_GIB[OLLAMA]} each "
            f"Ollama model{vllm}): {self.used_vram_gib:.1f} of {self.vram_gib:.1f} "
            f"({self.reserve_gib:.1f} kept free)"
        )
        return "\n".join(line.rstrip() for line in lines)


def plan(
    vram_gib: float,
    chat: str,
    autocomplete: str | None = None,
    embed: str | None = "nomic-embed-text",
    chat_context: int = 16384,
    autocomplete_context: int = 4096,
    tabbyapi_kv_bits: float = 16,
    ollama_kv_bits: float = 16,
    ollama_parallel: int = 1,
    vllm_kv_bits: float = 16,
    ram_offload_gib: float = 16.0,
    reserve_gib: float = RESERVE_GIB,
    backends: tuple[str, ...] = (TABBYAPI, OLLAMA),
    draft: Draft | None = None,
) -> Plan:
    """The best placement of the wanted models on a card of ``vram_gib``, or a PlanError.

    ``autocomplete`` None means: SMALL_FIM when it fits without lowering the chat model's
    placement, else the chat model; naming the chat model makes it autocomplete in any case.
    ``embed`` None means no embedding model. The chat model gets the best quant first, then
    autocomplete. Ollama keeps ``ollama_parallel`` caches per model, and one context length for
    all its models (OLLAMA_CONTEXT_LENGTH): its chat and autocomplete models are planned with the
    larger one. ``backends`` are the ones the guest runs (the user may turn one off).
    ``draft`` is the draft model tabbyAPI loads beside its model, if any. vLLM (when in
    ``backends``) serves one model, in a quant the catalogue knows a repo of, after tabbyAPI's
    EXL3 and before Ollama's GGUF in order of preference.
    """
    args: dict = dict(
        vram_gib=vram_gib,
        chat=chat,
        embed=embed,
        chat_context=chat_context,
        autocomplete_context=autocomplete_context,
        kv={TABBYAPI: tabbyapi_kv_bits, OLLAMA: ollama_kv_bits, VLLM: vllm_kv_bits},
        slots={TABBYAPI: 1, OLLAMA: ollama_parallel, VLLM: 1},
        ram_offload_gib=ram_offload_gib,
        reserve_gib=reserve_gib,
        backends=backends,
        draft=draft,
    )
    if autocomplete is not None:
        return _plan(autocomplete=autocomplete, **args)
    alone: Plan | PlanError
    try:
        alone = _plan(autocomplete=chat, **args)
    except PlanError as error:  # the chat model cannot autocomplete, or nothing fits at all
        alone = error
    try:
        with_fim = _plan(autocomplete=SMALL_FIM, **args)
    except PlanError as error:
        if isinstance(alone, PlanError):
            # Nothing fits: say so for the chat model alone, unless it needs the FIM model.
            needs_fim = AUTOCOMPLETE not in _model(chat, CHAT).uses
            raise (error if needs_fim else alone) from None
        return alone
    if isinstance(alone, PlanError) or _same_chat(alone, with_fim):
        return with_fim
    return alone


def _same_chat(a: Plan, b: Plan) -> bool:
    """The chat model is served the same way (backend, quant, nothing spilled) in both."""
    x, y = a.serving(CHAT), b.serving(CHAT)
    assert x and y  # every plan serves the chat model
    return (x.backend, x.quant, x.offload_gib) == (y.backend, y.quant, y.offload_gib)


def _plan(
    vram_gib: float,
    chat: str,
    autocomplete: str,
    embed: str | None,
    chat_context: int,
    autocomplete_context: int,
    kv: dict[str, float],
    slots: dict[str, int],
    ram_offload_gib: float,
    reserve_gib: float,
    backends: tuple[str, ...],
    draft: Draft | None,
) -> Plan:
    chat_model = _model(chat, CHAT)
    same = autocomplete == chat
    auto_model = chat_model if same else _model(autocomplete, AUTOCOMPLETE)
    if same and AUTOCOMPLETE not in chat_model.uses:
        raise PlanError(
            f"{chat} is not trained for fill-in-the-middle and no autocomplete model fits beside "
            "it: name an autocomplete model (planner_autocomplete_model, or --autocomplete), "
            f"e.g. {SMALL_FIM}, or choose a smaller chat model"
        )
    chat_roles = CHAT_ROLES + ((AUTOCOMPLETE,) if same else ())
    chat_ctx = min(chat_context, chat_model.context)
    groups = [_options(chat_model, chat_roles, chat_ctx, kv, slots, draft, may_spill=True)]
    if not same:
        ctx = min(autocomplete_context, auto_model.context)
        groups.append(_options(auto_model, (AUTOCOMPLETE,), ctx, kv, slots, draft, may_spill=False))
    if embed:
        embed_model = _model(embed, EMBED)
        ctx = embed_model.context
        groups.append(
            _options(embed_model, (EMBED,), ctx, kv, slots, None, may_spill=False, tabby=False)
        )

    allowed = [[(p, spill) for p, spill in options if p.backend in backends] for options in groups]
    for options, kept in zip(groups, allowed, strict=True):
        if not kept:
            model = options[0][0].model.key
            raise PlanError(
                f"{model} can only be served by {'/'.join(sorted({p.backend for p, _ in options}))}"
                f", which is turned off here (tabbyapi_enabled / ollama_enabled)"
            )
    groups = allowed
    free = vram_gib - reserve_gib
    for combo in product(*groups):
        placements = _fit(_share_ollama_context(combo), free, ram_offload_gib)
        if placements:
            return Plan(vram_gib, reserve_gib, ram_offload_gib, placements)
    raise PlanError(_nothing_fits(groups, vram_gib, reserve_gib, ram_offload_gib))


def _model(key: str, use: str) -> Model:
    try:
        model = lookup(key)
    except KeyError as error:
        raise PlanError(error.args[0]) from None
    if use not in model.uses:
        raise PlanError(f"{key} is not made for {use}; it is for {', '.join(model.uses)}")
    return model


def _options(model, roles, context, kv, slots, draft, may_spill, tabby=True):
    """(placement, may spill to RAM) in the order of preference of the users' rule; a model on
    tabbyAPI carries tabbyAPI's ``draft`` model."""

    def on(backend, quant):
        tabby_draft = draft if backend == TABBYAPI else None
        return Placement(
            model, roles, backend, quant, context, kv[backend], slots[backend], draft=tabby_draft
        )

    options = [(on(TABBYAPI, str(bpw)), False) for bpw in EXL3_BPW] if tabby else []
    options += [(on(VLLM, quant), False) for quant, _, _ in model.vllm_quants]
    quants = model.ollama_quants or (None,)
    options += [(on(OLLAMA, quant), False) for quant in quants]
    if may_spill:
        # Spilling layers to system RAM costs far more speed than a higher quant gains in
        # quality, so a model that does not fit spills at the smallest acceptable quant.
        options.append((on(OLLAMA, quants[-1]), True))
    return options


def _share_ollama_context(combo):
    """Ollama's chat and autocomplete models get the larger of their contexts (one setting)."""
    shared = [p for p, _ in combo if p.backend == OLLAMA and EMBED not in p.roles]
    if len(shared) < 2:
        return combo
    context = max(p.context for p in shared)
    return [
        (replace(p, context=min(context, p.model.context)) if p in shared else p, spill)
        for p, spill in combo
    ]


def _fit(combo, free_gib, ram_offload_gib) -> tuple[Placement, ...] | None:
    """The placements with any spill assigned, if this combination fits; else None."""
    placements = [p for p, _ in combo]
    if any(sum(p.backend == one for p in placements) > 1 for one in (TABBYAPI, VLLM)):
        return None  # each serves one model
    over = sum(p.total_gib for p in placements) - free_gib
    if over <= 0:
        return None if any(spill for _, spill in combo) else tuple(placements)
    spilling = [i for i, (_, spill) in enumerate(combo) if spill]
    if not spilling or over > ram_offload_gib:
        return None
    i = spilling[0]
    # The process overhead stays on the card; weights and cache beyond it may move to RAM.
    if over > placements[i].total_gib - placements[i].overhead_gib:
        return None
    placements[i] = replace(placements[i], offload_gib=round(over, 2))
    return tuple(placements)


def _nothing_fits(groups, vram_gib, reserve_gib, ram_offload_gib) -> str:
    # For each model its most forgiving option: the spilling one for the chat model, else the
    # smallest; the message then says what the least demanding plan would need.
    least = [
        next((p for p, spill in options if spill), None)
        or min((p for p, _ in options), key=lambda p: p.total_gib)
        for options in groups
    ]
    needs = "; ".join(
        f"{p.model.key} ({'/'.join(p.roles)}) {p.total_gib:.1f} GiB as {p.quant_label} "
        f"with a {p.context}-token context"
        for p in least
    )
    free = vram_gib - reserve_gib
    return (
        f"no plan fits: the models need {sum(p.total_gib for p in least):.1f} GiB at the "
        f"smallest acceptable quants ({needs}), but the card has {free:.1f} GiB free "
        f"({vram_gib:.1f} less {reserve_gib:.1f} kept free) and only {ram_offload_gib:.1f} GiB "
        "may spill into system RAM (chat model only). Choose a smaller model, a shorter context "
        "(planner_chat_context), or allow more offload (planner_ram_offload_gib)."
    )
