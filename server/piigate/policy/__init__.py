"""What a caller may see, decided without I/O (stages 2, 4 and 8 of the path).

In the order a request travels:

- `profiles`: stage 2: the caller's one service profile (no profile, no data).
- `smart_scopes`: SMART on FHIR scope grammar, used by the decision's scope check.
- `decision`: stage 4: the request checked against the profile, as a `Plan` or a refusal;
  the one check sequence the gateway and `piigate explain` both run.
- `shaping`: stage 8: the vault's answer shaped into the disclosed fields.
"""
