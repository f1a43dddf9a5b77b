"""``ocr-ft train``: train (or plan) a LoRA run, build the tiny model, merge an adapter, export LLaMA-Factory YAML.

    ocr-ft train [train] --train TRAIN.jsonl --val VAL.jsonl --data-dir DIR --out DIR
                         [--config YAML] [--set key=value ...] [--nproc N] [--dry-run]
    ocr-ft train tiny --texts-from JSONL --out DIR [--seed N] [--preset tiny|tiny-qwen-vl|...]
    ocr-ft train merge --base DIR --adapter DIR --out DIR [--check JSONL --data-dir DIR --check-n N]
    ocr-ft train llamafactory --out FILE --dataset-dir DIR [--config YAML] [--set key=value ...]
    ocr-ft train native-export --base-model NAME|DIR --split JSONL --data-dir DIR --out FILE
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ocr_ft.storage import read_jsonl
from ocr_ft.train.config import ConfigError, load_config, parse_set_overrides


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ocr-ft train", description=__doc__.split("\n\n")[0],
        epilog="`train` is the default subcommand: `ocr-ft train --train T.jsonl --data-dir D --dry-run` plans a "
               "run (steps, budget, samples left out); `ocr-ft train train --help` lists its options.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a LoRA adapter (or --dry-run to only plan)")
    t.add_argument("--train", required=True, type=Path, help="training split JSONL")
    t.add_argument("--val", type=Path, help="validation split JSONL")
    t.add_argument("--data-dir", required=True, type=Path, help="directory the records' image_path is relative to")
    t.add_argument("--out", type=Path, help="output directory (required unless --dry-run)")
    t.add_argument("--config", type=Path, help="YAML with config keys overriding the seed defaults")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--nproc", type=int, help="processes (one per GPU, gloo CPU processes without one), started "
                   "with torchrun when > 1; sets the config key nproc")
    t.add_argument("--dry-run", action="store_true", help="check data, config and token budgets; print the plan")
    t.add_argument("--json", action="store_true", help="print the plan / summary as JSON")

    k = sub.add_parser("tiny", help="build a tiny model of one family offline (default: GLM-OCR's `tiny`)")
    k.add_argument("--texts-from", required=True, type=Path, help="JSONL whose ground_truth_html trains the tokenizer")
    k.add_argument("--out", required=True, type=Path)
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--preset", default="tiny", help="tiny preset of a family (`ocr-ft models` lists them)")

    m = sub.add_parser("merge", help="merge an adapter into a full model (compared with the adapter with --check)")
    m.add_argument("--base", required=True)
    m.add_argument("--adapter", required=True, type=Path)
    m.add_argument("--out", required=True, type=Path)
    m.add_argument("--check", type=Path, help="JSONL of records whose outputs must match after merging "
                   "(without it no comparison is made)")
    m.add_argument("--data-dir", type=Path)
    m.add_argument("--check-n", type=int, default=4)
    m.add_argument("--config", type=Path)
    m.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    lf = sub.add_parser("llamafactory", help="write the equivalent LLaMA-Factory training YAML")
    lf.add_argument("--out", required=True, type=Path)
    lf.add_argument("--dataset-dir", required=True, type=Path, help="directory holding dataset_info.json")
    lf.add_argument("--output-dir", default="saves/glm-ocr-table-lora")
    lf.add_argument("--config", type=Path)
    lf.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    n = sub.add_parser("native-export", help="write a split in the base model family's own fine-tuning format "
                       "(PaddleOCR-VL: ERNIEKit JSONL, GOT-OCR 2.0: GOT's JSON)")
    n.add_argument("--base-model", required=True, help="family name, tiny preset name, or model directory")
    n.add_argument("--split", required=True, type=Path, help="split JSONL (image_path + ground_truth_html)")
    n.add_argument("--data-dir", required=True, type=Path, help="directory the records' image_path is relative to")
    n.add_argument("--out", required=True, type=Path)
    return p


def _progress(row: dict[str, Any]) -> None:
    event = row.get("event")
    if event == "train":
        print(f"step {row['step']}/{row['total_steps']}  loss {row['loss']:.4f}  lr {row['lr']:.2e}  "
              f"{row.get('samples_per_second', 0):.2f} samples/s", flush=True)
    elif event == "eval":
        print(f"step {row['step']}/{row['total_steps']}  eval_loss {row['eval_loss']:.4f}", flush=True)
    elif event == "left_out":
        print(f"left out ({row['split']}) {row['name']}: {row['reason']} - {row['detail']}", flush=True)
    elif event == "start":
        resumed = f", resuming at step {row['resumed_from_step']}" if row.get("resumed_from_step") else ""
        print(f"training {row['train_samples']} samples for {row['total_steps']} steps on {row['device']} "
              f"({row['dtype']}){resumed}", flush=True)
    elif event == "checkpoint":
        print(f"checkpoint {row['path']}", flush=True)
    elif event == "already_complete":
        print("run already complete; nothing to do", flush=True)


def _child_argv(argv: list[str], nproc: int) -> list[str]:
    """``argv`` for the torchrun children: ``--nproc N`` becomes ``--set nproc=N`` (torchrun's own parser would
    take ``--nproc`` as an abbreviation of its ``--nproc-per-node``)."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return [*out, "--set", f"nproc={nproc}"]


def _cmd_train(a: argparse.Namespace, argv: list[str]) -> int:
    overrides = parse_set_overrides(a.overrides)
    if a.nproc is not None:
        overrides["nproc"] = a.nproc
    config = load_config(a.config, **overrides)
    train_rows = read_jsonl(a.train)
    val_rows = read_jsonl(a.val) if a.val else []
    if a.dry_run:
        from ocr_ft.train.budget import plan

        result = plan(config, train_rows, a.data_dir, val_rows)
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2) if a.json else result.format())
        return 0 if result.train.kept else 1
    if a.out is None:
        print("ocr-ft train: --out is required unless --dry-run", file=sys.stderr)
        return 2
    from ocr_ft.train import distributed

    if config.nproc > 1 and not distributed.under_torchrun():
        # this process only launches: torchrun starts nproc copies of this command, which train together
        import subprocess

        return subprocess.run(distributed.torchrun_command(config.nproc, "ocr_ft.train.cli", _child_argv(argv, config.nproc))).returncode
    from ocr_ft.train.trainer import train

    result = train(config, train_rows, val_rows, a.data_dir, a.out, on_log=_progress)
    if not distributed.current_world().is_main:
        return 0
    s = result.summary
    print(json.dumps(s, ensure_ascii=False, indent=2) if a.json else
          f"done: {s['steps']} steps, train loss {s['initial_train_loss']:.4f} -> {s['final_train_loss']:.4f}, "
          f"eval loss {s['final_eval_loss']}, adapter at {result.adapter_dir}")
    return 0


def _cmd_tiny(a: argparse.Namespace) -> int:
    from ocr_ft.train.families import family_by_preset, tiny_presets

    family = family_by_preset(a.preset)
    if family is None:
        raise ValueError(f"unknown tiny preset {a.preset!r}; presets: {', '.join(tiny_presets())}")
    texts = [r.get("ground_truth_html", "") for r in read_jsonl(a.texts_from)]
    out = family.build_tiny(a.out, texts, seed=a.seed)
    print(f"tiny model ({a.preset}, {family.title}) written to {out}")
    return 0


def models_main(argv: list[str] | None = None) -> int:
    """``ocr-ft models``: one line per supported base-model family (name, Auto class, prompt, default hub id,
    tiny preset), tab-separated; ``--json`` for a list of objects."""
    from ocr_ft.train.families import list_families

    p = argparse.ArgumentParser(prog="ocr-ft models", description="list the supported base-model families")
    p.add_argument("--json", action="store_true", help="print JSON instead of one line per family")
    a = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    fams = list_families()
    if a.json:
        print(json.dumps([{"name": f.name, "title": f.title, "model_types": list(f.model_types),
                           "auto_class": f.auto_model_class, "prompt": f.table_prompt,
                           "default_hub_id": f.default_hub_id, "tiny_preset": f.tiny_preset,
                           "answer_format": f.answer_format, "llamafactory_template": f.llamafactory_template}
                          for f in fams], ensure_ascii=False, indent=2))
        return 0
    for f in fams:
        print(f.summary_line())
    return 0


def _cmd_merge(a: argparse.Namespace) -> int:
    from ocr_ft.train.modeling import merge_adapter

    config = load_config(a.config, **parse_set_overrides(a.overrides))
    if a.check and a.check_n < 1:
        raise ValueError(f"--check-n must be at least 1 (got {a.check_n})")
    records = read_jsonl(a.check)[: a.check_n] if a.check else []
    res = merge_adapter(a.base, a.adapter, a.out, check_records=records, data_dir=a.data_dir, config=config)
    if res.checked:
        print(f"merged model written to {res.out_dir}; checked: its greedy outputs equal the adapter's on "
              f"{res.checked} sample(s)")
    else:
        why = f"{a.check} holds no records" if a.check else "no --check was given"
        print(f"merged model written to {res.out_dir}; NOT checked: the merged model was not compared with the "
              f"adapter ({why}). To compare greedy outputs, re-run with --check RECORDS.jsonl --data-dir DIR "
              f"[--check-n N]")
    return 0


def _cmd_native_export(a: argparse.Namespace) -> int:
    from ocr_ft.train.families import family_of, list_families

    family = family_of(a.base_model)
    if family.native_export is None:
        having = [f.name for f in list_families() if f.native_export is not None]
        raise ValueError(f"{family.title} has no native export (use `ocr-ft train llamafactory`); families with one: "
                         f"{', '.join(having) or 'none'}")
    rows = read_jsonl(a.split)
    samples = [(str(Path(r["image_path"]) if Path(r["image_path"]).is_absolute() else a.data_dir / r["image_path"]),
                r.get("ground_truth_html", "")) for r in rows]
    written, left_out = family.native_export(samples, a.out)
    for image, reason in left_out:
        print(f"left out {image}: {reason}", file=sys.stderr)
    print(f"wrote {written} sample(s) as {family.native_export_format or family.title} to {a.out}"
          + (f"; {len(left_out)} left out" if left_out else ""))
    return 0 if written else 1


def _cmd_llamafactory(a: argparse.Namespace) -> int:
    from ocr_ft.train.llamafactory import write_llamafactory_config

    config = load_config(a.config, **parse_set_overrides(a.overrides))
    print(f"wrote {write_llamafactory_config(config, a.out, a.dataset_dir, a.output_dir)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("--") and argv[0] not in ("--help",):
        argv = ["train", *argv]  # `ocr-ft train --train ...` means the train subcommand
    args = _parser().parse_args(argv)
    handlers = {"train": lambda a: _cmd_train(a, argv), "tiny": _cmd_tiny, "merge": _cmd_merge, "llamafactory": _cmd_llamafactory,
                "native-export": _cmd_native_export}
    try:
        return handlers[args.command](args)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"ocr-ft train: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # BaseModelError, MergeMismatchError
        print(f"ocr-ft train: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
