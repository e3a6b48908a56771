"""Families: importing this package registers every family module.

To add a family, write one module with a `@register`-ed `Family` subclass and import it here.
"""
from toolkit.families.base import REGISTRY, Family, get_family, register  # noqa: F401
from toolkit.families import ar, mdlm, duo, esolm  # noqa: F401,E402

__all__ = ["REGISTRY", "Family", "get_family", "register"]
