"""The processor's place in its consumer group: partitions owned, restored, lost, rejoined.

On assignment each partition's state is brought up to date from its changelogs after
the previous owner's last commit is stable; on revocation the partition stops being
owned at once, so nothing is decided for it afterwards. A source that fails fatally
is reopened: a new member under the same static member id.
"""

from __future__ import annotations

import logging

from ledger.health import LIFECYCLE
from ledger.processor.budget import RestartBudget
from ledger.processor.ports import CommandSource
from ledger.processor.restore import Restorer
from ledger.processor.state import ProcessorStats
from ledger.processor.store import StateStore

log = logging.getLogger("ledger.processor")


class GroupMember:
    """The command source's member and the partitions it owns right now (`owned`)."""

    def __init__(
        self,
        instance_id: str,
        source: CommandSource,
        store: StateStore,
        restorer: Restorer,
        stats: ProcessorStats,
    ) -> None:
        self.instance_id, self.source = instance_id, source
        self.store, self.restorer, self.stats = store, restorer, stats
        self.owned: set[int] = set()
        self.epoch = 0  # changes with every assignment or revocation
        self.assigned = False  # an assignment (maybe empty) taken and not released since
        self._budget = RestartBudget("consumer failed fatally")

    def owns(self, partition: int) -> bool:
        return partition in self.owned

    def subscribe(self) -> None:
        self.source.subscribe(self._on_assign, self._on_revoke)

    def rejoin(self, error: str) -> None:
        """Replace a member that failed fatally, so the service outlives a broker failover.

        The new member restores its partitions as on any assignment. Fencing by a real
        second instance with the same id also fences the transactional producer, which
        ends the run; the limit below stops a rejoin loop all the same.
        """
        self._budget.spend(error)
        log.error("consumer failed fatally (%s); rejoining with a new consumer", error)
        self.stats.rejoins += 1
        self._release(set(self.owned))
        self.source.reopen()

    def rewind(self, firsts: dict[int, int]) -> None:
        """Seek owned partitions back to where an aborted batch began."""
        self.source.seek({p: o for p, o in firsts.items() if p in self.owned})

    def resync(self) -> None:
        """After a transaction of unknown outcome: state and positions from the log.

        The store holds only batches known to be committed; the changelogs and the
        group's stable committed offsets say what happened to the last one.
        """
        self.stats.resyncs += 1
        log.warning("re-synchronising partitions %s from the committed offsets and the "
                    "changelogs", sorted(self.owned))
        self.epoch += 1
        positions = self.source.committed(sorted(self.owned))
        for partition in positions:
            self.restorer.restore(self.store, partition)
        self.source.seek(positions)

    def _on_assign(self, partitions: list[int]) -> None:
        self.epoch += 1
        # The stable offsets first: then the previous owner's last transaction is over
        # and the changelogs' ends include it.
        self.source.committed(partitions)
        for partition in partitions:
            self.restorer.restore(self.store, partition)
            self.owned.add(partition)
        self.assigned = True
        LIFECYCLE.info("processor %s owns partitions %s", self.instance_id, sorted(self.owned))

    def _on_revoke(self, partitions: list[int]) -> None:
        self._release(set(partitions))
        log.info("processor %s released partitions %s; owns %s",
                 self.instance_id, sorted(partitions), sorted(self.owned))

    def _release(self, partitions: set[int]) -> None:
        self.epoch += 1
        self.assigned = False
        self.owned -= partitions
        for partition in partitions:
            self.store.forget_cache(partition)
