"""``ocr-ft``: the command line. Each subcommand lives with its room and is imported only when used."""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function, one-line help). The function takes argv (list[str]) and returns an exit code.
COMMANDS = {
    "demo": ("ocr_ft.demo", "main", "materialize the whole offline graph on the embedded defaults"),
    "train": ("ocr_ft.train.cli", "main", "train / dry-run / build the tiny model / merge an adapter"),
    "evaluate": ("ocr_ft.evaluate.cli", "evaluate_main", "evaluate a model or endpoint on a test JSONL"),
    "teds": ("ocr_ft.evaluate.cli", "teds_main", "TEDS of PubTabNet-style prediction/ground-truth files"),
    "score": ("ocr_ft.evaluate.cli", "score_main", "score predictions: TEDS, TEDS-S, GriTS, CER, nesting"),
    "models": ("ocr_ft.train.cli", "models_main", "list the supported base-model families, one a line"),
    "inspect-format": ("ocr_ft.train.inspect_format", "main", "show the exact training / eval / served prompt"),
    "dart": ("ocr_ft.sources.dart_cli", "main", "DART tools: `ocr-ft dart extract DOCUMENT --out DIR`"),
    "fss": ("ocr_ft.sources.scraped_cli", "fss_main", "FSS tools: `ocr-ft fss extract RESPONSE.json --out DIR [--render]`"),
    "wiki": ("ocr_ft.sources.scraped_cli", "wiki_main", "wiki tools: `ocr-ft wiki extract PAGE --out DIR [--render]`"),
}


def _usage() -> str:
    lines = ["usage: ocr-ft COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {helptext}" for name, (_, _, helptext) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"ocr-ft: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
