"""Everything a person reads: console lines, tables, the model card, compare's page and charts."""
