"""Who is calling, and whose data the call is about (stages 1, 3 and 5 of the path).

In the order a request travels:

- `peer`: stage 1, transport half: the workload on the other end of the mTLS connection.
- `caller`: stage 1: the calling service, from its bearer credential and/or its peer.
- `subject`: stage 3: the end user's access token (`subject_token`), verified.
- `on_behalf_of`: stage 3 for support tooling: the agent's `actor_token` and the customer
  the request names (`SubjectRef`).
- `launch`: stage 3 for SMART tokens: the launch `patient` context.
- `pii_claim`: stage 5: the vault token id in the subject token's namespaced claim.
- `resolution`: stages 3–5 as one sequence, by the profile's `subject_resolution`
  (`token_claim`, `on_behalf_of`, `launch_patient`), ending in the vault selector.
"""
