"""Where a document is stored and read back."""
