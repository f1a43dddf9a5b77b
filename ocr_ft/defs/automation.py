"""Automation conditions: rebuild downstream only when an upstream's *data version* changed.

Re-materializing a source whose output is byte-identical records the same data version, so nothing
downstream is requested; one changed file changes that partition's version and requests exactly the chain
that depends on it.
"""

import dagster as dg

_DV = dg.AutomationCondition.data_version_changed()

# eager, but "a dependency updated" means "its data version changed"
on_upstream_change = dg.AutomationCondition.eager().replace("newly_updated", _DV)

# for assets that read whatever partitions of their upstreams exist (e.g. `dataset` reads every
# validated partition): a partition that was never materialized must not block them
on_upstream_change_allow_missing = (
    dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing()).replace("newly_updated", _DV)
)
