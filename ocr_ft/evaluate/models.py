"""The models one evaluation compares: entries of a ``models`` list, checked before any model is loaded.

An entry is a mapping ``{name, base_model?, adapter?, max_new_tokens?}``:

* ``name`` - the model's row in the report and its sub-folder: letters, digits, ``_ . -``, unique;
* ``base_model`` - a family preset (``tiny``), a local model directory or a hub id; absent or ``null``: the
  base model of the adapter's training run, else that of the latest ``lora_checkpoint``;
* ``adapter`` - ``null`` (the base model alone), ``"latest"`` (the latest ``lora_checkpoint``) or a training
  run's directory (``config.yaml`` + ``adapter/``) or an adapter directory (``adapter_config.json``);
* ``max_new_tokens`` - this model's generation budget (default: the evaluation's).

:func:`choose_roles` says which entry the checks judge (the *primary*, "the fine-tune") and which one it is
compared against (the *baseline*).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

LATEST = "latest"
FIELDS = ("name", "base_model", "adapter", "max_new_tokens")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ModelSpecError(ValueError):
    """A ``models`` entry (or ``primary`` / ``baseline``) that cannot be used; the message names the entry."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    base_model: str | None = None  # None: the adapter run's (or the latest checkpoint's) base model
    adapter: str | None = None  # None, LATEST, or a directory
    max_new_tokens: int | None = None

    @property
    def fine_tuned(self) -> bool:
        return self.adapter is not None


def adapter_run_dir(path: str | Path) -> Path | None:
    """The directory holding ``adapter_config.json`` for a run directory (``adapter/``) or an adapter
    directory itself; ``None`` when ``path`` is neither."""
    path = Path(path)
    if (path / "adapter_config.json").is_file():
        return path
    if (path / "adapter" / "adapter_config.json").is_file():
        return path / "adapter"
    return None


def _where(index: int, entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"models[{index}]" + (f" ({name!r})" if isinstance(name, str) and name else "")


def parse_model_specs(entries: Sequence[Any]) -> list[ModelSpec]:
    """Check every entry of ``entries`` and return them as :class:`ModelSpec` in order.

    Raises :class:`ModelSpecError` naming the entry (``models[i] ('name')``) for: an entry that is not a
    mapping, an unknown field, a missing or malformed name, a name used twice, a ``base_model`` that is not a
    non-empty string, an ``adapter`` directory that does not exist or holds no adapter, a ``max_new_tokens``
    that is not a positive integer.  Every problem found is listed, one per line.
    """
    problems: list[str] = []
    specs: list[ModelSpec] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        where = _where(i, entry)
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a mapping with {', '.join(FIELDS)}, got {type(entry).__name__}")
            continue
        unknown = sorted(set(entry) - set(FIELDS))
        if unknown:
            problems.append(f"{where}: unknown field(s) {', '.join(map(repr, unknown))} (known: {', '.join(FIELDS)})")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(f"{where}: 'name' must be 1-64 letters, digits, '_', '.' or '-' (starting with a letter "
                            f"or digit), got {name!r}")
            name = None
        elif name in seen:
            problems.append(f"{where}: name {name!r} is already used by models[{seen[name]}]")
        else:
            seen[name] = i
        base = entry.get("base_model")
        if base is not None and (not isinstance(base, str) or not base.strip()):
            problems.append(f"{where}: 'base_model' must be a preset, a model directory or a hub id, got {base!r}")
            base = None
        adapter = entry.get("adapter")
        if adapter is not None:
            if not isinstance(adapter, str) or not adapter.strip():
                problems.append(f"{where}: 'adapter' must be null, {LATEST!r} or a directory, got {adapter!r}")
                adapter = None
            elif adapter != LATEST:
                if not Path(adapter).is_dir():
                    problems.append(f"{where}: adapter directory {adapter} does not exist")
                elif adapter_run_dir(adapter) is None:
                    problems.append(f"{where}: adapter directory {adapter} holds no adapter_config.json (nor "
                                    "adapter/adapter_config.json of a training run)")
        budget = entry.get("max_new_tokens")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            problems.append(f"{where}: 'max_new_tokens' must be a positive integer, got {budget!r}")
            budget = None
        if name is not None:
            specs.append(ModelSpec(name, base.strip() if isinstance(base, str) else None, adapter, budget))
    if problems:
        raise ModelSpecError("invalid models list:\n" + "\n".join(problems))
    return specs


def choose_roles(specs: Sequence[ModelSpec], primary: str | None = None,
                 baseline: str | None = None) -> tuple[str, str | None]:
    """``(primary, baseline)``: the entry the checks judge and the one it is compared against.

    Defaults: the primary is the last entry with an adapter (the last entry when none has one); the baseline
    is the first entry without an adapter, other than the primary, preferring one with the primary's
    ``base_model``; else the first other entry; ``None`` when there is a single model.  A name given that is
    not in ``specs``, or a baseline equal to the primary, raises :class:`ModelSpecError`.
    """
    names = [s.name for s in specs]
    if not specs:
        raise ModelSpecError("no models to evaluate")
    for role, value in (("primary", primary), ("baseline", baseline)):
        if value is not None and value not in names:
            raise ModelSpecError(f"{role} {value!r} is not the name of a models entry (names: {', '.join(names)})")
    if primary is None:
        tuned = [s.name for s in specs if s.fine_tuned]
        primary = tuned[-1] if tuned else names[-1]
    if baseline == primary:
        raise ModelSpecError(f"baseline {baseline!r} is the primary model: name another entry")
    if baseline is None:
        prim = next(s for s in specs if s.name == primary)
        others = [s for s in specs if s.name != primary]
        bases = [s for s in others if not s.fine_tuned]
        same = [s for s in bases if s.base_model == prim.base_model]
        pick = (same or bases or others or [None])[0]
        baseline = pick.name if pick is not None else None
    return primary, baseline
