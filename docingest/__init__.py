"""docingest: web-queue-worker document ingestion (FastAPI, Dramatiq, scikit-learn, SQL)."""
