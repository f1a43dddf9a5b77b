"""Sources: each turns something outside (a folder, an API, templates) into image + label pairs. No Dagster."""
