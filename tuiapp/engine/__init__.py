"""Headless engine of tuneloop: no Textual here, and heavy libraries only inside functions."""
