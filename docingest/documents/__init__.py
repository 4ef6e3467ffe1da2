"""Where a document is stored and read back.

`store` holds every statement on the documents table (the workers' versioned batch upsert, reads,
tombstones); `browse` pages through them, `delete` writes a tombstone under a new version and
`status` says what became of the newest version accepted.
"""
