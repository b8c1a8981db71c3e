"""The directory: which regions own an integration or organization (PostgreSQL, cached)."""
