"""placeholder: filled in by the task's author."""
