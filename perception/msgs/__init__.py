"""Message types, their one schema table per type, and the formats derived from the tables: the
wire codec, JSON documents and JSON Lines, JSON Schemas, the Foxglove forms."""
