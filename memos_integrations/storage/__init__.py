"""Storage backends behind one ``Store`` protocol (SQL lives only in this package)."""
