"""The command processor (`ledger serve`): the single, exactly-once writer of the journal.

Pure pieces (the batch overlay, the dedup window rules) sit apart from Kafka I/O: see
state.py and store.py for what an instance knows, service.py for the loop.
"""

from ledger.processor.service import CommandProcessor

__all__ = ["CommandProcessor"]
