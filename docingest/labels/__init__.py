"""Where a document is labelled by a person."""
