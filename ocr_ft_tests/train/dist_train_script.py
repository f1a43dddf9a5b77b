"""Run by the multi-process tests under torchrun: ``torchrun ... dist_train_script.py ARGS.json``.

ARGS: config (YAML path), train / val (JSONL), data_dir, out, overrides (config keys, optional),
kill_rank0_at_step (optional). With
``kill_rank0_at_step`` rank 0 SIGKILLs itself when that step is logged: a real crash, no clean-up.
"""

import json
import os
import signal
import sys

from ocr_ft.storage import read_jsonl
from ocr_ft.train.config import load_config
from ocr_ft.train.trainer import train

args = json.loads(open(sys.argv[1], encoding="utf-8").read())
kill_at = args.get("kill_rank0_at_step")
events = []


def on_log(row):
    events.append(row)
    if kill_at and row.get("event") == "train" and row["step"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


train(load_config(args["config"], **args.get("overrides", {})), read_jsonl(args["train"]), read_jsonl(args["val"]), args["data_dir"], args["out"],
      on_log=on_log)
if int(os.environ.get("RANK", "0")) == 0:
    with open(os.path.join(args["out"], "events.json"), "w", encoding="utf-8") as f:
        json.dump(events, f)
