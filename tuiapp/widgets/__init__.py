"""Reusable widgets: no store or engine access, they draw what they are given."""
