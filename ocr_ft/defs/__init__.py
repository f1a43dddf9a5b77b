"""The Dagster layer, one module per stage. Thin: assets call the domain modules and report metadata."""
