"""The ``synthetic`` source: Korean financial tables from Jinja2 templates, rendered by :mod:`ocr_ft.render`.

See :mod:`.generator` for the engine (also used by :mod:`ocr_ft.sources.shilu`) and :mod:`.vocab` for the
vocabulary pools.
"""

from .generator import (
    GENERATOR_VERSION,
    SYNTHETIC_TEMPLATES,
    SyntheticDocument,
    TableGen,
    TemplateSpec,
    build_document,
    derive_seed,
    generate_synthetic,
    plan_shard,
    synthetic_environment,
)

__all__ = [
    "GENERATOR_VERSION", "SYNTHETIC_TEMPLATES", "SyntheticDocument", "TableGen", "TemplateSpec", "build_document",
    "derive_seed", "generate_synthetic", "plan_shard", "synthetic_environment",
]
