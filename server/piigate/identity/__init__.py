"""Who is calling, and whose data the call is about (stages 1, 3 and 5 of the path).

In the order a request travels:

- `peer`: stage 1, transport half: the workload on the other end of the mTLS connection.
- `caller`: stage 1: the calling service, from its bearer credential and/or its peer.
- `subject`: stage 3: the end user's access token (`subject_token`), verified.
- `pii_claim`: stage 5: the vault token id in the subject token's namespaced claim.
"""
