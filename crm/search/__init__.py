"""Search: one filter tree (crm.search.tree) for every way of choosing clients.

The text query language parses into it (parser), prints back from it (printer), field
names are resolved and type-checked against the field catalogue (fields), and the tree
compiles to one SQLAlchemy condition (compiler). services ties these together for views.
"""
