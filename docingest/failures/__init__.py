"""Every failure stays visible and replayable."""
