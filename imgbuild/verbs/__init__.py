"""One module per command. A verb composes the stages (load → validate → expand → plan →
execute → store) and returns a result object (`verbs.results`); it never prints and never
decides an exit code's text. `cli` renders the result through `report`; `api` returns it.

May import: spec/, plan/, store/, images/, run/, providers/, errors. Never report or cli.
"""
