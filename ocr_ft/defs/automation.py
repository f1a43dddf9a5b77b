"""Automation conditions: rebuild downstream only when an upstream's *data version* changed.

Re-materializing a source whose output is byte-identical records the same data version, so nothing
downstream is requested; one changed file changes that partition's version and requests exactly the chain
that depends on it. Dagster's ``eager()`` only looks at the newest time partition; ours drops that clause,
so backfilling an old DART month propagates like any other partition.
"""

import dagster as dg

_DV = dg.AutomationCondition.data_version_changed()
_EAGER_ANY_WINDOW = dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())

# eager, but "a dependency updated" means "its data version changed", in any partition
on_upstream_change = _EAGER_ANY_WINDOW.replace("newly_updated", _DV)

# for assets that read whatever partitions of their upstreams exist (e.g. `dataset` reads every
# validated partition): a partition that was never materialized must not block them
on_upstream_change_allow_missing = _EAGER_ANY_WINDOW.without(~dg.AutomationCondition.any_deps_missing()).replace(
    "newly_updated", _DV
)
