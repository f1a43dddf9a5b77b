"""The training process launched by the ``lora_checkpoint`` asset through Dagster Pipes.

Runs as ``python -m ocr_ft.defs.pipes_training`` (a subprocess locally, a pod with the Kubernetes Pipes
client). It imports only ``dagster_pipes`` and the plain training module: progress goes back to Dagster as
log lines, the result as one asset materialization with metadata and a data version.

With ``nproc: N > 1`` it is started by ``torchrun`` (N copies): rank 0 opens Pipes, reports progress and the
materialization; the other ranks read the same context (extras) and only train their share.

Extras it reads: ``train``, ``val`` (split JSONL paths), ``data_dir``, ``output_dir``, ``config_file``
(YAML overlay or ""), ``overrides`` (dict), ``fingerprint`` (the data version to report), ``log_every_s``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from dagster_pipes import open_dagster_pipes


def _loss_plot(loss_log: Path, out: Path) -> Path | None:
    if not loss_log.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in loss_log.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    evals = [(r["step"], r["eval_loss"]) for r in rows if r.get("eval_loss") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), marker="o", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (answer tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _train_from_extras(ex: dict, on_log=None):
    from ocr_ft.storage import read_jsonl
    from ocr_ft.train.config import load_config
    from ocr_ft.train.trainer import train

    config = load_config(ex.get("config_file") or None, **(ex.get("overrides") or {}))
    train_records = read_jsonl(ex["train"])
    val_records = read_jsonl(ex["val"]) if ex.get("val") and Path(ex["val"]).is_file() else []
    return config, train(config, train_records, val_records, ex["data_dir"], Path(ex["output_dir"]), on_log=on_log)


def _worker() -> None:
    """A rank > 0 of a torchrun launch: reads the same Pipes context, trains its share, reports nothing."""
    from dagster_pipes import PipesDefaultContextLoader, PipesEnvVarParamsLoader

    with PipesDefaultContextLoader().load_context(PipesEnvVarParamsLoader().load_context_params()) as data:
        extras = dict(data.get("extras") or {})
    _train_from_extras(extras)


def main() -> None:
    if int(os.environ.get("RANK", "0")) != 0:
        _worker()
        return
    with open_dagster_pipes() as pipes:
        ex = pipes.extras
        out = Path(ex["output_dir"])
        every = float(ex.get("log_every_s", 10))
        last = [0.0]
        left_out: list[str] = []

        def on_log(row: dict) -> None:
            event = row.get("event")
            if event == "left_out":
                left_out.append(f"{row.get('split')}: {row.get('name')} ({row.get('reason')}, {row.get('tokens')} tokens)")
                pipes.log.warning(f"left out {left_out[-1]}")
            elif event == "train":
                now = time.monotonic()
                if now - last[0] >= every or row.get("step") == row.get("total_steps"):
                    last[0] = now
                    pipes.log.info(f"step {row.get('step')}/{row.get('total_steps')} loss {row.get('loss'):.4f} "
                                   f"lr {row.get('lr', 0):.2e}")
            elif event in ("start", "eval", "checkpoint", "done", "already_complete"):
                pipes.log.info(f"{event}: " + ", ".join(f"{k}={v}" for k, v in row.items() if k != "event"))

        config, result = _train_from_extras(ex, on_log)
        s = result.summary
        plot = _loss_plot(result.loss_log_path, out / "loss.png")
        metadata = {
            "steps": s["steps"],
            "epochs": round(float(s["epochs"]), 3),
            "train_samples": s["train_samples"],
            "left_out": len(s["left_out"]["train"]) + len(s["left_out"]["val"]),
            "initial_train_loss": s["initial_train_loss"],
            "final_train_loss": s["final_train_loss"],
            "initial_eval_loss": s["initial_eval_loss"],
            "final_eval_loss": s["final_eval_loss"],
            "samples_per_second": s["samples_per_second"],
            "tokens_per_second": s["tokens_per_second"],
            "peak_memory_mib": round(s["peak_memory_bytes"] / 2**20, 1) if s.get("peak_memory_bytes") else None,
            "trainable_parameters": s["trainable_parameters"],
            "padding_fraction": round(s["padding_fraction"], 4) if s.get("padding_fraction") is not None else None,
            "group_by_length": s.get("group_by_length"),
            "packing": s.get("packing"),
            "tensorboard_dir": ({"raw_value": str(out / s["tensorboard_dir"]), "type": "path"}
                                if s.get("tensorboard_dir") else None),
            "base_model": config.base_model,
            "adapter_path": {"raw_value": str(result.adapter_dir), "type": "path"},
            "output_dir": {"raw_value": str(out), "type": "path"},
        }
        if plot is not None:
            # only the path travels: Dagster's file message reader tails the messages file line by line and can
            # read a half-written line of a large message (a base64 image), so the asset embeds the picture
            metadata["loss_plot"] = {"raw_value": str(plot), "type": "path"}
        metadata = {k: v for k, v in metadata.items() if v is not None}
        pipes.report_asset_materialization(metadata=metadata, data_version=ex["fingerprint"])


if __name__ == "__main__":
    main()
