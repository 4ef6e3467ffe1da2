"""Where a document is classified and stored.

`ingest` holds the batch logic (classify, build rows, store, settle), importable without side
effects; `actors` declares the Dramatiq actors that `dramatiq docingest.worker.actors` runs, and
only importing it configures logging and the broker; `middleware` flushes the workers' metrics
and reconciles the ledger from inside each worker process.
"""
