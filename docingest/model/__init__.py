"""The model's lifecycle: trained (`training`, `datasets`, `card`, `learning`), registered and
activated (`registry`), loaded to classify (`classifier`, `vectorizer`), and applied again to
stored documents (`reclassify`, `selection`)."""
