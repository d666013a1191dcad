"""Step `data`: corpus and labeled sets read, cleaned, deduplicated and tokenized; the embedded
data."""
