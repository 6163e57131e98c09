"""placeholder: filled in by the family's author."""
