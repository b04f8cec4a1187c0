"""The framework-free engine: data model, lifecycle, governance and the MemOS class."""
