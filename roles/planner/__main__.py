"""`python -m roles.planner`: print the model plan for a card, without touching any host.

Example: python -m roles.planner --vram 24 --chat qwen2.5-coder-32b \
             --autocomplete qwen2.5-coder-1.5b-base
"""

from __future__ import annotations

import argparse
import sys

from roles.planner.catalogue import CATALOGUE, lookup
from roles.planner.plan import DRAFT_BPW, RESERVE_GIB, Draft, PlanError, plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m roles.planner", description=__doc__)
    parser.add_argument("--vram", type=float, help="GPU memory in GiB (e.g. 24)")
    parser.add_argument("--chat", help="chat model (a catalogue name, see --list)")
    parser.add_argument(
        "--autocomplete",
        help="autocomplete model (default: a small FIM model when it fits, else the chat model)",
    )
    parser.add_argument("--embed", default="nomic-embed-text", help="embedding model, or ''")
    parser.add_argument("--chat-context", type=int, default=16384)
    parser.add_argument("--autocomplete-context", type=int, default=4096)
    parser.add_argument("--tabbyapi-kv-bits", type=int, default=16, choices=(4, 6, 8, 16))
    parser.add_argument("--ollama-kv-bits", type=int, default=16, choices=(4, 8, 16))
    parser.add_argument("--ram-offload", type=float, default=16.0, help="GiB that may spill")
    parser.add_argument("--reserve", type=float, default=RESERVE_GIB, help="GiB of VRAM kept free")
    parser.add_argument("--draft", help="tabbyAPI's draft model (speculative decoding), if any")
    parser.add_argument("--draft-bpw", type=float, default=DRAFT_BPW, help="its bits per weight")
    parser.add_argument("--list", action="store_true", help="list the known models")
    args = parser.parse_args(argv)

    if args.list:
        for key, model in sorted(CATALOGUE.items()):
            print(f"{key:26} {model.params_b:6.2f}B  {', '.join(model.uses)}")
        return 0
    if args.vram is None or not args.chat:
        parser.error("--vram and --chat are required (or --list)")
    try:
        draft = Draft(lookup(args.draft), args.draft_bpw) if args.draft else None
        result = plan(
            args.vram,
            args.chat,
            autocomplete=args.autocomplete,
            embed=args.embed or None,
            chat_context=args.chat_context,
            autocomplete_context=args.autocomplete_context,
            tabbyapi_kv_bits=args.tabbyapi_kv_bits,
            ollama_kv_bits=args.ollama_kv_bits,
            ram_offload_gib=args.ram_offload,
            reserve_gib=args.reserve,
            draft=draft,
        )
    except (PlanError, KeyError) as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 1
    print(result.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
