"""Collaboration-aware recommendation enhancement (CRE): the collaborative teacher and the user sequences."""
