"""Where the feed is pushed: webhooks. An endpoint (`endpoints.py`, managed through `/webhooks`)
gets the feed's changes from its own stored position, in batches signed as Standard Webhooks
has it (`delivery.py`), by whichever delivering process holds its lease (`leases.py`,
`deliverer.py`: `docingest webhooks deliver`), and only at public addresses (`targets.py`)."""
