"""Where a document flows out: the change feed. `record.py` writes a change in the transaction
of the document write that made it, `relay.py` numbers committed changes (and prunes old ones),
`feed.py` reads them by position for `GET /changes` (docs/architecture.md, The change feed)."""
