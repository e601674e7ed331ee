"""The project's roles: one package per role, each a set of @deploy functions."""
