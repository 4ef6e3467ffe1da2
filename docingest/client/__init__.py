"""The client side: feeding files to a running service (`docingest send`)."""
