"""A run end to end: its folder, the pipeline that fills it, and what composes runs."""
