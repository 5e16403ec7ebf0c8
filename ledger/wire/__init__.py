"""The wire format: the schema catalogue, the general codec, and one module per hot record.

`ledger.wire` itself holds only the catalogue and the general codec (fastavro); the
hand-written codecs of the records read and written per command or per event are its
modules `event`, `command`, `result`, `balance` and `account` (each pins its schema
file with `catalogue.pin`), put together for the processor in `hot`. The compiled
event reader (_eventreader.c) sits beside `event`, which wraps it.
"""

from ledger.wire.catalogue import (
    HEADER_LEN,
    MAGIC,
    SCHEMA_DIR,
    Record,
    SchemaCatalogue,
    SchemaVersion,
)
from ledger.wire.codec import Codec

__all__ = ["HEADER_LEN", "MAGIC", "SCHEMA_DIR", "Codec", "Record", "SchemaCatalogue",
           "SchemaVersion"]
