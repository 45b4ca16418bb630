"""The Textual UI; only this package imports textual."""
