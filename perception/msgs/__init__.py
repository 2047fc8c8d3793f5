"""Message types, their one schema table, the wire codec and the JSON Lines format."""
