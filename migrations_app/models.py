"""Models of live migrations arrive with the migration feature."""
