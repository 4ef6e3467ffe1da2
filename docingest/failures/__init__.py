"""What failed, kept visible until it is replayed.

`repository` holds the statements on the failures table (a failed version stays until a newer
version of its id is stored); `replay` puts failed documents and dead letters back on the queue.
"""
