"""Hand-made ``student.json`` for tests: the fingerprint a train-student run would record
(transfer checks it against the weights, issue 23.2)."""

from __future__ import annotations

from kdep_cache.cache.sidecar import SIDECAR_VERSION, STUDENT_FIELDS, student_fingerprint
from kdep_cache.storage.digest import weights_sha


def signed(side: dict, state_dict: dict) -> dict:
    """``side`` as the current version writes it: every fingerprinted field, its fingerprint."""
    side = {"format_version": SIDECAR_VERSION, "settings": {}, **side}
    side["format_version"] = SIDECAR_VERSION
    for k in STUDENT_FIELDS:
        side.setdefault(k, None)
    side["fingerprint"] = student_fingerprint(side, weights_sha(state_dict))
    return side
