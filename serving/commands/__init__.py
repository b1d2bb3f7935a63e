"""The `flask` commands: the group, models add/check and push."""
