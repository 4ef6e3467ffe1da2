"""Where a person labels a document.

`repository` holds the statements on the label columns, the review order and the agreement of
labels with the model's categories; `service` sets a label against the version the person read.
"""
