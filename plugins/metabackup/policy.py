"""The decision table: does this run back up a source in full or incrementally?

In order, the first rule that applies wins:

1. ``force_full`` was asked for in the run's parameters               -> full
2. the source kind cannot do incremental backups                      -> full
3. the policy is ``full_always``                                      -> full
4. the catalog holds no restorable set (no complete full)             -> full
5. the latest restorable set was taken at another cluster version     -> full
6. ``full_every_n``: the chain since the last full already holds n-1
   incrementals                                                       -> full
7. one more incremental would make the chain longer than the target's
   ``max_backups`` (retention could then never drop the old chain)    -> full
8. otherwise                                                          -> incremental on the latest
                                                                         restorable set

Two more rules need the source itself, so ``pipeline.decide`` applies them to an incremental
chosen here: the source kind changed since the parent, or the kind cannot continue the chain
(``SourceKind.incremental_blocker``: a purged LDAP accesslog, a lost PostgreSQL slot, a new
timeline) -> full, with the reason.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from metabackup.catalog import Catalog
from metabackup.manifest import FULL, INCREMENTAL
from metabackup.spec import Policy


class Decision(BaseModel):
    """What a run does for one source, handed from ``decide`` to the later steps in the work
    directory's ``decision.json``.  The table below leaves ``committed``/``set`` at their defaults;
    ``pipeline.decide`` fills in the set stem this run writes, and ``committed`` when that set is
    already in the catalog (a rerun: the later steps then have nothing to do)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["full", "incremental"]
    parent: str | None
    reason: str
    committed: bool = False
    set: str | None = None

    @classmethod
    def full(cls, reason: str) -> Decision:
        return cls(type=FULL, parent=None, reason=reason)


def decide(
    *,
    policy: Policy,
    catalog: Catalog,
    supports_incremental: bool,
    cluster_version: str,
    max_backups: int,
    force_full: bool = False,
) -> Decision:
    if force_full:
        return Decision.full("force_full was requested for this run")
    if not supports_incremental:
        return Decision.full("this source kind can only take full backups")
    if policy.type == "full_always":
        return Decision.full("policy full_always")
    latest = catalog.latest_restorable()
    if latest is None:
        return Decision.full("no complete full backup in the catalog yet")
    if latest.cluster_version != cluster_version:
        return Decision.full(f"cluster version changed from {latest.cluster_version} to {cluster_version}")
    chain = catalog.chain(latest.set)
    incrementals = len(chain) - 1
    if policy.type == "full_every_n" and incrementals >= policy.n - 1:
        return Decision.full(f"policy full_every_n (n={policy.n}): the chain already has {incrementals} incrementals")
    if len(chain) + 1 > max_backups:
        return Decision.full(f"the chain already has {len(chain)} sets and max_backups is {max_backups}")
    return Decision(type=INCREMENTAL, parent=latest.set, reason=f"policy {policy.type}: incremental on {latest.set}")
