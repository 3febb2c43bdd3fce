"""After training: export formats and drift monitoring."""
