"""HTTP doors: Flask blueprints and the one error handler."""
